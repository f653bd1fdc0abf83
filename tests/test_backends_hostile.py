"""Hostile use of the storage backends and of ``--state-dir``, as a team's CI would meet it.

S3 against moto (``mock_aws`` in-process, ``ThreadedMotoServer`` and a ``moto.server``
subprocess on loopback), and the SQLite state dir under crashes, corruption, permissions and a
full disk. Each test says what a user sees.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from nvcf_emulator import Emulator
from nvcf_emulator.domain.assets import Asset
from nvcf_emulator.storage import s3 as s3_module
from nvcf_emulator.storage.s3 import S3BlobStore

pytestmark = pytest.mark.usefixtures("aws_env")
MiB = 1024 * 1024
EXE = str(Path(sys.executable).with_name("nvcf-emulate"))
DESC = "x-amz-meta-nvcf-asset-description"
AUTH = {"Authorization": "Bearer nvapi-hostile"}


def _bucket() -> str:
    return f"hostile-{uuid.uuid4().hex[:12]}"


def _s3(endpoint: str | None = None) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _keys(bucket: str, endpoint: str | None = None) -> list[str]:
    pages = _s3(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", ()))


def _pending(bucket: str, endpoint: str | None = None) -> list[str]:
    listed = _s3(endpoint).list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in listed.get("Uploads", ())]


def _create(base: str) -> dict[str, Any]:
    r = requests.post(
        f"{base}/v2/nvcf/assets",
        headers=AUTH,
        json={"contentType": "application/octet-stream", "description": "d"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _put(asset: dict[str, Any], data: bytes | Iterator[bytes]) -> requests.Response:
    return requests.put(
        asset["uploadUrl"],
        data=data,
        headers={"Content-Type": asset["contentType"], DESC: asset["description"]},
        timeout=30,
    )


def _upload(emu: Emulator, data: bytes) -> Asset:
    """Create and upload an asset through the service (no HTTP): fast, for bulk set-ups."""
    account = emu.accounts.authenticate(f"Bearer {emu.api_key}")
    asset = emu.assets.create(account, "application/octet-stream", "d")
    emu.assets.upload(asset.nca_id, asset.asset_id, io.BytesIO(data), len(data))
    return asset


def _disk_full(*args: Any, **kwargs: Any) -> None:
    """A state store write on a full disk."""
    raise sqlite3.OperationalError("database or disk is full")


def _get(emu: Emulator, asset_id: str) -> int:
    r = requests.get(f"{emu.base_url}/v2/nvcf/assets/{asset_id}", headers=emu.headers)
    return r.status_code


def _start(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """``nvcf-emulate`` on a free port; its URL once it listens."""
    proc = subprocess.Popen(
        [EXE, "--port", "0", "--log-level", "ERROR", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+)", line)
    if not match:
        proc.kill()
        proc.wait(30)
        raise AssertionError(f"nvcf-emulate did not start: {line!r}")
    return proc, match.group(1)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- S3: the bucket, the prefix, and what is left behind -------------------------------------


def test_s3_with_a_state_dir_keeps_assets_across_a_restart(aws: None, tmp_path: Path) -> None:
    """Bytes in S3, records in the state dir: a restart lists the asset with the same bytes."""
    bucket = _bucket()
    settings: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "storage": f"s3://{bucket}/ci",
        "s3_create_bucket": True,
    }
    payload = os.urandom(9 * MiB)  # more than one part
    with Emulator(**settings) as emu:
        asset = _create(emu.base_url)
        assert _put(asset, payload).status_code == 200
    with Emulator(**settings) as emu:
        assert _get(emu, asset["assetId"]) == 200
        assert emu.asset_bytes(asset["assetId"]) == payload
    assert len(_keys(bucket)) == 1
    assert _pending(bucket) == []


def test_a_restart_against_the_wrong_bucket_does_not_destroy_stored_assets(
    aws: None, tmp_path: Path
) -> None:
    """A user restarts once with a typo in the bucket (the emulator refuses to start), then
    with the right one: the asset must still be there."""
    right = _bucket()
    state = tmp_path / "state"
    with Emulator(state_dir=state, storage=f"s3://{right}/ci", s3_create_bucket=True) as emu:
        asset = _create(emu.base_url)
        assert _put(asset, b"precious").status_code == 200
    with pytest.raises(Exception, match=r"NoSuchBucket|bucket"):
        Emulator(state_dir=state, storage=f"s3://{right}-typo/ci").close()
    with Emulator(state_dir=state, storage=f"s3://{right}/ci") as emu:
        assert _keys(right) != [], "the stored bytes were deleted from the right bucket"
        assert emu.asset_bytes(asset["assetId"]) == b"precious"


def test_a_missing_bucket_is_an_error_at_start_naming_it(aws: None) -> None:
    """``storage=s3://nope/p`` without ``s3_create_bucket``: the user expects start-up to fail
    with the bucket's name, not every upload to answer 'We encountered an internal error.'"""
    bucket = _bucket()
    with pytest.raises(Exception, match=bucket):
        Emulator(storage=f"s3://{bucket}/ci").close()


@pytest.mark.parametrize("prefix", ["a b/ü~x+y/%41=&;,$@!'()*", "../up/./x", "a//b"])
def test_a_prefix_with_odd_characters_round_trips_and_reset_spares_neighbours(
    moto_server: str, prefix: str
) -> None:
    """Spaces, UTF-8, percent signs, dot segments, double slashes: keys are kept verbatim under
    the prefix, a multipart upload completes, and reset() removes only the prefix's keys."""
    bucket = _bucket()
    payload = os.urandom(9 * MiB)
    with Emulator(
        storage=f"s3://{bucket}/{prefix}", s3_endpoint_url=moto_server, s3_create_bucket=True
    ) as emu:
        _s3(moto_server).put_object(Bucket=bucket, Key="neighbour/keep", Body=b"k")
        asset = _create(emu.base_url)
        assert _put(asset, payload).status_code == 200
        (key,) = [k for k in _keys(bucket, moto_server) if k != "neighbour/keep"]
        assert key.startswith(f"{prefix}/") and key.endswith(asset["assetId"])
        assert emu.asset_bytes(asset["assetId"]) == payload
        emu.reset()
    assert _keys(bucket, moto_server) == ["neighbour/keep"]
    assert _pending(bucket, moto_server) == []


def test_a_server_upload_cut_off_midway_leaves_no_object_and_no_multipart_upload(
    moto_server: str,
) -> None:
    """Over a socket: 20 MiB announced, 12 MiB sent (one part already in S3), then the client
    goes away. No object, no pending multipart upload, the server keeps serving."""
    bucket = _bucket()
    emu = Emulator(storage=f"s3://{bucket}/ci", s3_endpoint_url=moto_server, s3_create_bucket=True)
    server = emu.serve(idle_timeout=5)
    try:
        asset = _create(server.url)
        target = urlsplit(asset["uploadUrl"])
        sock = socket.create_connection((target.hostname or "", target.port or 80))
        head = (
            f"PUT {target.path}?{target.query} HTTP/1.1\r\nHost: {target.netloc}\r\n"
            f"Content-Type: application/octet-stream\r\n{DESC}: d\r\n"
            f"Content-Length: {20 * MiB}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * (12 * MiB))
        _wait_for(lambda: _pending(bucket, moto_server) != [])
        sock.close()
        _wait_for(lambda: _pending(bucket, moto_server) == [])
        assert _keys(bucket, moto_server) == []
        assert _put(asset, b"retry").status_code == 200
        assert emu.asset_bytes(asset["assetId"]) == b"retry"
    finally:
        server.stop()
        emu.close()


def test_kill9_mid_upload_leaves_no_multipart_upload_after_the_restart(
    moto_server: str, tmp_path: Path
) -> None:
    """``nvcf-emulate --state-dir --storage s3://...`` killed while a 30 MiB body streams in
    (one part already in S3), then started again on the same state dir and prefix."""
    bucket = _bucket()
    args = ["--state-dir", str(tmp_path / "state"), "--storage", f"s3://{bucket}/ci"]
    args += ["--s3-endpoint-url", moto_server, "--s3-create-bucket"]
    proc, url = _start(args)
    try:
        done = _create(url)
        assert _put(done, b"kept").status_code == 200
        asset = _create(url)
        target = urlsplit(asset["uploadUrl"])
        sock = socket.create_connection((target.hostname or "", target.port or 80))
        head = (
            f"PUT {target.path}?{target.query} HTTP/1.1\r\nHost: {target.netloc}\r\n"
            f"Content-Type: application/octet-stream\r\n{DESC}: d\r\n"
            f"Content-Length: {30 * MiB}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * (12 * MiB))
        _wait_for(lambda: _pending(bucket, moto_server) != [])
        _stop(proc, signal.SIGKILL)
        sock.close()
    finally:
        _stop(proc, signal.SIGKILL)
    proc, url = _start(args)
    try:
        r = requests.get(f"{url}/v2/nvcf/assets/{done['assetId']}", headers=AUTH, timeout=30)
        assert r.status_code == 200
        r = requests.get(f"{url}/v2/nvcf/assets/{asset['assetId']}", headers=AUTH, timeout=30)
        assert r.status_code == 404
        assert _pending(bucket, moto_server) == []
    finally:
        _stop(proc)


def test_s3_going_away_mid_upload_is_a_5xx_and_keeps_the_old_bytes() -> None:
    """The S3 server stops after two parts: the PUT answers 500 within seconds (no hang), the
    previous bytes stay, and once S3 is back a new upload works."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = _bucket()
    emu = Emulator(storage=f"s3://{bucket}/ci", s3_endpoint_url=endpoint, s3_create_bucket=True)
    again: ThreadedMotoServer | None = None
    try:
        with emu.activate():
            asset = _create(emu.base_url)
            assert _put(asset, b"old").status_code == 200

            def body() -> Iterator[bytes]:
                for i in range(30):
                    if i == 20:  # two 8 MiB parts are in S3
                        server.stop()
                        if server._server is not None:
                            server._server.server_close()
                    yield b"y" * MiB

            started = time.monotonic()
            r = _put(asset, body())
            assert r.status_code == 500, r.text
            assert time.monotonic() - started < 20
            again = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            again.start()
            assert emu.asset_bytes(asset["assetId"]) == b"old"
            assert _put(asset, b"new").status_code == 200
            assert emu.asset_bytes(asset["assetId"]) == b"new"
            S3BlobStore(bucket, "ci", _s3(endpoint)).abort_pending_uploads()  # moto is shared
    finally:
        emu.close()
        for s in (server, again):
            if s is not None and s._server is not None:
                s.stop()
                s._server.server_close()


def test_two_emulators_on_one_prefix_do_not_destroy_each_others_assets(aws: None) -> None:
    """Two emulators (e.g. two xdist workers with ``nvcf_settings = storage=s3://b/ci``): each
    sees only its own assets, and the second one's per-test reset() must not delete the first
    one's bytes while it still lists the asset as uploaded."""
    bucket = _bucket()
    a = Emulator(storage=f"s3://{bucket}/ci", s3_create_bucket=True)
    b = Emulator(storage=f"s3://{bucket}/ci", s3_create_bucket=True)
    try:
        with a.activate():
            mine = _create(a.base_url)
            assert _put(mine, b"worker A").status_code == 200
        assert b.stored_assets() == []
        with b.activate():
            theirs = _create(b.base_url)
            assert _put(theirs, b"worker B").status_code == 200
        b.reset()
        with a.activate():
            assert _get(a, mine["assetId"]) == 200
        assert a.asset_bytes(mine["assetId"]) == b"worker A"
        # b's reset deleted b's bytes, and only those.
        assert _keys(bucket) == [f"ci/{a.assets.find(mine['assetId']).key}"]  # type: ignore[union-attr]
    finally:
        a.close()
        b.close()


def test_delete_racing_a_reupload_ends_consistent_on_s3(aws: None) -> None:
    """A DELETE while a 20 MiB re-upload is streaming: the delete wins first (204), the upload
    then completes (200) and the asset holds exactly the new bytes, as S3 would do."""
    bucket = _bucket()
    new = os.urandom(20 * MiB)
    with Emulator(storage=f"s3://{bucket}/ci", s3_create_bucket=True) as emu:
        asset = _create(emu.base_url)
        assert _put(asset, b"old").status_code == 200
        midway, deleted = threading.Event(), threading.Event()

        def body() -> Iterator[bytes]:
            for i in range(20):
                if i == 10:
                    midway.set()
                    assert deleted.wait(20)
                yield new[i * MiB : (i + 1) * MiB]

        result: list[int] = []
        upload = threading.Thread(target=lambda: result.append(_put(asset, body()).status_code))
        upload.start()
        assert midway.wait(20)
        r = requests.delete(f"{emu.base_url}/v2/nvcf/assets/{asset['assetId']}", headers=AUTH)
        assert r.status_code == 204
        assert _get(emu, asset["assetId"]) == 404
        deleted.set()
        upload.join(30)
        assert result == [200]
        assert _get(emu, asset["assetId"]) == 200
        assert emu.asset_bytes(asset["assetId"]) == new
        assert _pending(bucket) == []
        assert len(_keys(bucket)) == 1


def _expired_on_s3(emu: Emulator, count: int) -> Asset:
    """``count`` expired assets and one fresh one; the next request sweeps."""
    for i in range(count):
        _upload(emu, b"old %d" % i)
    emu.clock.advance(25 * 3600)
    fresh = _upload(emu, b"fresh")
    emu._next_sweep = emu.clock.now() - 1  # the next request triggers the sweep
    return fresh


def _flaky_delete(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's first delete fails as an unreachable S3 does; later ones work."""
    real = emu.store.delete
    calls: list[str] = []

    def delete(key: str) -> None:
        calls.append(key)
        if len(calls) == 1:
            raise OSError(errno.ECONNREFUSED, "S3 unreachable (transient)")
        real(key)

    monkeypatch.setattr(emu.store, "delete", delete)


def test_an_s3_error_while_sweeping_does_not_fail_the_request_that_triggered_it(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GET of the asset list happens to trigger the once-a-minute sweep while S3 has a
    transient error: the list must still be answered (the sweep failure only logged)."""
    with Emulator(storage=f"s3://{_bucket()}/ci", s3_create_bucket=True) as emu:
        fresh = _expired_on_s3(emu, 3)
        _flaky_delete(emu, monkeypatch)
        r = requests.get(f"{emu.base_url}/v2/nvcf/assets", headers=emu.headers)
        assert r.status_code == 200
        assert [a["assetId"] for a in r.json()["assets"]] == [fresh.asset_id]


def test_expired_bytes_are_deleted_once_s3_recovers(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep that meets a transient S3 error: the next sweep removes what is left."""
    bucket = _bucket()
    with Emulator(storage=f"s3://{bucket}/ci", s3_create_bucket=True) as emu:
        fresh = _expired_on_s3(emu, 3)
        _flaky_delete(emu, monkeypatch)
        with contextlib.suppress(OSError):
            emu.sweep()
        emu.sweep()
        assert _keys(bucket) == [f"ci/{fresh.key}"]


def test_a_restart_on_s3_costs_a_few_requests_not_one_per_asset(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 uploaded and 200 created-only assets: a restart should list the prefix (one request
    per 1,000 keys), not make 400 calls."""
    settings: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "storage": f"s3://{_bucket()}/ci",
        "s3_create_bucket": True,
    }
    with Emulator(**settings) as emu:
        account = emu.accounts.authenticate(f"Bearer {emu.api_key}")
        for i in range(200):
            _upload(emu, b"%d" % i)
            emu.assets.create(account, "a/b", "never uploaded")
    sent: list[str] = []
    real = s3_module._make_client

    def counting(endpoint_url: str | None, region_name: str | None) -> Any:
        client = real(endpoint_url, region_name)
        client.meta.events.register("before-send.s3", lambda request, **_: sent.append("x"))
        return client

    monkeypatch.setattr(s3_module, "_make_client", counting)
    with Emulator(**settings) as emu:
        assert len(emu.stored_assets()) == 400
        assert len(sent) <= 10, f"{len(sent)} S3 requests to restore 400 records"


def test_a_200_mib_upload_to_s3_keeps_memory_bounded(tmp_path: Path) -> None:
    """A 200 MiB body streamed to a moto server in another process: the emulator's Python heap
    peaks at about one 8 MiB part, not the body."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                requests.get(endpoint, timeout=1).close()
                return True
            except requests.ConnectionError:
                return False

        _wait_for(up)
        with Emulator(
            storage=f"s3://{_bucket()}/ci", s3_endpoint_url=endpoint, s3_create_bucket=True
        ) as emu:
            asset = _create(emu.base_url)
            block = os.urandom(MiB)
            tracemalloc.start()
            try:
                r = _put(asset, (block for _ in range(200)))
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert r.status_code == 200, r.text
            assert emu.assets.find(asset["assetId"]).size == 200 * MiB  # type: ignore[union-attr]
            assert peak < 24 * MiB, f"peak {peak / MiB:.1f} MiB for a 200 MiB body"
    finally:
        moto.terminate()
        moto.wait(30)


# -- the state dir: corruption, versions, permissions, full disks, crashes -------------------


def test_a_corrupted_state_db_is_an_error_naming_the_file(tmp_path: Path) -> None:
    """Garbage in ``state.sqlite3``: the error names the file (and the lock is released, so a
    second try gets the same error rather than 'in use')."""
    state = tmp_path / "state"
    Emulator(state_dir=state).close()
    (state / "state.sqlite3").write_bytes(b"not a database " * 1000)
    for _ in range(2):
        with pytest.raises(Exception, match=re.escape(str(state / "state.sqlite3"))):
            Emulator(state_dir=state)


def test_a_state_dir_from_a_newer_version_is_a_clear_error(tmp_path: Path) -> None:
    """A state dir written by a newer emulator (a schema version above ours, a record with a
    new field): the user expects 'written by a newer nvcf-emulator' and the path."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        _upload(emu, b"z")
    with sqlite3.connect(state / "state.sqlite3") as db:
        (text,) = db.execute("SELECT data FROM records WHERE kind = 'asset'").fetchone()
        data = json.loads(text) | {"checksum": "crc32:00000000"}
        db.execute("UPDATE records SET data = ? WHERE kind = 'asset'", (json.dumps(data),))
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(Exception, match=r"(?i)newer") as info:
        Emulator(state_dir=state)
    assert str(state) in str(info.value)


def _as_nobody() -> list[str]:
    """A command prefix that drops root (root ignores file modes), or nothing if not root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes cannot be tested")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if not _nobody_can_run(tuple(prefix)):
        pytest.skip(
            f"uid 65534 cannot run {EXE} (this checkout is under a directory only its owner "
            "may enter, as mktemp -d makes): file modes cannot be tested from here"
        )
    return prefix


@functools.cache
def _nobody_can_run(prefix: tuple[str, ...]) -> bool:
    probe = subprocess.run([*prefix, EXE, "--help"], capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir another user can reach (pytest's tmp_path is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="nvcf-hostile-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                Path(dirpath, name).chmod(0o777)
        shutil.rmtree(path, ignore_errors=True)


def test_an_unwritable_state_dir_is_an_error_naming_the_path(shared_tmp: Path) -> None:
    """A state dir the user may not write (or create): exit 1 and the path in the message."""
    locked = shared_tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    for state in (locked, locked / "state"):
        result = subprocess.run(
            [*_as_nobody(), EXE, "--port", "0", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=shared_tmp,
        )
        assert result.returncode == 1
        assert "Permission denied" in result.stderr and str(state) in result.stderr


def test_a_read_only_state_db_is_refused_at_start(shared_tmp: Path) -> None:
    """``state.sqlite3`` left read-only (e.g. written by another user in CI): the user expects
    start-up to fail naming the file, not a server whose every write is a 500."""
    state = shared_tmp / "state"
    Emulator(state_dir=state).close()
    for dirpath, dirnames, filenames in os.walk(state):
        for name in dirnames:
            Path(dirpath, name).chmod(0o777)
        for name in filenames:
            Path(dirpath, name).chmod(0o666)
    state.chmod(0o777)
    (state / "state.sqlite3").chmod(0o444)
    proc = subprocess.Popen(
        [*_as_nobody(), EXE, "--port", "0", "--log-level", "ERROR", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=shared_tmp,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" in line:
            url = line.split()[-1]
            created = requests.post(
                f"{url}/v2/nvcf/assets",
                headers=AUTH,
                json={"contentType": "a/b", "description": "d"},
                timeout=30,
            )
            pytest.fail(f"started on a read-only state db; create answered {created.status_code}")
        assert proc.wait(30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
    assert "state.sqlite3" in err


def test_a_full_disk_while_committing_is_507_and_keeps_the_old_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up as the upload is renamed into place: S3's 507 InsufficientStorage as
    for a full disk mid-body, the old bytes kept, no temp file left."""
    with Emulator(state_dir=tmp_path / "state") as emu:
        asset = _create(emu.base_url)
        assert _put(asset, b"old").status_code == 200

        def full(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "replace", full)
        r = _put(asset, b"new" * 1000)
        monkeypatch.undo()
        assert emu.asset_bytes(asset["assetId"]) == b"old"
        assert emu.store.pending_uploads() == []
        assert r.status_code == 507, r.text
        assert "<Code>InsufficientStorage</Code>" in r.text


def test_a_failed_state_write_does_not_show_a_failed_upload_as_uploaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite hits a full disk while recording an upload: the client is told it failed, so the
    asset must not be listed as uploaded (before or after a restart)."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        asset = _create(emu.base_url)

        monkeypatch.setattr(emu.state, "put", _disk_full)
        r = _put(asset, b"bytes")
        monkeypatch.undo()
        assert r.status_code == 500, r.text
        assert "<Code>InternalError</Code>" in r.text
        assert "could not record the upload (database or disk is full)" in r.text
        after_failure = _get(emu, asset["assetId"])
        assert emu.asset_path(asset["assetId"]) is None
    with Emulator(state_dir=state) as emu:
        after_restart = _get(emu, asset["assetId"])
    assert (after_failure, after_restart) == (404, 404)


def test_a_failed_state_write_on_a_reupload_withdraws_the_asset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-upload whose record cannot be written: the new bytes are in place but unrecorded,
    so the asset is withdrawn (not uploaded, bytes gone, quota freed) now and after a
    restart, rather than shown with the old size and etag over the new bytes."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        asset = _create(emu.base_url)
        assert _put(asset, b"old bytes").status_code == 200
        assert emu.assets.used_bytes == len(b"old bytes")

        monkeypatch.setattr(emu.state, "put", _disk_full)
        r = _put(asset, b"new, longer bytes")
        monkeypatch.undo()
        assert r.status_code == 500, r.text
        assert _get(emu, asset["assetId"]) == 404
        assert emu.assets.used_bytes == 0
        assert emu.asset_path(asset["assetId"]) is None
        # The URL still works once the disk has room again.
        assert _put(asset, b"third").status_code == 200
        assert emu.asset_bytes(asset["assetId"]) == b"third"
    with Emulator(state_dir=state) as emu:
        assert emu.asset_bytes(asset["assetId"]) == b"third"


def test_a_failed_state_write_on_create_leaves_no_asset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating an asset whose record cannot be written: an error, and no asset in the list."""
    with Emulator(state_dir=tmp_path / "state") as emu:
        monkeypatch.setattr(emu.state, "put", _disk_full)
        r = requests.post(
            f"{emu.base_url}/v2/nvcf/assets",
            headers=AUTH,
            json={"contentType": "application/octet-stream", "description": "d"},
            timeout=30,
        )
        monkeypatch.undo()
        assert r.status_code == 500, r.text
        listed = requests.get(f"{emu.base_url}/v2/nvcf/assets", headers=AUTH, timeout=30)
        assert listed.json() == {"assets": []}
        assert emu.stored_assets() == []  # nor a record waiting for its upload


def test_a_failed_state_write_on_function_create_leaves_no_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a function whose record cannot be written: 500, and the function is not listed
    (now, or after a restart)."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        monkeypatch.setattr(emu.state, "put", _disk_full)
        r = requests.post(
            f"{emu.base_url}/v2/nvcf/functions",
            headers=AUTH,
            json={"name": "doomed", "inferenceUrl": "/infer", "containerImage": "nvcr.io/x/y:1"},
            timeout=30,
        )
        monkeypatch.undo()
        assert r.status_code == 500, r.text
        listed = requests.get(f"{emu.base_url}/v2/nvcf/functions", headers=AUTH, timeout=30)
        assert listed.json() == {"functions": []}


def test_a_crash_mid_sweep_leaves_no_orphan_bytes_after_the_restart(tmp_path: Path) -> None:
    """The process dies (simulated at the first byte delete) while sweeping expired assets: the
    next start must remove the bytes of the records that were already gone."""
    state = tmp_path / "state"
    emu = Emulator(state_dir=state)
    try:
        paths = [emu.asset_path(_upload(emu, b"%d" % i).asset_id) for i in range(5)]
        emu.clock.advance(25 * 3600)

        def die(key: str) -> None:
            raise KeyboardInterrupt  # stands for kill -9 between the records and the bytes

        emu.store.delete = die  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            emu.sweep()
    finally:
        emu.close()
    with Emulator(state_dir=state) as again:
        assert again.stored_assets() == []
        leftovers = [p for p in paths if p is not None and p.exists()]
        assert leftovers == []


def test_a_clock_reset_is_persisted_too(tmp_path: Path) -> None:
    """advance() then reset(): the next start runs on the wall clock, not the old offset."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        emu.clock.advance(3600)
    with Emulator(state_dir=state) as emu:
        assert emu.clock.offset == pytest.approx(3600)
        emu.reset()
    with Emulator(state_dir=state) as emu:
        assert emu.clock.offset == 0


def test_5000_assets_are_restored_quickly(tmp_path: Path) -> None:
    """5,000 uploaded assets come back in well under a second (each listed, bytes intact)."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        ids = [_upload(emu, b"%d" % i).asset_id for i in range(5000)]
    started = time.perf_counter()
    with Emulator(state_dir=state) as emu:
        elapsed = time.perf_counter() - started
        assert len(emu.stored_assets()) == 5000
        assert emu.asset_bytes(ids[4321]) == b"4321"
        listed = requests.get(f"{emu.base_url}/v2/nvcf/assets", headers=emu.headers).json()
        assert len(listed["assets"]) == min(5000, emu.config.list_limit)
    assert elapsed < 3.0, f"restoring 5,000 assets took {elapsed:.2f} s"
