"""Review: shared S3 prefixes, records written before memory, and restart edge cases."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from nvcf_emulator import Emulator
from nvcf_emulator.domain.assets import Asset
from nvcf_emulator.storage.state import SqliteStateStore

from .test_backends_hostile import (
    _bucket,
    _create,
    _disk_full,
    _get,
    _keys,
    _pending,
    _put,
    _s3,
    _upload,
    _wait_for,
)

pytestmark = pytest.mark.usefixtures("aws_env")
MiB = 1024 * 1024
DESC = "x-amz-meta-nvcf-asset-description"
AUTH = {"Authorization": "Bearer nvapi-review"}
EXE = str(Path(sys.executable).with_name("nvcf-emulate"))
DEPLOY = {
    "deploymentSpecifications": [
        {"gpu": "L40", "instanceType": "x", "minInstances": 1, "maxInstances": 1}
    ]
}


def _s3emu(bucket: str, endpoint: str | None = None, **settings: Any) -> Emulator:
    return Emulator(
        storage=f"s3://{bucket}/ci", s3_endpoint_url=endpoint, s3_create_bucket=True, **settings
    )


def _s3key(asset: Asset) -> str:
    return f"ci/{asset.key}"


def _listed(emu: Emulator) -> list[str]:
    r = requests.get(f"{emu.base_url}/v2/nvcf/assets", headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return sorted(a["assetId"] for a in r.json()["assets"])


def _fail_on(kind: str, real: Callable[..., None]) -> Callable[..., None]:
    """A state write that fails for records of ``kind`` only."""

    def write(k: str, *args: Any, **kwargs: Any) -> None:
        if k == kind:
            raise sqlite3.OperationalError("database or disk is full")
        real(k, *args, **kwargs)

    return write


# -- 1. several emulators on one bucket and prefix -------------------------------------------


def test_many_emulators_on_one_prefix_upload_reset_and_close_concurrently(aws: None) -> None:
    bucket = _bucket()
    emus = [_s3emu(bucket) for _ in range(6)]
    survivors: dict[int, list[Asset]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(emus))

    def worker(i: int, emu: Emulator) -> None:
        try:
            for round_ in range(3):
                for n in range(3):
                    _upload(emu, b"emu %d round %d n %d" % (i, round_, n))
                barrier.wait(30)  # every emulator holds uploaded assets while others reset
                emu.reset()
            survivors[i] = [_upload(emu, b"kept %d/%d" % (i, n)) for n in range(2)]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i, e)) for i, e in enumerate(emus)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        expected = sorted(_s3key(a) for kept in survivors.values() for a in kept)
        assert _keys(bucket) == expected
        for i, emu in enumerate(emus):
            assert sorted(a.asset_id for a in emu.stored_assets()) == sorted(
                a.asset_id for a in survivors[i]
            )
            for n, asset in enumerate(survivors[i]):
                assert emu.asset_bytes(asset.asset_id) == b"kept %d/%d" % (i, n)
        # Half of them reset while the other half close, at once.
        half = [threading.Thread(target=e.reset) for e in emus[:3]] + [
            threading.Thread(target=e.close) for e in emus[3:]
        ]
        for t in half:
            t.start()
        for t in half:
            t.join(60)
        # Each one deleted only its own objects (a reset), or all of them (a close without a
        # state dir: nothing could find them again), and no one else's.
        assert _keys(bucket) == []
    finally:
        for emu in emus:
            emu.close()


def test_a_non_persistent_emulator_leaves_no_objects_in_a_shared_bucket_on_close(
    aws: None,
) -> None:
    """Without a state dir nothing survives the emulator (its temp dir goes on exit): on a
    shared bucket its objects must go too, or every xdist run leaves orphans no one can
    reclaim (no record names them any more)."""
    bucket = _bucket()
    neighbour = _s3emu(bucket)
    try:
        kept = _upload(neighbour, b"neighbour")
        emu = _s3emu(bucket)
        _upload(emu, b"mine")
        emu.close()
        assert _keys(bucket) == [_s3key(kept)]
    finally:
        neighbour.close()


def test_a_restart_with_a_state_dir_while_another_emulator_resets(
    aws: None, tmp_path: Path
) -> None:
    bucket = _bucket()
    state = tmp_path / "state"
    other = _s3emu(bucket)
    try:
        with _s3emu(bucket, state_dir=state) as persistent:
            mine = [_upload(persistent, b"persistent %d" % i) for i in range(3)]
        theirs = [_upload(other, b"other %d" % i) for i in range(3)]
        restarted: list[Emulator] = []
        t = threading.Thread(target=lambda: restarted.append(_s3emu(bucket, state_dir=state)))
        t.start()
        other.reset()
        t.join(60)
        assert len(restarted) == 1
        with restarted[0] as again:
            assert sorted(a.asset_id for a in again.stored_assets()) == sorted(
                a.asset_id for a in mine
            )
            for i, asset in enumerate(mine):
                assert again.asset_bytes(asset.asset_id) == b"persistent %d" % i
        assert _keys(bucket) == sorted(_s3key(a) for a in mine)
        assert all(_s3key(a) not in _keys(bucket) for a in theirs)
        assert other.stored_assets() == []
    finally:
        other.close()


def test_a_sweep_in_one_emulator_leaves_the_others_objects(aws: None) -> None:
    bucket = _bucket()
    a, b = _s3emu(bucket), _s3emu(bucket)
    try:
        old_a = _upload(a, b"a")
        old_b = _upload(b, b"b")
        a.clock.advance(25 * 3600)
        a.sweep()
        assert a.stored_assets() == []
        assert _keys(bucket) == [_s3key(old_b)]
        with b.activate():
            assert _get(b, old_b.asset_id) == 200
        assert b.asset_bytes(old_b.asset_id) == b"b"
        # And the other way round: b's clock moves, a's new asset stays.
        new_a = _upload(a, b"a2")
        b.clock.advance(25 * 3600)
        b.sweep()
        assert _keys(bucket) == [_s3key(new_a)]
        assert _s3key(old_a) not in _keys(bucket)
    finally:
        a.close()
        b.close()


def test_reset_of_more_than_1000_assets_batches_and_spares_the_neighbour(aws: None) -> None:
    bucket = _bucket()
    a, b = _s3emu(bucket), _s3emu(bucket)
    try:
        kept = _upload(b, b"neighbour")
        for i in range(1005):
            _upload(a, b"%d" % i)
        assert len(_keys(bucket)) == 1006
        calls: list[int] = []
        real = a.store.client.delete_objects  # type: ignore[attr-defined]

        def counting(**kwargs: Any) -> Any:
            calls.append(len(kwargs["Delete"]["Objects"]))
            return real(**kwargs)

        a.store.client.delete_objects = counting  # type: ignore[attr-defined]
        a.reset()
        assert sorted(calls) == [5, 1000]
        assert _keys(bucket) == [_s3key(kept)]
        assert a.stored_assets() == []
        assert b.asset_bytes(kept.asset_id) == b"neighbour"
    finally:
        a.close()
        b.close()


def test_an_asset_deleted_over_the_api_then_reset(aws: None) -> None:
    bucket = _bucket()
    neighbour = _s3emu(bucket)
    emu = _s3emu(bucket)
    try:
        kept = _upload(neighbour, b"neighbour")
        with emu.activate():
            asset = _create(emu.base_url)
            assert _put(asset, b"bytes").status_code == 200
            r = requests.delete(
                f"{emu.base_url}/v2/nvcf/assets/{asset['assetId']}", headers=AUTH, timeout=30
            )
            assert r.status_code == 204
            assert _keys(bucket) == [_s3key(kept)]
            emu.reset()
            assert _listed(emu) == []
            assert _get(emu, asset["assetId"]) == 404
        assert _keys(bucket) == [_s3key(kept)]
    finally:
        emu.close()
        neighbour.close()


def _gated_body(first: int, rest: int, gate: threading.Event) -> Iterator[bytes]:
    block = b"z" * MiB
    for _ in range(first // MiB):
        yield block
    assert gate.wait(60)
    for _ in range(rest // MiB):
        yield block


def test_a_multipart_upload_in_flight_survives_another_emulators_reset_and_restart(
    moto_server: str, tmp_path: Path
) -> None:
    """Emulator A streams a 12 MiB upload (one 8 MiB part sent, the rest held back) while B
    (same prefix, with a state dir) resets, is closed and restarts: A's multipart upload is
    not A's business of B; it completes and A serves the bytes."""
    bucket = _bucket()
    state = tmp_path / "state"
    with _s3emu(bucket, moto_server, state_dir=state) as b:
        b_assets = [_upload(b, b"b %d" % i) for i in range(2)]
        b.reset()
        b_assets = [_upload(b, b"b %d" % i) for i in range(2)]
    a = _s3emu(bucket, moto_server)
    server = a.serve()
    gate = threading.Event()
    result: list[requests.Response] = []
    try:
        r = requests.post(
            f"{server.url}/v2/nvcf/assets",
            headers=AUTH,
            json={"contentType": "application/octet-stream", "description": "d"},
            timeout=30,
        )
        asset = r.json()
        t = threading.Thread(
            target=lambda: result.append(_put(asset, _gated_body(9 * MiB, 3 * MiB, gate)))
        )
        t.start()
        try:
            _wait_for(lambda: len(_pending(bucket, moto_server)) == 1)
            b2 = _s3emu(bucket, moto_server, state_dir=state)  # restart: aborts only its own
            try:
                assert len(_pending(bucket, moto_server)) == 1
                b2.reset()
                assert len(_pending(bucket, moto_server)) == 1
            finally:
                b2.close()
            b3 = _s3emu(bucket, moto_server, state_dir=state)
            b3.close()
        finally:
            gate.set()
            t.join(60)
        assert result and result[0].status_code == 200, result and result[0].text
        assert _pending(bucket, moto_server) == []
        assert a.asset_bytes(asset["assetId"]) == b"z" * (12 * MiB)
        assert all(_s3key(x) not in _keys(bucket, moto_server) for x in b_assets)
    finally:
        server.stop()
        a.close()


def test_a_restart_aborts_its_own_abandoned_multipart_upload_but_not_a_neighbours(
    aws: None, tmp_path: Path
) -> None:
    bucket = _bucket()
    state = tmp_path / "state"
    with _s3emu(bucket, state_dir=state) as b:
        account = b.accounts.authenticate(f"Bearer {b.api_key}")
        mine = b.assets.create(account, "application/octet-stream", "d")
        _upload(b, b"keep me")
    other = _s3emu(bucket)
    try:
        theirs = other.assets.create(
            other.accounts.authenticate(f"Bearer {other.api_key}"), "a/b", "d"
        )
        client = _s3(None)
        client.create_multipart_upload(Bucket=bucket, Key=_s3key(mine))  # left by kill -9
        client.create_multipart_upload(Bucket=bucket, Key=_s3key(theirs))  # in flight
        with _s3emu(bucket, state_dir=state):
            assert _pending(bucket) == [_s3key(theirs)]
        client.close()
    finally:
        other.close()


def test_a_failed_reset_on_s3_leaves_no_orphans_after_a_restart(aws: None, tmp_path: Path) -> None:
    """The process dies (simulated) while reset() deletes the bytes: as for a sweep, the next
    start must delete the bytes whose records were already forgotten."""
    bucket = _bucket()
    state = tmp_path / "state"
    emu = _s3emu(bucket, state_dir=state)
    try:
        for i in range(3):
            _upload(emu, b"%d" % i)

        def die(keys: Any) -> None:
            raise KeyboardInterrupt  # kill -9 between the records and the bytes

        emu.store.delete_many = die  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            emu.reset()
    finally:
        emu.close()
    with _s3emu(bucket, state_dir=state) as again:
        assert again.stored_assets() == []
    assert _keys(bucket) == []


# -- 2. a failed state write: memory must not run ahead of disk -------------------------------


def test_a_failed_state_write_on_asset_create_leaves_nothing_now_or_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        with monkeypatch.context() as m:
            m.setattr(emu.state, "put", _disk_full)
            r = requests.post(
                f"{emu.base_url}/v2/nvcf/assets",
                headers=AUTH,
                json={"contentType": "application/octet-stream", "description": "d"},
                timeout=30,
            )
        assert r.status_code == 500
        assert emu.stored_assets() == []
    with Emulator(state_dir=state) as emu:
        assert emu.stored_assets() == []


def test_a_failed_state_write_on_upload_to_s3_agrees_now_and_after_restart(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket()
    state = tmp_path / "state"
    with _s3emu(bucket, state_dir=state) as emu:
        asset = _create(emu.base_url)
        with monkeypatch.context() as m:
            m.setattr(emu.state, "put", _disk_full)
            r = _put(asset, b"x" * (9 * MiB))  # multipart
        assert r.status_code == 500, r.text
        assert _get(emu, asset["assetId"]) == 404
        assert _listed(emu) == []
        assert _keys(bucket) == []
        assert _pending(bucket) == []
    with _s3emu(bucket, state_dir=state) as emu:
        assert _get(emu, asset["assetId"]) == 404
        assert _listed(emu) == []
        assert _put(asset, b"again").status_code == 200
        assert _listed(emu) == [asset["assetId"]]


def test_a_failed_state_write_on_asset_delete_agrees_now_and_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DELETE whose record cannot be written: the client gets an error, and what the emulator
    shows now is what it shows after a restart."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        asset = _create(emu.base_url)
        assert _put(asset, b"bytes").status_code == 200
        with monkeypatch.context() as m:
            m.setattr(emu.state, "put", _disk_full)
            r = requests.delete(
                f"{emu.base_url}/v2/nvcf/assets/{asset['assetId']}", headers=AUTH, timeout=30
            )
        assert r.status_code >= 500
        now = (_get(emu, asset["assetId"]), _listed(emu), emu.assets.used_bytes)
    with Emulator(state_dir=state) as emu:
        after = (_get(emu, asset["assetId"]), _listed(emu), emu.assets.used_bytes)
    assert now == after


def test_a_failed_state_write_on_asset_delete_keeps_the_asset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error answer to DELETE should mean nothing was deleted (a retry then gets 204): the
    record is written before the bytes go, as every other change is."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        asset = _create(emu.base_url)
        assert _put(asset, b"bytes").status_code == 200
        with monkeypatch.context() as m:
            m.setattr(emu.state, "put", _disk_full)
            r = requests.delete(
                f"{emu.base_url}/v2/nvcf/assets/{asset['assetId']}", headers=AUTH, timeout=30
            )
        assert r.status_code == 500
        assert _get(emu, asset["assetId"]) == 200
        assert emu.asset_bytes(asset["assetId"]) == b"bytes"


def _fn(emu: Emulator) -> tuple[str, str]:
    r = requests.post(
        f"{emu.base_url}/v2/nvcf/functions",
        headers=AUTH,
        json={"name": "fn", "inferenceUrl": "/infer", "containerImage": "nvcr.io/x/y:1"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    f = r.json()["function"]
    return f["id"], f["versionId"]


def _versions(emu: Emulator) -> dict[str, tuple[str, list[str]]]:
    r = requests.get(f"{emu.base_url}/v2/nvcf/functions", headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return {f["versionId"]: (f["status"], list(f.get("tags", []))) for f in r.json()["functions"]}


def _deployment(emu: Emulator, fid: str, vid: str) -> tuple[int, Any]:
    """The deployment's status code and its specifications (None when there is none)."""
    r = requests.get(
        f"{emu.base_url}/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
        headers=AUTH,
        timeout=30,
    )
    if r.status_code != 200:
        return r.status_code, None
    return r.status_code, r.json()["deployment"].get("deploymentSpecifications")


def _function_op(emu: Emulator, op: str, fid: str, vid: str) -> requests.Response:
    d = f"{emu.base_url}/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    if op == "deploy":
        return requests.post(d, headers=AUTH, json=DEPLOY, timeout=30)
    if op == "undeploy":
        return requests.delete(d, headers=AUTH, timeout=30)
    if op == "update_deployment":
        spec = {**DEPLOY["deploymentSpecifications"][0], "maxInstances": 3}
        return requests.put(d, headers=AUTH, json={"deploymentSpecifications": [spec]}, timeout=30)
    if op == "tags":
        return requests.put(
            f"{emu.base_url}/v2/nvcf/metadata/functions/{fid}/versions/{vid}",
            headers=AUTH,
            json={"tags": ["new"]},
            timeout=30,
        )
    if op == "delete":
        return requests.delete(
            f"{emu.base_url}/v2/nvcf/functions/{fid}/versions/{vid}", headers=AUTH, timeout=30
        )
    if op == "version":
        return requests.post(
            f"{emu.base_url}/v2/nvcf/functions/{fid}/versions",
            headers=AUTH,
            json={"name": "fn", "inferenceUrl": "/infer", "containerImage": "nvcr.io/x/y:1"},
            timeout=30,
        )
    raise AssertionError(op)


@pytest.mark.parametrize(
    "op", ["version", "deploy", "update_deployment", "undeploy", "tags", "delete"]
)
def test_a_failed_state_write_on_a_function_change_changes_nothing(
    op: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each function change whose record cannot be written: an error, and the function list
    (status, tags, versions) is what it was, now and after a restart."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        fid, vid = _fn(emu)
        if op in ("undeploy", "update_deployment"):
            assert _function_op(emu, "deploy", fid, vid).status_code == 200
        before = (_versions(emu), _deployment(emu, fid, vid))
        with monkeypatch.context() as m:
            m.setattr(emu.state, "put", _disk_full)
            m.setattr(emu.state, "delete", _disk_full)
            r = _function_op(emu, op, fid, vid)
        assert r.status_code == 500, r.text
        now = (_versions(emu), _deployment(emu, fid, vid))
    with Emulator(state_dir=state) as emu:
        after = (_versions(emu), _deployment(emu, fid, vid))
    assert now == before
    assert after == before


def _echo_app() -> Flask:
    app = Flask("review-echo")
    app.add_url_rule("/health", "health", lambda: "ok")
    app.add_url_rule("/infer", "infer", lambda: {"ok": True}, methods=["POST"])
    return app


def test_a_failed_state_write_of_an_invocation_result_is_an_error_not_a_hang(
    tmp_path: Path,
) -> None:
    """The result cannot be saved (full disk): the client should get an answer (the result,
    or an error), not 202s until the request expires an hour later."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        fid, _ = emu.add_function(
            _echo_app(), name="echo", inference_url="/infer", health_uri="/health"
        )
        emu.state.put = _fail_on("result", emu.state.put)  # type: ignore[method-assign]
        r = requests.post(
            f"{emu.base_url}/v2/nvcf/pexec/functions/{fid}",
            headers={**emu.headers, "NVCF-POLL-SECONDS": "3"},
            json={"x": 1},
            timeout=30,
        )
        statuses = [r.status_code]
        if r.status_code == 202:
            req = r.headers["NVCF-REQID"]
            r = requests.get(
                f"{emu.base_url}/v2/nvcf/pexec/status/{req}",
                headers={**emu.headers, "NVCF-POLL-SECONDS": "2"},
                timeout=30,
            )
            statuses.append(r.status_code)
        assert statuses[-1] != 202, statuses


def test_a_failed_clock_write_leaves_the_clock_where_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        with monkeypatch.context() as m:
            m.setattr(emu.state, "put", _disk_full)
            r = requests.post(f"{emu.base_url}/_emulator/clock", json={"advance": 3600}, timeout=30)
        assert r.status_code == 500
        now_offset = emu.clock.offset
    with Emulator(state_dir=state) as emu:
        assert emu.clock.offset == pytest.approx(now_offset, abs=1)


def test_a_failed_state_write_during_reset_agrees_now_and_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reset() whose record deletes fail half-way: what the emulator lists afterwards must be
    what a restart lists."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        for i in range(4):
            _upload(emu, b"%d" % i)
        real = emu.state.delete
        calls = []

        def flaky(kind: str, record_id: str) -> None:
            calls.append(kind)
            if len(calls) == 3:
                raise sqlite3.OperationalError("disk I/O error")
            real(kind, record_id)

        with monkeypatch.context() as m:
            m.setattr(emu.state, "delete", flaky)
            with pytest.raises(sqlite3.OperationalError):
                emu.reset()
        with emu.activate():
            now = _listed(emu)
    with Emulator(state_dir=state) as emu:
        after = _listed(emu)
    assert now == after


# -- 3. restart edge cases -------------------------------------------------------------------


def test_a_state_dir_in_use_is_refused_in_process_and_across_processes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Emulator(state_dir=state)
    try:
        asset = _upload(first, b"first")
        with pytest.raises(RuntimeError, match=re.escape(str(state))):
            Emulator(state_dir=state)
        with pytest.raises(RuntimeError, match=f"process {os.getpid()}"):
            Emulator(root_dir=state)  # the same dir as a root_dir
        with pytest.raises(RuntimeError):
            Emulator(state_dir=tmp_path / "." / "state")
        link = tmp_path / "link"
        link.symlink_to(state)
        with pytest.raises(RuntimeError):
            Emulator(state_dir=link)
        assert first.asset_bytes(asset.asset_id) == b"first"  # the refusals touched nothing
    finally:
        first.close()
    proc = subprocess.Popen(
        [EXE, "--port", "0", "--log-level", "ERROR", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "http://" in proc.stdout.readline()
        with pytest.raises(RuntimeError, match=f"process {proc.pid}"):
            Emulator(state_dir=state)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    with Emulator(state_dir=state) as again:
        assert again.asset_bytes(asset.asset_id) == b"first"


def test_a_second_sqlite_writer_on_the_same_db_is_not_possible_without_the_lock(
    tmp_path: Path,
) -> None:
    """The lock is what stops two emulators: the refused one must not have opened (and so not
    swept or rewritten) the database."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        asset = _upload(emu, b"x")
        emu.clock.advance(25 * 3600)  # expired, not swept yet
        with pytest.raises(RuntimeError):
            Emulator(state_dir=state)
        emu.clock.advance(-25 * 3600)
        assert emu.asset_bytes(asset.asset_id) == b"x"
    store = SqliteStateStore(state / "state.sqlite3")
    try:
        assert [rid for rid, _ in store.load("asset")] == [asset.asset_id]
    finally:
        store.close()


def test_bytes_removed_behind_the_state_dirs_back(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        gone = _create(emu.base_url)
        kept = _create(emu.base_url)
        assert _put(gone, b"gone").status_code == 200
        assert _put(kept, b"kept").status_code == 200
        path = emu.asset_path(gone["assetId"])
    assert path is not None
    path.unlink()
    with Emulator(state_dir=state) as emu:
        assert _get(emu, gone["assetId"]) == 404
        assert _listed(emu) == [kept["assetId"]]
        assert emu.assets.used_bytes == len(b"kept")
        assert _put(gone, b"back").status_code == 200  # the saved URL still works
        assert emu.asset_bytes(gone["assetId"]) == b"back"
    import shutil

    shutil.rmtree(state / "storage")
    with Emulator(state_dir=state) as emu:
        assert _listed(emu) == []
        assert emu.assets.used_bytes == 0


def test_s3_objects_removed_behind_its_back(aws: None, tmp_path: Path) -> None:
    bucket = _bucket()
    state = tmp_path / "state"
    with _s3emu(bucket, state_dir=state) as emu:
        gone = _create(emu.base_url)
        kept = _create(emu.base_url)
        assert _put(gone, b"gone").status_code == 200
        assert _put(kept, b"kept").status_code == 200
        key = _s3key(emu.assets.find(gone["assetId"]))  # type: ignore[arg-type]
        _s3().delete_object(Bucket=bucket, Key=key)
        # While running: deleting it over the API still works.
    with _s3emu(bucket, state_dir=state) as emu:
        assert _get(emu, gone["assetId"]) == 404
        assert _listed(emu) == [kept["assetId"]]
        assert emu.assets.used_bytes == len(b"kept")
        assert _put(gone, b"back").status_code == 200
        assert _listed(emu) == sorted([gone["assetId"], kept["assetId"]])
    # The whole prefix emptied behind its back.
    client = _s3()
    for k in _keys(bucket):
        client.delete_object(Bucket=bucket, Key=k)
    with _s3emu(bucket, state_dir=state) as emu:
        assert _listed(emu) == []
        emu.reset()
    assert _keys(bucket) == []


def test_a_restart_under_a_moved_clock(aws: None, tmp_path: Path) -> None:
    bucket = _bucket()
    state = tmp_path / "state"
    neighbour = _s3emu(bucket)
    try:
        theirs = _upload(neighbour, b"neighbour")
        with _s3emu(bucket, state_dir=state) as emu:
            asset = _upload(emu, b"mine")
            emu.clock.advance(23 * 3600)
        with _s3emu(bucket, state_dir=state) as emu:
            assert emu.clock.offset == pytest.approx(23 * 3600, abs=5)
            assert _get(emu, asset.asset_id) == 200
            emu.clock.advance(2 * 3600)
        with _s3emu(bucket, state_dir=state) as emu:  # expired while down: swept at start
            assert emu.stored_assets() == []
            assert _get(emu, asset.asset_id) == 404
        assert _keys(bucket) == [_s3key(theirs)]
        # A clock moved back before the restart: an asset made "in the past" lives on.
        with _s3emu(bucket, state_dir=state) as emu:
            emu.clock.advance(-48 * 3600)
            early = _upload(emu, b"early")
        with _s3emu(bucket, state_dir=state) as emu:
            assert _get(emu, early.asset_id) == 200
            emu.clock.advance(24 * 3600 + 1)
            emu.sweep()
            assert _get(emu, early.asset_id) == 404
        assert _keys(bucket) == [_s3key(theirs)]
    finally:
        neighbour.close()
