"""Many clients at once: 16 threads x 50 rounds of create → upload → invoke → delete, with
every byte checked end to end, in-process and against a live server; and nothing leaks."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_concurrent_rounds_in_process() -> None:
    with Emulator() as emu:
        _hammer(emu.base_url, emu)


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
    assert _fds() <= fds_before
