"""``nvcf-emulate`` as users run it: a subprocess on a real port, driven with curl."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from nvcf_emulator import Emulator

EXE = str(Path(sys.executable).with_name("nvcf-emulate"))


class Server:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [EXE, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.fullmatch(r"nvcf-emulate listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, (line, self.proc.stderr.read() if self.proc.stderr else "")
        self.url = match.group(1)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=10)
        return self.proc.returncode, out


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        srv.stop()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=30
    )


def _split(result: subprocess.CompletedProcess[str]) -> tuple[str, int]:
    body, _, code = result.stdout.rpartition("\n")
    return body, int(code)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_seed_curl_walkthrough(server: Server, tmp_path: Path) -> None:
    token = "nvapi-walkthrough"
    body, code = _split(
        curl(
            "-X",
            "POST",
            f"{server.url}/v2/nvcf/assets",
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "accept: application/json",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"contentType": "image/png", "description": "red-cat-photo"}',
        )
    )
    assert code == 200
    asset = json.loads(body)
    assert asset["uploadUrl"].startswith(f"{server.url}/nvcf-assets/")

    image = tmp_path / "my-image-file.png"
    image.write_bytes(os.urandom(3 * 1024 * 1024))  # big enough for curl's Expect: 100-continue
    body, code = _split(
        curl(
            "-X",
            "PUT",
            "-T",
            str(image),
            asset["uploadUrl"],
            "-H",
            "Content-Type: image/png",
            "-H",
            "x-amz-meta-nvcf-asset-description: red-cat-photo",
        )
    )
    assert (code, body) == (200, "")

    body, code = _split(
        curl("-X", "GET", f"{server.url}/v2/nvcf/assets", "-H", f"Authorization: Bearer {token}")
    )
    assert code == 200
    assert json.loads(body)["assets"][0]["assetId"] == asset["assetId"]

    aid = asset["assetId"]
    body, code = _split(
        curl(
            "-X",
            "DELETE",
            f"{server.url}/v2/nvcf/assets/{aid}",
            "-H",
            f"Authorization: Bearer {token}",
        )
    )
    assert (code, body) == (204, "")
    body, code = _split(
        curl("-X", "GET", f"{server.url}/v2/nvcf/assets", "-H", f"Authorization: Bearer {token}")
    )
    assert json.loads(body) == {"assets": []}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_upload_with_wrong_content_type_gets_400(server: Server, tmp_path: Path) -> None:
    r = requests.post(
        f"{server.url}/v2/nvcf/assets",
        headers={"Authorization": "Bearer nvapi-x"},
        json={"contentType": "image/png", "description": "red-cat-photo"},
    )
    f = tmp_path / "x.jpg"
    f.write_bytes(b"jpeg")
    body, code = _split(
        curl(
            "-T",
            str(f),
            r.json()["uploadUrl"],
            "-H",
            "Content-Type: image/jpeg",
            "-H",
            "x-amz-meta-nvcf-asset-description: red-cat-photo",
        )
    )
    assert code == 400
    assert "image/jpeg" in body and "image/png" in body


def test_sigterm_and_sigint_stop_cleanly() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        srv = Server()
        assert requests.get(f"{srv.url}/_emulator/health").json() == {"status": "ok"}
        code, out = srv.stop(sig)
        assert code == 0
        assert "nvcf-emulate stopped" in out


def test_help_documents_every_flag() -> None:
    out = subprocess.run([EXE, "--help"], capture_output=True, text=True, check=True).stdout
    for flag in (
        "--host",
        "--port",
        "--public-url",
        "--api-key",
        "--upload-url-ttl",
        "--asset-ttl",
        "--max-asset-bytes",
        "--header-mismatch-status",
        "--log-level",
        "--root-dir",
        "--max-connections",
        "--idle-timeout",
        "--version",
    ):
        assert flag in out
    assert "NVCF_EMULATOR_" in out


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--max-connections", "0"], "--max-connections must be at least 1, got 0"),
        (["--idle-timeout", "0"], "--idle-timeout must be above 0 and at most 86400 seconds"),
    ],
)
def test_server_limits_are_checked(flag: list[str], message: str) -> None:
    result = subprocess.run([EXE, "--port", "0", *flag], capture_output=True, text=True, timeout=10)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_silent_connection_is_closed_after_the_idle_timeout() -> None:
    import socket

    server = Server("--idle-timeout", "0.2")
    try:
        host, port = server.url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            assert sock.recv(1) == b""  # closed by the server, long before the client's 5 s
    finally:
        server.stop()


def test_port_in_use_is_a_clear_error(server: Server) -> None:
    port = server.url.rsplit(":", 1)[1]
    result = subprocess.run([EXE, "--port", port], capture_output=True, text=True, timeout=10)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Address already in use" in result.stderr


def test_flags_from_environment(tmp_path: Path) -> None:
    env = {**os.environ, "NVCF_EMULATOR_MAX_ASSET_BYTES": "4"}
    proc = subprocess.Popen([EXE, "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        asset = requests.post(
            f"{url}/v2/nvcf/assets",
            headers={"Authorization": "Bearer nvapi-x"},
            json={"contentType": "a/b", "description": "d"},
        ).json()
        r = requests.put(
            asset["uploadUrl"],
            data=b"12345",
            headers={"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"},
        )
        assert r.status_code == 400
        assert "<MaxSizeAllowed>4</MaxSizeAllowed>" in r.text
    finally:
        proc.terminate()
        proc.wait(10)


def test_server_stop_is_fast_and_joins_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() wakes the accept loop instead of waiting for its next poll. The poll is made 5 s
    (werkzeug's default is 0.5 s) so that a stop which waits for it is seconds away from the
    bound, and a loaded machine has seconds of slack."""
    import threading

    from werkzeug.serving import BaseWSGIServer

    serve_forever = BaseWSGIServer.serve_forever
    monkeypatch.setattr(
        BaseWSGIServer, "serve_forever", lambda self, poll_interval=5.0: serve_forever(self, 5.0)
    )
    emu = Emulator()
    before = set(threading.enumerate())
    server = emu.serve()
    with requests.Session() as s:  # leave a keep-alive connection open
        assert s.get(f"{server.url}/_emulator/health").status_code == 200
        t0 = time.perf_counter()
        server.stop()
        elapsed = time.perf_counter() - t0
    emu.close()
    assert set(threading.enumerate()) <= before
    assert elapsed < 2.5  # waiting for the accept loop's next poll would take 5 s


def test_stop_lets_an_upload_in_flight_finish() -> None:
    import threading

    from .conftest import Api

    emu = Emulator()
    server = emu.serve()
    try:
        api = Api("server", server.url, emu)
        asset = api.create_asset()
        go = threading.Event()

        def body() -> Iterator[bytes]:
            yield b"first half, "
            assert go.wait(10)
            yield b"second half"

        result: dict[str, requests.Response] = {}
        uploader = threading.Thread(target=lambda: result.update(r=api.upload(asset, body())))
        uploader.start()
        # The upload is in the app once its temp file exists (the body is then half sent).
        deadline = time.monotonic() + 10
        while not list(emu.store.tmp.iterdir()):
            assert time.monotonic() < deadline
            time.sleep(0.001)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        stopper.join(0.05)
        assert stopper.is_alive()  # waiting for the upload, not cutting it off
        go.set()
        uploader.join(10)
        stopper.join(10)
        assert not stopper.is_alive()
        assert result["r"].status_code == 200
        assert emu.asset_bytes(asset["assetId"]) == b"first half, second half"
    finally:
        server.stop()
        emu.close()


def test_every_flag_has_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from nvcf_emulator.cli import build_parser

    plural = {"api_key": "API_KEYS", "function": "FUNCTIONS"}
    values = {
        "store_true": "true",
        "int": "7",
        "float": "7.5",
    }
    parser = build_parser()
    checked = 0
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        env = "NVCF_EMULATOR_" + plural.get(action.dest, action.dest.upper())
        if action.const is True:
            text = values["store_true"]
        elif action.type is int:
            text = "403" if action.choices else values["int"]
        elif action.type is float:
            text = values["float"]
        elif action.choices:
            text = list(action.choices)[-1]
        elif action.dest == "api_key":
            text = "nvapi-a=nca-a"
        elif action.dest == "function":
            text = "echo=pkg.mod:app"
        elif action.dest == "storage":
            text = "s3://bucket/prefix"
        else:
            text = "/somewhere"
        monkeypatch.setenv(env, text)
        parsed = getattr(build_parser().parse_args([]), action.dest)
        monkeypatch.delenv(env)
        default = getattr(build_parser().parse_args([]), action.dest)
        assert parsed != default, f"{action.option_strings[0]} ignores ${env}"
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("word", ["1", "true", "YES", "on"])
def test_boolean_environment_variables_read_as_the_ini_does(
    monkeypatch: pytest.MonkeyPatch, word: str
) -> None:
    """Every on/off flag takes the words EmulatorConfig.parse (the pytest ini) takes."""
    from nvcf_emulator.cli import build_parser

    for name in ("NO_ADMIN", "S3_CREATE_BUCKET", "ALWAYS_ASYNC", "KEEP_STAGED"):
        monkeypatch.setenv(f"NVCF_EMULATOR_{name}", word)
        assert getattr(build_parser().parse_args([]), name.lower()) is True
        monkeypatch.setenv(f"NVCF_EMULATOR_{name}", "off")
        assert getattr(build_parser().parse_args([]), name.lower()) is False


def test_a_boolean_environment_variable_that_is_no_word_stops_start_up() -> None:
    """``NVCF_EMULATOR_ALWAYS_ASYNC=enabled`` used to mean false without a word; now exit 2."""
    env = {**os.environ, "NVCF_EMULATOR_ALWAYS_ASYNC": "enabled"}
    result = subprocess.run(
        [EXE, "--port", "0"], capture_output=True, text=True, timeout=10, env=env
    )
    assert result.returncode == 2
    assert "NVCF_EMULATOR_ALWAYS_ASYNC='enabled' is not a valid boolean" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "listed"),
    [("UPLOAD_ETAG", "bogus", "md5, opaque"), ("HEADER_MISMATCH_STATUS", "404", "400, 403")],
)
def test_an_environment_variable_outside_its_flags_choices_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    listed: str,
) -> None:
    """argparse checks ``choices`` on the command line only; a default from the environment
    is checked here, and the message names the variable the operator set."""
    from nvcf_emulator.cli import build_parser

    monkeypatch.setenv(f"NVCF_EMULATOR_{name}", value)
    with pytest.raises(SystemExit) as stopped:
        build_parser()
    assert stopped.value.code == 2
    assert f"NVCF_EMULATOR_{name}={value!r} is not one of {listed}" in capsys.readouterr().err
