"""The seed flow against ``nvcf-emulate --function ...`` in a subprocess, driven with curl.

The module also holds the containers the subprocess serves (``tests.test_pexec_cli:sums_app``).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from flask import Flask, request

ROOT = Path(__file__).resolve().parent.parent
CURL = shutil.which("curl") or "/usr/bin/curl"
KEY = "nvapi-cli-test"

pytestmark = pytest.mark.skipif(not Path(CURL).exists(), reason="curl is not installed")


# -- the containers the subprocess serves ----------------------------------------------------------

sums_app = Flask("sums")


@sums_app.get("/v2/health/ready")
def _ready() -> str:
    return "ok"


@sums_app.post("/infer")
def _sums() -> dict[str, object]:
    asset_dir = Path(request.headers["NVCF-ASSET-DIR"])
    ids = request.headers.get("NVCF-FUNCTION-ASSET-IDS", "").split(",")
    return {
        "sha256": {i: hashlib.sha256((asset_dir / i).read_bytes()).hexdigest() for i in ids if i},
        "assetDir": str(asset_dir),
    }


slow_app = Flask("slow")
slow_app.add_url_rule("/v2/health/ready", "ready", _ready)


@slow_app.post("/infer")
def _slow() -> dict[str, str]:
    """Answers once the test creates the file named by NVCF_TEST_GATE (at most 10 s)."""
    gate = Path(os.environ["NVCF_TEST_GATE"])
    deadline = time.monotonic() + 10
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"slow": "done"}


# -- the subprocess ------------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    functions: dict[str, str]
    root: Path
    gate: Path
    lines: list[str] = field(default_factory=list)


def _read_until_listening(lines: queue.Queue[str | None], timeout: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if "listening on" in line:
            return seen
    raise AssertionError(f"nvcf-emulate did not start: {seen}")


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "root"
    gate = tmp_path / "gate"
    env = {
        **os.environ,
        "NVCF_TEST_GATE": str(gate),
        "PYTHONPATH": str(ROOT),
        "NO_PROXY": "*",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nvcf_emulator.cli",
            "--port",
            "0",
            "--root-dir",
            str(root),
            "--api-key",
            f"{KEY}=nca-cli",
            "--inference-url",
            "/infer",
            "--function",
            "sums=tests.test_pexec_cli:sums_app",
            "--function",
            "slow=tests.test_pexec_cli:slow_app",
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    out: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True)
    reader.start()
    try:
        lines = _read_until_listening(out, 20)
        url = lines[-1].rsplit(" ", 1)[1]
        functions = {}
        for line in lines:
            m = re.match(r"nvcf-emulate function (\S+) functionId=(\S+) versionId=(\S+)", line)
            if m:
                functions[m.group(1)] = m.group(2)
        yield Served(url, functions, root, gate, lines)
    finally:
        gate.touch()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        reader.join(5)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def curl(tmp: Path, *args: str) -> Reply:
    head, body = tmp / "curl-head", tmp / "curl-body"
    out = subprocess.run(
        [
            CURL,
            "-sS",
            "--noproxy",
            "*",
            "-D",
            str(head),
            "-o",
            str(body),
            "-w",
            "%{http_code}",
            *list(args),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    headers = {}
    for line in head.read_text().splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Reply(int(out.stdout), headers, body.read_bytes())


def test_seed_flow_with_curl(served: Served, tmp_path: Path) -> None:
    assert set(served.functions) == {"sums", "slow"}
    auth = f"Authorization: Bearer {KEY}"
    ids, data = [], [b"first asset", b"second asset" * 100]
    for i, content in enumerate(data):
        created = curl(
            tmp_path,
            "-X",
            "POST",
            f"{served.url}/v2/nvcf/assets",
            "-H",
            auth,
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps({"contentType": "image/png", "description": f"photo-{i}"}),
        )
        assert created.status == 200, created.body
        asset = created.json()
        assert isinstance(asset, dict)
        file = tmp_path / f"asset-{i}.png"
        file.write_bytes(content)
        put = curl(
            tmp_path,
            "-X",
            "PUT",
            "-T",
            str(file),
            asset["uploadUrl"],
            "-H",
            "Content-Type: image/png",
            "-H",
            f"x-amz-meta-nvcf-asset-description: photo-{i}",
        )
        assert put.status == 200, put.body
        ids.append(asset["assetId"])

    r = curl(
        tmp_path,
        "-X",
        "POST",
        f"{served.url}/v2/nvcf/pexec/functions/{served.functions['sums']}",
        "-H",
        auth,
        "-H",
        "Content-Type: application/json",
        "-H",
        f"NVCF-INPUT-ASSET-REFERENCES: {ids[0]}, {ids[1]}",
        "-d",
        "{}",
    )
    assert r.status == 200, r.body
    assert r.headers["nvcf-status"] == "fulfilled"
    body = r.json()
    assert isinstance(body, dict)
    assert body["sha256"] == {
        i: hashlib.sha256(d).hexdigest() for i, d in zip(ids, data, strict=True)
    }
    staged = Path(body["assetDir"])
    assert staged.parent.name == "inputAssets"  # small assets: in RAM (ram_staging_bytes)
    assert not staged.exists()

    # a slow container: 202 first, then the status poll returns the result
    r = curl(
        tmp_path,
        "-X",
        "POST",
        f"{served.url}/v2/nvcf/pexec/functions/{served.functions['slow']}",
        "-H",
        auth,
        "-H",
        "NVCF-POLL-SECONDS: 1",
        "-d",
        "{}",
    )
    assert r.status == 202
    assert r.headers["nvcf-status"] == "in-progress"
    req_id = r.headers["nvcf-reqid"]
    served.gate.touch()
    done = curl(tmp_path, f"{served.url}/v2/nvcf/pexec/status/{req_id}", "-H", auth)
    assert done.status == 200
    assert done.json() == {"slow": "done"}
    again = curl(tmp_path, f"{served.url}/v2/nvcf/pexec/status/{req_id}", "-H", auth)
    assert again.status == 404

    # clients look functions up by name
    listed = curl(tmp_path, f"{served.url}/v2/nvcf/functions", "-H", auth).json()
    assert isinstance(listed, dict)
    by_name = {f["name"]: (f["id"], f["status"]) for f in listed["functions"]}
    assert by_name == {
        "sums": (served.functions["sums"], "ACTIVE"),
        "slow": (served.functions["slow"], "ACTIVE"),
    }


def test_bad_function_target_fails_at_start_up(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nvcf_emulator.cli",
            "--port",
            "0",
            "--root-dir",
            str(tmp_path),
            "--function",
            "nope=tests.test_pexec_cli:sums_app",
            "--health-uri",
            "/missing",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "GET /missing answered 404" in out.stderr
