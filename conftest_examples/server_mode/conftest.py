"""Copy into your tests/ when the client under test is not Python (a CLI, a Go or Node program).

``nvcf_emulate`` starts ``nvcf-emulate --port 0`` once per session with your container as a
function, waits for its ``listening on`` line, and exports the URL as ``NVCF_URL`` (and the key
as ``NGC_API_KEY``) for the programs your tests start. It is stopped with SIGTERM at the end.
Alternatively, the plugin's ``nvcf_server`` fixture is a socket server in the test process
(see ``test_server_mode.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent  # container.py is imported from here
API_KEY = "nvapi-ci-key"
CURL = shutil.which("curl")


@dataclass
class Served:
    url: str
    functions: dict[str, str]  # name -> functionId


@pytest.fixture(scope="session")
def nvcf_emulate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    command = [
        sys.executable,
        "-m",
        "nvcf_emulator.cli",  # the nvcf-emulate command
        "--port",
        "0",
        "--root-dir",
        str(tmp_path_factory.mktemp("nvcf-emulate")),
        "--api-key",
        f"{API_KEY}=nca-ci",
        "--function",
        "asset-reader=container:app",  # module:attribute, from the working directory
        "--inference-url",
        "/infer",
        "--log-level",
        "WARNING",
    ]
    proc = subprocess.Popen(
        command, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    saved = {name: os.environ.get(name) for name in ("NVCF_URL", "NGC_API_KEY")}
    try:
        functions: dict[str, str] = {}
        lines: list[str] = []
        for line in proc.stdout:  # until "nvcf-emulate listening on http://127.0.0.1:PORT"
            lines.append(line)
            if m := re.match(r"nvcf-emulate function (\S+) functionId=(\S+)", line):
                functions[m.group(1)] = m.group(2)
            if "listening on" in line:
                break
        else:
            raise RuntimeError(f"nvcf-emulate did not start: {''.join(lines)}")
        url = lines[-1].split("listening on", 1)[1].strip()
        os.environ["NVCF_URL"] = url
        os.environ["NGC_API_KEY"] = API_KEY
        yield Served(url, functions)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
