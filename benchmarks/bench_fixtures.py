"""Target 2: fixture cost — ``nvcf`` setup+teardown vs moto's ``mock_aws``, ``nvcf_server``
per-test reset (absolute ceiling) and server stop vs ``ThreadedMotoServer.stop()``."""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Row, Stat, bench_tmpdir, child, ratio_row

FIXTURE_REPS = 40
RESET_REPS = 60
STOP_REPS = 5
RESET_CEILING_MS = 2.0


def _emulator_fixture(root: Path) -> float:
    """What the ``nvcf`` fixture does around a test: make, activate, close."""
    from nvcf_emulator import Emulator

    started = time.perf_counter()
    emu = Emulator(root_dir=root)
    emu.__enter__()
    emu.close()
    return time.perf_counter() - started


def _moto_fixture() -> float:
    """The usual moto fixture: start ``mock_aws``, make a client, create one bucket, stop."""
    import boto3
    from moto import mock_aws

    started = time.perf_counter()
    mock = mock_aws()
    mock.start()
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bench")
    mock.stop()
    return time.perf_counter() - started


def fixture_costs(reps: int) -> dict[str, Any]:
    scratch = Path(bench_tmpdir())
    try:
        _emulator_fixture(scratch / "warm")
        _moto_fixture()
        emu, moto = [], []
        for i in range(reps):  # interleaved, so both see the same machine
            root = Path(tempfile.mkdtemp(dir=scratch))  # pytest's tmp_path: not ours to time
            emu.append(_emulator_fixture(root))
            moto.append(_moto_fixture())
            if i % 10 == 9:
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"emu": emu, "moto": moto}


def reset_cost(reps: int) -> dict[str, Any]:
    """``nvcf_server``'s per-test reset after a typical test (3 uploaded assets, 4 calls)."""
    import requests

    from nvcf_emulator import Emulator

    scratch = Path(bench_tmpdir())
    emu = Emulator(root_dir=scratch / "emu")
    server = emu.serve()
    account = emu.accounts.authenticate(f"Bearer {emu.api_key}")
    session = requests.Session()
    busy, empty = [], []
    try:
        for _ in range(reps + 1):
            session.get(f"{server.url}/v2/nvcf/assets", headers=emu.headers).raise_for_status()
            for i in range(3):
                asset = emu.assets.create(account, "text/plain", f"test asset {i}")
                emu.assets.upload(account.nca_id, asset.asset_id, io.BytesIO(b"hello"), 5)
            started = time.perf_counter()
            server.emulator.reset()
            busy.append(time.perf_counter() - started)
            started = time.perf_counter()
            server.emulator.reset()
            empty.append(time.perf_counter() - started)
    finally:
        session.close()
        server.stop()
        emu.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"busy": busy[1:], "empty": empty[1:]}


def stop_costs(reps: int) -> dict[str, Any]:
    """Time ``stop()`` of a server that answered one request (its client gone)."""
    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    from nvcf_emulator import Emulator

    scratch = Path(bench_tmpdir())
    emu_times, moto_times = [], []
    try:
        for i in range(reps):
            emu = Emulator(root_dir=scratch / f"emu{i}")
            server = emu.serve()
            with requests.Session() as s:
                s.get(f"{server.url}/v2/nvcf/assets", headers=emu.headers).raise_for_status()
            started = time.perf_counter()
            server.stop()
            emu_times.append(time.perf_counter() - started)
            emu.close()

            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            moto.start()
            host, port = moto.get_host_and_port()
            s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://{host}:{port}")
            s3.list_buckets()
            s3.close()
            started = time.perf_counter()
            moto.stop()
            moto_times.append(time.perf_counter() - started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"emu": emu_times, "moto": moto_times}


def run() -> list[Row]:
    fx = child("bench_fixtures", "fixture_costs", reps=FIXTURE_REPS)
    rs = child("bench_fixtures", "reset_cost", reps=RESET_REPS)
    st = child("bench_fixtures", "stop_costs", reps=STOP_REPS)
    busy = Stat.of(rs["busy"])
    empty = Stat.of(rs["empty"])
    return [
        ratio_row(
            "2",
            "nvcf fixture setup+teardown",
            Stat.of(fx["emu"]),
            Stat.of(fx["moto"]),
            "ms",
            scale=1e3,
            at_most=0.3,
            baseline_label="mock_aws+client+bucket",
        ),
        Row(
            "2",
            "nvcf_server reset (after 3 uploads)",
            busy.fmt("ms", 1e3),
            f"empty store: {empty.fmt('ms', 1e3)}",
            None,
            f"<= {RESET_CEILING_MS:g} ms",
            busy.median * 1e3 <= RESET_CEILING_MS,
        ),
        ratio_row(
            "2",
            "nvcf_server stop",
            Stat.of(st["emu"]),
            Stat.of(st["moto"]),
            "ms",
            scale=1e3,
            at_most=0.1,
            baseline_label="ThreadedMotoServer.stop",
        ),
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
