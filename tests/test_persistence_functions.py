"""--state-dir keeps functions and unfetched request results across restarts.

Subprocess restarts (SIGTERM and ``kill -9``) of ``nvcf-emulate --state-dir`` on one port, and
in-process emulators opened twice on one state dir. The module also holds the containers the
subprocess serves (``tests.test_persistence_functions:echo_app`` and ``:gated_app``).
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import requests
from flask import Flask, request

from nvcf_emulator import Emulator
from nvcf_emulator.domain.invocations import RESULT_KIND

ROOT = Path(__file__).resolve().parent.parent
KEY = "nvapi-persist-fn"
HEADERS = {"Authorization": f"Bearer {KEY}"}
API_BODY = {
    "name": "api-made",
    "inferenceUrl": "/infer",
    "healthUri": "/health",
    "containerImage": "example/img:1",
    "description": "made over the API",
    "tags": ["a", "b"],
}


# -- the containers the subprocess serves ----------------------------------------------------------

echo_app = Flask("echo")


@echo_app.get("/health")
def _health() -> str:
    return "ok"


@echo_app.post("/infer")
def _echo() -> dict[str, Any]:
    return {"echo": request.get_json(), "fn": request.headers["NVCF-FUNCTION-ID"]}


gated_app = Flask("gated")
gated_app.add_url_rule("/health", "health", _health)


@gated_app.post("/infer")
def _gated() -> Any:
    """Waits for the file named in the body's ``gate`` (at most 20 s); ``large`` writes a file
    to the large-output dir, so the result is a zip behind a 302."""
    body = request.get_json()
    gate = Path(body["gate"])
    deadline = time.monotonic() + 20
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    if body.get("large"):
        out = Path(request.headers["NVCF-LARGE-OUTPUT-DIR"])
        (out / "big.bin").write_bytes(b"L" * 1000)
    return {"gated": body["n"]}


# -- the subprocess ------------------------------------------------------------------------------


@dataclass
class Proc:
    proc: subprocess.Popen[str]
    url: str
    ids: dict[str, tuple[str, str]]  # --function name -> (function id, version id)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _start(state: Path, port: int = 0, functions: tuple[str, ...] = ("echo", "gated")) -> Proc:
    args = [sys.executable, "-m", "nvcf_emulator.cli", "--port", str(port)]
    args += ["--state-dir", str(state), "--api-key", f"{KEY}=nca-persist"]
    args += ["--inference-url", "/infer", "--health-uri", "/health", "--log-level", "WARNING"]
    for name in functions:
        args += ["--function", f"{name}=tests.test_persistence_functions:{name}_app"]
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "*"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    ids: dict[str, tuple[str, str]] = {}
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        m = re.match(r"nvcf-emulate function (\S+) functionId=(\S+) versionId=(\S+)", line)
        if m:
            ids[m.group(1)] = (m.group(2), m.group(3))
        if "listening on" in line:
            return Proc(proc, line.rsplit(" ", 1)[1], ids)
    proc.kill()
    proc.wait()
    raise AssertionError(f"nvcf-emulate did not start: {seen}")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"
    (tmp_path / "gate").touch()  # lets a gated container still running finish


def _invoke(url: str, fid: str, body: dict[str, Any], poll: int = 5) -> requests.Response:
    return requests.post(
        f"{url}/v2/nvcf/pexec/functions/{fid}",
        headers={**HEADERS, "NVCF-POLL-SECONDS": str(poll)},
        json=body,
        allow_redirects=False,
    )


def _status(url: str, req_id: str) -> requests.Response:
    return requests.get(
        f"{url}/v2/nvcf/pexec/status/{req_id}",
        headers={**HEADERS, "NVCF-POLL-SECONDS": "1"},
        allow_redirects=False,
    )


def _wait_settled(url: str, req_ids: set[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        records = requests.get(f"{url}/_emulator/invocations").json()["invocations"]
        done = {r["requestId"] for r in records if r["status"] in ("fulfilled", "errored")}
        if req_ids <= done:
            return
        time.sleep(0.02)
    raise AssertionError(f"requests {req_ids} did not finish")


def _functions(url: str) -> dict[tuple[str, str], dict[str, Any]]:
    r = requests.get(f"{url}/v2/nvcf/functions", headers=HEADERS)
    assert r.status_code == 200
    return {(f["id"], f["versionId"]): f for f in r.json()["functions"]}


# -- subprocess restarts ---------------------------------------------------------------------------


def test_function_ids_are_stable_across_sigterm_and_kill9(state: Path) -> None:
    first = _start(state)
    port = int(first.url.rsplit(":", 1)[1])
    try:
        echo_fid, echo_vid = first.ids["echo"]
        r = requests.post(f"{first.url}/v2/nvcf/functions", headers=HEADERS, json=API_BODY)
        assert r.status_code == 200
        made = r.json()["function"]
        assert _invoke(first.url, echo_fid, {"x": 1}).json()["echo"] == {"x": 1}
    finally:
        assert first.stop(signal.SIGTERM) == 0

    second = _start(state, port)
    try:
        assert second.ids == first.ids
        listed = _functions(second.url)
        assert listed[(echo_fid, echo_vid)]["status"] == "ACTIVE"
        again = listed[(made["id"], made["versionId"])]
        assert again["status"] == "INACTIVE"
        for key in ("name", "createdAt", "description", "tags", "containerImage", "inferenceUrl"):
            assert again[key] == made[key]
        r = _invoke(second.url, echo_fid, {"x": 2})
        assert r.status_code == 200 and r.json() == {"echo": {"x": 2}, "fn": echo_fid}
    finally:
        second.stop(signal.SIGKILL)

    third = _start(state, port)
    try:
        assert third.ids == first.ids
        assert (made["id"], made["versionId"]) in _functions(third.url)
        assert _invoke(third.url, echo_fid, {"x": 3}).json()["echo"] == {"x": 3}
    finally:
        assert third.stop() == 0


def test_a_function_whose_container_is_not_given_again_is_error_with_a_reason(
    state: Path,
) -> None:
    first = _start(state)
    port = int(first.url.rsplit(":", 1)[1])
    first.stop()
    echo_fid, echo_vid = first.ids["echo"]

    bare = _start(state, port, functions=("gated",))
    try:
        listed = _functions(bare.url)
        assert listed[(echo_fid, echo_vid)]["status"] == "ERROR"
        assert listed[(echo_fid, echo_vid)]["name"] == "echo"
        r = requests.get(
            f"{bare.url}/v2/nvcf/deployments/functions/{echo_fid}/versions/{echo_vid}",
            headers=HEADERS,
        )
        info = r.json()["deployment"]["healthInfo"][0]["error"]
        assert "--function echo=" in info
        r = _invoke(bare.url, echo_fid, {"x": 1})
        assert r.status_code == 404
        assert bare.ids["gated"] == first.ids["gated"]
    finally:
        bare.stop()

    # The record kept its saved status: given again, the function runs with the same ids.
    back = _start(state, port)
    try:
        assert back.ids == first.ids
        assert _functions(back.url)[(echo_fid, echo_vid)]["status"] == "ACTIVE"
    finally:
        back.stop()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_a_finished_unfetched_result_is_delivered_once_after_a_restart(
    state: Path, tmp_path: Path, how: int
) -> None:
    gate = tmp_path / "gate"
    first = _start(state)
    port = int(first.url.rsplit(":", 1)[1])
    try:
        gated = first.ids["gated"][0]
        small = _invoke(first.url, gated, {"gate": str(gate), "n": 1}, poll=1)
        large = _invoke(first.url, gated, {"gate": str(gate), "n": 2, "large": True}, poll=1)
        assert small.status_code == large.status_code == 202
        ids = {small.headers["NVCF-REQID"], large.headers["NVCF-REQID"]}
        gate.touch()
        _wait_settled(first.url, ids)
    finally:
        first.stop(how)

    second = _start(state, port)
    try:
        r = _status(second.url, small.headers["NVCF-REQID"])
        assert r.status_code == 200
        assert r.json() == {"gated": 1}
        assert r.headers["NVCF-STATUS"] == "fulfilled"
        assert r.headers["Content-Type"] == "application/json"
        r = _status(second.url, large.headers["NVCF-REQID"])
        assert r.status_code == 302
        zipped = requests.get(r.headers["Location"])
        assert zipped.status_code == 200
        with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
            assert zf.read("big.bin") == b"L" * 1000
            name = f"{large.headers['NVCF-REQID']}.response"
            assert json.loads(zf.read(name)) == {"gated": 2}
        for req_id in ids:
            assert _status(second.url, req_id).status_code == 404
        # The large result's download URL stays valid (its own TTL), across a restart too.
        location = r.headers["Location"]
    finally:
        assert second.stop() == 0
    assert not list((state / "results").glob("*.body"))

    third = _start(state, port)
    try:
        assert requests.get(location).status_code == 200
        for req_id in ids:
            assert _status(third.url, req_id).status_code == 404
    finally:
        third.stop()


def test_an_in_flight_request_is_404_after_kill9(state: Path, tmp_path: Path) -> None:
    first = _start(state)
    port = int(first.url.rsplit(":", 1)[1])
    try:
        r = _invoke(first.url, first.ids["gated"][0], {"gate": str(tmp_path / "gate"), "n": 1}, 1)
        assert r.status_code == 202
        req_id = r.headers["NVCF-REQID"]
    finally:
        first.stop(signal.SIGKILL)

    second = _start(state, port)
    try:
        r = _status(second.url, req_id)
        assert r.status_code == 404
        assert r.json()["detail"] == f"Request id '{req_id}' not found"
        assert not (state / "results").exists() or not list((state / "results").iterdir())
    finally:
        second.stop()


def test_sigterm_lets_a_running_request_finish_and_keeps_its_result(
    state: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    first = _start(state)
    port = int(first.url.rsplit(":", 1)[1])
    try:
        r = _invoke(first.url, first.ids["gated"][0], {"gate": str(gate), "n": 7}, 1)
        assert r.status_code == 202
        req_id = r.headers["NVCF-REQID"]
        opener = threading.Timer(0.5, gate.touch)
        opener.start()
    finally:
        assert first.stop(signal.SIGTERM) == 0
        opener.join()

    second = _start(state, port)
    try:
        r = _status(second.url, req_id)
        assert r.status_code == 200 and r.json() == {"gated": 7}
    finally:
        second.stop()


# -- in-process, one state dir opened twice -----------------------------------------------------


def _echo_app() -> Flask:
    app = Flask("echo-inprocess")
    app.add_url_rule("/health", "health", _health)
    app.add_url_rule("/infer", "infer", _echo, methods=["POST"])
    return app


def test_inprocess_functions_reattach_by_name_and_by_image(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        emu.register_image("example/img:1", _echo_app())
        first = emu.add_function(
            _echo_app(), name="echo", inference_url="/infer", health_uri="/health"
        )
        twin = emu.add_function(
            _echo_app(), name="echo", inference_url="/infer", health_uri="/health"
        )
        v2 = emu.add_function(
            _echo_app(),
            name="echo",
            function_id=first.function_id,
            inference_url="/infer",
            health_uri="/health",
        )
        pinned = emu.add_function(_echo_app(), name="pinned", health_uri="/health")
        emu.set_function_status(*pinned, "DEGRADED")
        gone = emu.add_function(_echo_app(), name="gone", health_uri="/health")
        account = emu.accounts.authenticate(f"Bearer {emu.api_key}")
        emu.functions.delete(account, *gone)
        made = emu.functions.create(account, API_BODY)
        emu.functions.deploy(
            account,
            made.function_id,
            made.version_id,
            {
                "deploymentSpecifications": [
                    {"gpu": "L40", "instanceType": "x", "minInstances": 1, "maxInstances": 1}
                ]
            },
        )
        assert emu.function(made.function_id, made.version_id).status == "ACTIVE"

    with Emulator(state_dir=state) as emu:
        statuses = {(v.function_id, v.version_id): v.status for v in emu.functions.all()}
        assert tuple(gone) not in statuses
        assert statuses[tuple(first)] == statuses[(made.function_id, made.version_id)] == "ERROR"
        assert statuses[tuple(pinned)] == "ERROR"
        reason = emu.function(made.function_id, made.version_id).deployment_dto()["healthInfo"][0][
            "error"
        ]
        assert "register_image('example/img:1'" in reason
        # Same calls, same order: same ids.
        again = emu.add_function(
            _echo_app(), name="echo", inference_url="/infer", health_uri="/health"
        )
        assert tuple(again) == tuple(first)
        assert tuple(emu.add_function(_echo_app(), name="echo", health_uri="/health")) == tuple(
            twin
        )
        assert tuple(
            emu.add_function(
                _echo_app(), name="echo", function_id=first.function_id, health_uri="/health"
            )
        ) == tuple(v2)
        assert emu.function(*first).status == "ACTIVE"
        assert emu.add_function(_echo_app(), name="pinned", health_uri="/health").version_id == (
            pinned.version_id
        )
        assert emu.function(*pinned).status == "DEGRADED"  # forced statuses stay forced
        emu.register_image("example/img:1", _echo_app())
        assert emu.function(made.function_id, made.version_id).status == "ACTIVE"
        assert emu.function(made.function_id, made.version_id).extra["tags"] == ["a", "b"]
        r = requests.post(
            f"{emu.base_url}/v2/nvcf/pexec/functions/{made.function_id}",
            headers=emu.headers,
            json={"hi": 1},
        )
        assert r.status_code == 200 and r.json() == {"echo": {"hi": 1}, "fn": made.function_id}
        # A new name is a new function.
        assert emu.add_function(_echo_app(), name="echo", health_uri="/health").function_id not in {
            first.function_id,
            twin.function_id,
        }


def test_inprocess_unfetched_result_survives_and_ttl_runs_on_the_clock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    req_ids = []
    with Emulator(state_dir=state, always_async=True) as emu:
        fid, _ = emu.add_function(
            _echo_app(), name="echo", inference_url="/infer", health_uri="/health"
        )
        for n in range(2):
            r = requests.post(
                f"{emu.base_url}/v2/nvcf/pexec/functions/{fid}", headers=emu.headers, json={"n": n}
            )
            assert r.status_code == 202
            req_ids.append(r.headers["NVCF-REQID"])
        deadline = time.monotonic() + 10
        while not all(inv.done for inv in emu.invocations) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all(inv.done for inv in emu.invocations)
    assert len(list((state / "results").glob("*.body"))) == 2

    with Emulator(state_dir=state) as emu:
        emu.add_function(_echo_app(), name="echo", inference_url="/infer", health_uri="/health")
        r = requests.get(f"{emu.base_url}/v2/nvcf/pexec/status/{req_ids[0]}", headers=emu.headers)
        assert r.status_code == 200 and r.json()["echo"] == {"n": 0}
        r = requests.get(f"{emu.base_url}/v2/nvcf/pexec/status/{req_ids[0]}", headers=emu.headers)
        assert r.status_code == 404
        assert [rid for rid, _ in emu.state.load(RESULT_KIND)] == [req_ids[1]]
        emu.clock.advance(2 * 3600)  # past request_ttl: the other one expires (clock is saved)

    with Emulator(state_dir=state) as emu:
        assert list(emu.state.load(RESULT_KIND)) == []
        assert not list((state / "results").iterdir())
        r = requests.get(f"{emu.base_url}/v2/nvcf/pexec/status/{req_ids[1]}", headers=emu.headers)
        assert r.status_code == 404


def test_inprocess_reset_forgets_saved_functions_and_results(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state, always_async=True) as emu:
        fid, _ = emu.add_function(
            _echo_app(), name="echo", inference_url="/infer", health_uri="/health"
        )
        r = requests.post(
            f"{emu.base_url}/v2/nvcf/pexec/functions/{fid}", headers=emu.headers, json={}
        )
        assert r.status_code == 202
        deadline = time.monotonic() + 10
        while not emu.invocations[-1].done and time.monotonic() < deadline:
            time.sleep(0.01)
        emu.reset()
    with Emulator(state_dir=state) as emu:
        assert emu.functions.all() == []
        assert emu.invocations == []
        assert not list((state / "results").iterdir())
        # A new function, new ids (nothing left to re-attach to).
        assert emu.add_function(_echo_app(), name="echo", health_uri="/health").function_id != fid


def test_inprocess_undeployed_and_api_changes_are_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        account = emu.accounts.authenticate(f"Bearer {emu.api_key}")
        made = emu.functions.create(account, API_BODY)
        emu.functions.update_tags(account, made.function_id, made.version_id, {"tags": ["z"]})
        added = emu.add_function(_echo_app(), name="echo", health_uri="/health", tags=["t"])
        emu.functions.undeploy(account, *added)
    with Emulator(state_dir=state) as emu:
        assert emu.function(made.function_id, made.version_id).extra["tags"] == ["z"]
        assert emu.function(*added).status == "INACTIVE"
        assert emu.function(*added).deployment is None


def test_inprocess_files_without_a_record_are_removed_at_start(tmp_path: Path) -> None:
    """A crash between writing a body (or zip) and its record leaves a file nobody names."""
    state = tmp_path / "state"
    Emulator(state_dir=state).close()
    results = state / "results"
    results.mkdir()
    for name in ("0f.body", "0f.zip", ".0f.body.123.tmp"):
        (results / name).write_bytes(b"x")
    with Emulator(state_dir=state):
        assert list(results.iterdir()) == []
