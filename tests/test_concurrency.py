"""Many clients at once: 16 threads x 50 rounds of create → upload → invoke → delete, with
every byte checked end to end, in-process and against a live server; and nothing leaks."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.worker import ContainerRequest

THREADS, ROUNDS = 16, 50


def hash_assets(req: ContainerRequest) -> dict[str, Any]:
    files = sorted(p.name for p in req.asset_dir.iterdir())
    return {
        "files": files,
        "sha256": {
            i: hashlib.sha256((req.asset_dir / i).read_bytes()).hexdigest() for i in req.asset_ids
        },
    }


def _rounds(base: str, emu: Emulator, fid: str, worker: int) -> int:
    done = 0
    with requests.Session() as s:
        s.headers.update(emu.headers)
        for n in range(ROUNDS):
            data = os.urandom(256) + f"{worker}:{n}".encode()
            asset = s.post(
                f"{base}/v2/nvcf/assets", json={"contentType": "a/b", "description": "d"}
            ).json()
            put = requests.put(
                asset["uploadUrl"],
                data=data,
                headers={"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"},
            )
            assert put.status_code == 200, put.text
            aid = asset["assetId"]
            r = s.post(
                f"{base}/v2/nvcf/pexec/functions/{fid}",
                json={},
                headers={"NVCF-INPUT-ASSET-REFERENCES": aid, "NVCF-POLL-SECONDS": "30"},
            )
            assert r.status_code == 200, r.text
            # Only this request's asset was staged for it, with exactly the uploaded bytes.
            assert r.json() == {"files": [aid], "sha256": {aid: hashlib.sha256(data).hexdigest()}}
            assert s.delete(f"{base}/v2/nvcf/assets/{aid}").status_code == 204
            done += 1
    return done


def _hammer(base: str, emu: Emulator) -> None:
    fid, _ = emu.add_function(hash_assets, name="hasher")
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda w: _rounds(base, emu, fid, w), range(THREADS)))
    assert sum(results) == THREADS * ROUNDS
    assert [a for a in emu.stored_assets() if a.uploaded] == []
    assert len(emu.invocations) == THREADS * ROUNDS
    assert all(inv.response_status == 200 for inv in emu.invocations)


#: Where this process's open descriptors are listed (Linux; macOS has /dev/fd).
FD_DIR = next((d for d in ("/proc/self/fd", "/dev/fd") if os.path.isdir(d)), None)


def _fds() -> int:
    assert FD_DIR is not None
    return len(os.listdir(FD_DIR))


def _fds_settled(limit: int, within: float = 5.0) -> int:
    """The open descriptor count once it is at most ``limit``, or after ``within`` s: a thread
    another test in this xdist process left running may hold a file open for a moment, while
    a leaked descriptor stays open."""
    deadline = time.monotonic() + within
    while _fds() > limit and time.monotonic() < deadline:
        time.sleep(0.05)
    return _fds()


def test_concurrent_rounds_in_process() -> None:
    with Emulator() as emu:
        _hammer(emu.base_url, emu)


@pytest.mark.skipif(FD_DIR is None, reason="counts descriptors in /proc/self/fd or /dev/fd")
def test_concurrent_rounds_on_a_live_server_leak_nothing() -> None:
    threads_before = set(threading.enumerate())
    fds_before = _fds()
    emu = Emulator()
    server = emu.serve()
    try:
        _hammer(server.url, emu)
    finally:
        server.stop()
        emu.close()
    leaked = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert leaked == []
    assert _fds_settled(fds_before) <= fds_before, sorted(os.listdir(FD_DIR or "."))


# -- a slow store (S3 over a network) does not hold up other assets -------------------------------


class _GatedCommits:
    """Wraps a store's writers: the first commit waits until the test opens the gate."""

    def __init__(self, emu: Emulator) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        store = emu.store
        real_writer = store.writer

        gate = self

        class Writer:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def __getattr__(self, name: str) -> Any:  # write, fileno, abort: as they are
                return getattr(self.inner, name)

            def commit(self) -> None:
                if not gate.entered.is_set():
                    gate.entered.set()
                    assert gate.opened.wait(10), "the test never opened the gate"
                self.inner.commit()

        store.writer = lambda key: Writer(real_writer(key))  # type: ignore[method-assign]


def _upload_in_thread(asset: dict[str, Any], data: bytes) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []

    def put() -> None:
        answers.append(
            requests.put(
                asset["uploadUrl"],
                data=data,
                headers={
                    "Content-Type": "a/b",
                    "x-amz-meta-nvcf-asset-description": "d",
                },
            )
        )

    thread = threading.Thread(target=put)
    thread.start()
    return thread, answers


def _create(emu: Emulator) -> dict[str, Any]:
    r = requests.post(
        "https://api.nvcf.nvidia.com/v2/nvcf/assets",
        headers=emu.headers,
        json={"contentType": "a/b", "description": "d"},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_slow_commit_holds_up_no_other_asset(nvcf: Emulator) -> None:
    other = _create(nvcf)
    put = requests.put(
        other["uploadUrl"],
        data=b"other",
        headers={"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"},
    )
    assert put.status_code == 200
    gate = _GatedCommits(nvcf)
    slow = _create(nvcf)
    thread, answers = _upload_in_thread(slow, b"slow bytes")
    try:
        assert gate.entered.wait(10)
        api = "https://api.nvcf.nvidia.com/v2/nvcf/assets"
        # While that commit hangs: list, get, create and delete other assets all answer.
        listed = requests.get(api, headers=nvcf.headers, timeout=5)
        assert listed.status_code == 200
        assert [a["assetId"] for a in listed.json()["assets"]] == [other["assetId"]]
        got = requests.get(f"{api}/{other['assetId']}", headers=nvcf.headers, timeout=5)
        assert got.status_code == 200
        assert _create(nvcf)["assetId"]
        gone = requests.delete(f"{api}/{other['assetId']}", headers=nvcf.headers, timeout=5)
        assert gone.status_code == 204
    finally:
        gate.opened.set()
        thread.join(10)
    assert answers and answers[0].status_code == 200, answers
    assert nvcf.asset_bytes(slow["assetId"]) == b"slow bytes"


def test_an_asset_that_expires_while_its_bytes_come_in_keeps_no_bytes(nvcf: Emulator) -> None:
    gate = _GatedCommits(nvcf)
    asset = _create(nvcf)
    record = nvcf.assets.find(asset["assetId"])
    assert record is not None
    key = record.key
    thread, answers = _upload_in_thread(asset, b"late bytes")
    try:
        assert gate.entered.wait(10)
        nvcf.clock.advance(24 * 3600 + 1)  # past the asset's TTL: the sweep purges its record
        assert nvcf.assets.sweep() == 1
    finally:
        gate.opened.set()
        thread.join(10)
    assert answers[0].status_code == 404, answers[0].text
    assert "<Code>NoSuchUpload</Code>" in answers[0].text
    assert nvcf.assets.used_bytes == 0
    assert nvcf.assets.find(asset["assetId"]) is None  # purged, and its bytes with it
    assert nvcf.store.size(key) is None


def test_a_slow_delete_of_expired_bytes_holds_up_no_other_asset(nvcf: Emulator) -> None:
    old = _create(nvcf)
    put = requests.put(
        old["uploadUrl"],
        data=b"old",
        headers={"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"},
    )
    assert put.status_code == 200
    record = nvcf.assets.find(old["assetId"])
    assert record is not None
    entered, opened = threading.Event(), threading.Event()
    real_delete = nvcf.store.delete

    def slow_delete(key: str) -> None:
        entered.set()
        assert opened.wait(10), "the test never opened the gate"
        real_delete(key)

    nvcf.store.delete = slow_delete  # type: ignore[method-assign]
    nvcf.clock.advance(24 * 3600 + 1)  # the old asset expires
    swept: list[int] = []
    sweeper = threading.Thread(target=lambda: swept.append(nvcf.assets.sweep()))
    sweeper.start()
    try:
        assert entered.wait(10)
        fresh = _create(nvcf)  # while the old bytes are being deleted
        listed = requests.get(
            "https://api.nvcf.nvidia.com/v2/nvcf/assets", headers=nvcf.headers, timeout=5
        )
        assert listed.status_code == 200 and listed.json()["assets"] == []
        assert fresh["assetId"]
    finally:
        opened.set()
        sweeper.join(10)
    assert swept == [1]
    assert nvcf.store.size(record.key) is None
    assert nvcf.assets.used_bytes == 0
