"""--state-dir: what was stored survives a restart (clean stop, SIGTERM, kill -9 mid-upload)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import requests

from nvcf_emulator import Emulator

EXE = str(Path(sys.executable).with_name("nvcf-emulate"))
HEADERS = {"Authorization": "Bearer nvapi-persist"}


def _start(state: Path, port: int = 0) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [EXE, "--port", str(port), "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+)", line)
    assert match, line
    return proc, match.group(1)


def _upload(url: str, data: bytes) -> dict[str, str]:
    asset = requests.post(
        f"{url}/v2/nvcf/assets",
        headers=HEADERS,
        json={"contentType": "application/octet-stream", "description": "d"},
    ).json()
    r = requests.put(
        asset["uploadUrl"],
        data=data,
        headers={
            "Content-Type": "application/octet-stream",
            "x-amz-meta-nvcf-asset-description": "d",
        },
    )
    assert r.status_code == 200
    return dict(asset)


def test_restart_keeps_completed_assets_and_drops_interrupted_ones(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, url = _start(state)
    port = int(url.rsplit(":", 1)[1])
    try:
        blobs = {os.urandom(8).hex(): os.urandom(200_000) for _ in range(3)}
        done = {
            _upload(url, data)["assetId"]: hashlib.sha256(data).hexdigest()
            for data in blobs.values()
        }
        requests.post(f"{url}/_emulator/clock", json={"advance": 3000})
        # An upload cut off by kill -9: headers and part of the body, then the process dies.
        pending = requests.post(
            f"{url}/v2/nvcf/assets",
            headers=HEADERS,
            json={"contentType": "application/octet-stream", "description": "d"},
        ).json()
        target = urlsplit(pending["uploadUrl"])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            (
                f"PUT {target.path}?{target.query} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                "Content-Type: application/octet-stream\r\n"
                "x-amz-meta-nvcf-asset-description: d\r\nContent-Length: 10000000\r\n\r\n"
            ).encode()
            + b"x" * 500_000
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc, url = _start(state, port)
    try:
        listed = requests.get(f"{url}/v2/nvcf/assets", headers=HEADERS).json()["assets"]
        assert {a["assetId"] for a in listed} == set(done)
        for asset_id, digest in done.items():
            path = state / "storage" / "objects" / "nvcf-emulator-nca" / asset_id
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
        r = requests.get(f"{url}/v2/nvcf/assets/{pending['assetId']}", headers=HEADERS)
        assert r.status_code == 404
        assert list((state / "storage" / "tmp").iterdir()) == []
        # The clock offset survived too, and so did the URL-signing secret.
        assert requests.get(f"{url}/_emulator/clock").json()["offsetSeconds"] > 2999
        r = requests.put(
            pending["uploadUrl"],
            data=b"now complete",
            headers={
                "Content-Type": "application/octet-stream",
                "x-amz-meta-nvcf-asset-description": "d",
            },
        )
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        proc, url = _start(state, port)
        r = requests.get(f"{url}/v2/nvcf/assets/{pending['assetId']}", headers=HEADERS)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_expired_assets_are_swept_at_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    emu = Emulator(state_dir=state)
    with emu:
        account = emu.accounts.authenticate(f"Bearer {emu.api_key}")
        asset = emu.assets.create(account, "a/b", "d")
        emu.assets.upload(asset.nca_id, asset.asset_id, io.BytesIO(b"z"), 1)
        path = emu.asset_path(asset.asset_id)
        assert path is not None and path.exists()
        emu.clock.advance(25 * 3600)  # persisted: the next start sees the asset as expired
    again = Emulator(state_dir=state)
    try:
        assert again.stored_assets() == []
        assert not path.exists()
    finally:
        again.close()


def test_without_state_dir_nothing_survives(tmp_path: Path) -> None:
    emu = Emulator()
    root = emu.root
    with emu:
        assert root.exists()
    assert not root.exists()
