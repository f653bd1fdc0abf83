"""Non-Python clients against a real socket: curl and a shell script."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from nvcf_emulator import EmulatorServer

from .conftest import CURL, Served
from .container import app

pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")
CLIENT = Path(__file__).parent / "client.sh"


def curl(*args: str) -> str:
    assert CURL is not None
    return subprocess.run(
        [CURL, "-sS", "--noproxy", "*", "--fail-with-body", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def test_shell_client_against_nvcf_emulate(nvcf_emulate: Served, tmp_path: Path) -> None:
    data = tmp_path / "input.bin"
    data.write_bytes(b"bytes from a shell script")

    out = subprocess.run(
        ["bash", str(CLIENT), str(data)],
        env={**os.environ, "FUNCTION_ID": nvcf_emulate.functions["asset-reader"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout

    (report,) = json.loads(out).values()
    assert report == {"bytes": 25, "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}
    assert os.environ["NVCF_URL"] == nvcf_emulate.url


def test_curl_against_the_nvcf_server_fixture(nvcf_server: EmulatorServer) -> None:
    fn = nvcf_server.emulator.add_function(app, name="asset-reader", inference_url="/infer")
    auth = f"Authorization: Bearer {nvcf_server.api_key}"
    created = json.loads(
        curl(
            "-X",
            "POST",
            f"{nvcf_server.url}/v2/nvcf/assets",
            "-H",
            auth,
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"contentType": "text/plain", "description": "d"}',
        )
    )
    curl(
        "-X",
        "PUT",
        created["uploadUrl"],
        "--data-binary",
        "hello",
        "-H",
        "Content-Type: text/plain",
        "-H",
        "x-amz-meta-nvcf-asset-description: d",
    )

    answer = curl(
        "-X",
        "POST",
        f"{nvcf_server.url}/v2/nvcf/pexec/functions/{fn.function_id}",
        "-H",
        auth,
        "-H",
        f"NVCF-INPUT-ASSET-REFERENCES: {created['assetId']}",
        "-d",
        "{}",
    )

    assert json.loads(answer)[created["assetId"]]["bytes"] == 5
