"""Hostile input to the function API, the admin API, ``RemoteEmulator`` and ``nvcf-emulate``.

Each test says what a user sees.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from nvcf_emulator import Emulator, RemoteEmulator
from nvcf_emulator.worker import ContainerRequest

from .conftest import Api

EXE = str(Path(sys.executable).with_name("nvcf-emulate"))
ROOT = Path(__file__).resolve().parent.parent
SPEC = {
    "deploymentSpecifications": [
        {"gpu": "L40S", "instanceType": "gl40s_1", "minInstances": 1, "maxInstances": 1}
    ]
}
BODY = {"name": "my-fn", "inferenceUrl": "/predict", "containerImage": "img:1"}
KEYS = {"nvapi-a": "nca-a", "nvapi-b": "nca-b"}
AS_A = {"Authorization": "Bearer nvapi-a"}
AS_B = {"Authorization": "Bearer nvapi-b"}


def create(api: Api, headers: dict[str, str] | None = None, **body: Any) -> requests.Response:
    return requests.post(
        f"{api.base_url}/v2/nvcf/functions",
        headers=headers or api.headers,
        json={**BODY, **body},
        timeout=10,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``nvcf-emulate`` that is expected to stop by itself (a start-up error)."""
    return subprocess.run(
        [EXE, *args],
        capture_output=True,
        text=True,
        timeout=10,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


# -- function API -------------------------------------------------------------------------------


def test_a_name_with_a_trailing_newline_is_400(api: Api) -> None:
    """NVCF's name pattern ``^[a-zA-Z0-9][a-zA-Z0-9\\-_]*$`` is a whole-string match: 400."""
    r = create(api, name="my-fn\n")
    assert r.status_code == 400, r.text
    assert "name" in r.json()["detail"]


@pytest.mark.nvcf(api_keys=KEYS)
@pytest.mark.parametrize("how", ["shared", "public"])
def test_another_account_cannot_add_a_version_to_a_function_it_can_only_see(
    api: Api, how: str
) -> None:
    """Account b sees (and may invoke) a's shared or public function, but adding a version to
    it is a 404 like every other management call on it; nothing is created."""
    emu = api.emulator
    fn = emu.add_function(
        lambda req: {"a": True},
        name="a-fn",
        nca_id="nca-a",
        shared_with=["nca-b"] if how == "shared" else [],
        public=how == "public",
    )
    r = requests.post(
        f"{api.base_url}/v2/nvcf/functions/{fn.function_id}/versions",
        headers=AS_B,
        json={"inferenceUrl": "/p", "containerImage": "img:1"},
        timeout=10,
    )
    assert r.status_code == 404, r.text
    assert {v.nca_id for v in emu.functions.all()} == {"nca-a"}


UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.mark.nvcf(api_keys=KEYS)
def test_management_of_unknown_or_foreign_functions_is_404(api: Api) -> None:
    """Versions, deployments, metadata and deletes of an unknown or another account's
    function are 404 problem JSON, never 500."""
    mine = create(api, headers=AS_A).json()["function"]
    fid, vid = mine["id"], mine["versionId"]
    b = api.base_url
    calls: list[tuple[str, str, dict[str, str], dict[str, Any] | None]] = [
        ("POST", f"{b}/v2/nvcf/functions/{fid}/versions", AS_B, {"inferenceUrl": "/p"}),
        ("POST", f"{b}/v2/nvcf/functions/{UNKNOWN}/versions", AS_A, {"inferenceUrl": "/p"}),
        ("GET", f"{b}/v2/nvcf/functions/{fid}/versions/{vid}", AS_B, None),
        ("GET", f"{b}/v2/nvcf/functions/{fid}/versions/{UNKNOWN}", AS_A, None),
        ("DELETE", f"{b}/v2/nvcf/functions/{fid}/versions/{vid}", AS_B, None),
        ("PUT", f"{b}/v2/nvcf/metadata/functions/{fid}/versions/{vid}", AS_B, {"tags": []}),
        ("POST", f"{b}/v2/nvcf/deployments/functions/{fid}/versions/{vid}", AS_B, SPEC),
        ("GET", f"{b}/v2/nvcf/deployments/functions/{fid}/versions/{vid}", AS_A, None),
        ("DELETE", f"{b}/v2/nvcf/deployments/functions/{fid}/versions/{vid}", AS_A, None),
    ]
    for method, url, headers, body in calls:
        r = requests.request(method, url, headers=headers, json=body, timeout=10)
        assert r.status_code == 404, (method, url, r.text)
        assert r.headers["Content-Type"] == "application/problem+json"
    assert requests.get(f"{b}/v2/nvcf/functions/{fid}/versions/{vid}", headers=AS_A).ok


@pytest.mark.parametrize(
    "health",
    [{"uri": None}, {"uri": 5}, {"port": "x"}, {"protocol": "FTP"}, {"timeout": 10}],
)
def test_a_health_object_of_the_wrong_shape_is_400(api: Api, health: dict[str, Any]) -> None:
    """health is {protocol: HTTP|gRPC, uri, port, timeout (ISO-8601), expectedStatusCode}:
    anything else is a 400 problem JSON, not a function that can never become healthy."""
    r = create(api, health=health)
    assert r.status_code == 400, r.text


@pytest.mark.parametrize(
    "member",
    [
        {"description": 5},
        {"containerArgs": 5},
        {"containerEnvironment": "A=1"},
        {"containerEnvironment": [{"key": 1}]},
        {"models": "m"},
        {"resources": [5]},
    ],
)
def test_create_members_of_the_wrong_type_are_400(api: Api, member: dict[str, Any]) -> None:
    """description/containerArgs are strings, containerEnvironment [{key, value}], models and
    resources [{name, version, uri}]: a wrong type is a 400, not echoed back as stored."""
    r = create(api, **member)
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("tags", [["t"] * 65, ["x" * 129]])
def test_metadata_update_keeps_the_tag_limits(api: Api, tags: list[str]) -> None:
    """The tag limits (64 tags, 128 characters each) hold for PUT metadata as for create."""
    fn = create(api).json()["function"]
    r = requests.put(
        f"{api.base_url}/v2/nvcf/metadata/functions/{fn['id']}/versions/{fn['versionId']}",
        headers=api.headers,
        json={"tags": tags},
        timeout=10,
    )
    assert r.status_code == 400, r.text


def test_deleting_a_version_while_it_runs_finishes_that_call_and_refuses_new_ones(
    api: Api,
) -> None:
    """The running call still gets its answer; the version is gone from lists; new calls 404."""
    started, gate = threading.Event(), threading.Event()

    def slow(req: ContainerRequest) -> dict[str, bool]:
        started.set()
        gate.wait(10)
        return {"done": True}

    fn = api.emulator.add_function(slow, name="slow")
    invoke = f"{api.base_url}/v2/nvcf/pexec/functions/{fn.function_id}"
    result: dict[str, requests.Response] = {}
    caller = threading.Thread(
        target=lambda: result.update(r=requests.post(invoke, headers=api.headers, json={}))
    )
    caller.start()
    try:
        assert started.wait(10)
        gone = requests.delete(
            f"{api.base_url}/v2/nvcf/functions/{fn.function_id}/versions/{fn.version_id}",
            headers=api.headers,
        )
        assert gone.status_code == 204
    finally:
        gate.set()
        caller.join(10)
    assert (result["r"].status_code, result["r"].json()) == (200, {"done": True})
    assert requests.post(invoke, headers=api.headers, json={}).status_code == 404
    listed = requests.get(f"{api.base_url}/v2/nvcf/functions", headers=api.headers).json()
    assert listed == {"functions": []}


def test_an_add_function_version_can_be_undeployed_and_deployed_again(api: Api) -> None:
    """DELETE deployment makes it INACTIVE (404 to invoke); POST deployment brings it back."""
    fn = api.emulator.add_function(lambda req: {"v": 1}, name="again")
    url = f"{api.base_url}/v2/nvcf/deployments/functions/{fn.function_id}/versions/{fn.version_id}"
    invoke = f"{api.base_url}/v2/nvcf/pexec/functions/{fn.function_id}"
    down = requests.delete(url, headers=api.headers)
    assert (down.status_code, down.json()["function"]["status"]) == (200, "INACTIVE")
    assert requests.post(invoke, headers=api.headers, json={}).status_code == 404
    up = requests.post(url, headers=api.headers, json=SPEC)
    assert (up.status_code, up.json()["deployment"]["functionStatus"]) == (200, "ACTIVE")
    assert requests.post(invoke, headers=api.headers, json={}).json() == {"v": 1}


def test_add_function_with_a_non_json_member_does_not_break_the_listing(api: Api) -> None:
    """One bad add_function call raises at once instead of breaking the account's list."""
    api.emulator.add_function(lambda req: {}, name="fine")
    with pytest.raises((ValueError, TypeError)):
        api.emulator.add_function(lambda req: {}, name="bad", description=b"bytes")
    r = requests.get(f"{api.base_url}/v2/nvcf/functions", headers=api.headers)
    assert r.status_code == 200, r.text


def test_a_failed_add_function_leaves_no_function_behind(api: Api) -> None:
    """add_function raises when the health check fails; the function is not left DEPLOYING."""
    with pytest.raises(RuntimeError, match="health check"):
        api.emulator.add_function(Flask("no-health"), name="no-health")
    listed = requests.get(f"{api.base_url}/v2/nvcf/functions", headers=api.headers).json()
    assert [(f["name"], f["status"]) for f in listed["functions"]] == []


# -- admin API ----------------------------------------------------------------------------------


def test_clock_advance_by_a_huge_integer_is_not_a_500(api: Api) -> None:
    """{"advance": 10**400} is refused (400) or clamped like 1e300 is; never a 500."""
    r = requests.post(f"{api.base_url}/_emulator/clock", json={"advance": 10**400})
    assert r.status_code in (200, 400), r.text


def test_clock_advance_by_a_huge_float_clamps_and_nan_is_400(api: Api) -> None:
    """1e300 seconds stops at the end of year 9999; NaN / Infinity are 400 problem JSON."""
    url = f"{api.base_url}/_emulator/clock"
    r = requests.post(url, json={"advance": 1e300})
    assert r.status_code == 200
    assert r.json()["now"].startswith("9999-12-30")
    for text in ('{"advance": NaN}', '{"advance": -Infinity}'):
        r = requests.post(url, data=text, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, text
        assert r.headers["Content-Type"] == "application/problem+json"


def test_admin_endpoints_refuse_wrong_methods_and_bodies_with_problem_json(api: Api) -> None:
    """Wrong method: 405 with Allow; non-JSON or non-object bodies: 415 / 400."""
    b = api.base_url
    r = requests.put(f"{b}/_emulator/clock", json={"advance": 1})
    assert r.status_code == 405
    assert "POST" in r.headers["Allow"]
    assert requests.delete(f"{b}/_emulator/reset").status_code == 405
    r = requests.post(f"{b}/_emulator/clock", data="advance=1", headers={"Content-Type": "text/x"})
    assert r.status_code == 415
    for text in ("[1]", "{", ""):
        r = requests.post(
            f"{b}/_emulator/faults", data=text, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, text
        assert r.headers["Content-Type"] == "application/problem+json"
    assert api.emulator.clock.offset == 0
    assert len(api.emulator.faults) == 0


@pytest.mark.parametrize("status", [420, 499, 599])
def test_a_fault_with_an_unnamed_status_answers_that_status(api: Api, status: int) -> None:
    """POST /_emulator/faults accepts any 4xx/5xx; the faulted call then answers it."""
    r = requests.post(
        f"{api.base_url}/_emulator/faults", json={"operation": "list", "status": status}
    )
    assert r.status_code == 200
    listed = requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers)
    assert listed.status_code == status
    assert listed.headers["Content-Type"] == "application/problem+json"


# -- RemoteEmulator -----------------------------------------------------------------------------


def test_remote_clock_set_takes_a_naive_datetime_as_utc(nvcf_server: Any) -> None:
    """RemoteEmulator.clock.set(datetime(2030, 1, 1)) works as nvcf.clock.set does (UTC)."""
    remote = RemoteEmulator(nvcf_server.url)
    got = remote.clock.set(datetime(2030, 1, 1))
    assert got == pytest.approx(1893456000, abs=5)


@pytest.mark.nvcf(admin_token="s3cret")
def test_remote_emulator_without_or_with_the_wrong_admin_token_raises_401(
    nvcf_server: Any,
) -> None:
    """A missing or wrong token is an HTTPError 401, the clock is not moved."""
    for token in (None, "wrong"):
        remote = RemoteEmulator(nvcf_server.url, admin_token=token)
        with pytest.raises(requests.HTTPError) as info:
            remote.clock.advance(3600)
        assert info.value.response.status_code == 401
    assert nvcf_server.emulator.clock.offset == 0
    right = RemoteEmulator(nvcf_server.url + "/", admin_token="s3cret")
    assert right.health() == {"status": "ok"}


# -- nvcf-emulate -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"NVCF_EMULATOR_PORT": "abc"},
        {"NVCF_EMULATOR_CONTAINER_TIMEOUT": "soon"},
        {"NVCF_EMULATOR_LOG_LEVEL": "TRACE"},
    ],
)
def test_a_bad_environment_value_is_a_usage_error_not_a_traceback(env: dict[str, str]) -> None:
    """nvcf-emulate names the variable and exits 2, like a bad flag."""
    result = run_cli("--port", "0", env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert next(iter(env)) in result.stderr


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_a_clear_error(port: str) -> None:
    """--port 70000 is refused with a one-line error, not a traceback."""
    result = run_cli("--port", port)
    assert result.returncode in (1, 2)
    assert "Traceback" not in result.stderr
    assert "nvcf-emulate: error:" in result.stderr


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("no_such_module_xyz:app", "No module named 'no_such_module_xyz'"),
        ("json:no_such_attr", "has no attribute 'no_such_attr'"),
        ("json", "expected package.module:attr"),
        ("os:sep", "expected package.module:attr"),
    ],
)
def test_a_function_target_that_is_not_an_app_fails_at_start(target: str, words: str) -> None:
    """A missing module or attribute, or an object that is not an app, stops start-up (exit 1)
    with the reason, before the ready line."""
    result = run_cli("--port", "0", "--function", f"x={target}")
    assert result.returncode == 1
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening on" not in result.stdout


@pytest.mark.parametrize("public", ["127.0.0.1:{port}", "not a url"])
def test_a_public_url_without_a_scheme_is_refused_at_start(public: str) -> None:
    """--public-url takes an origin (http://host:port): anything else is a usage error (2)
    instead of a server whose every POST /v2/nvcf/assets is a 500."""
    port = free_port()
    proc = subprocess.Popen(
        [EXE, "--port", str(port), "--public-url", public.format(port=port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        code = proc.wait(5)
    except subprocess.TimeoutExpired:
        r = requests.post(
            f"http://127.0.0.1:{port}/v2/nvcf/assets",
            headers={"Authorization": "Bearer nvapi-x"},
            json={"contentType": "a/b", "description": "d"},
            timeout=10,
        )
        pytest.fail(f"started; create asset answered {r.status_code}")
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert code == 2


def test_a_public_url_with_a_path_is_refused_or_its_upload_urls_work() -> None:
    """--public-url http://HOST:PORT/prefix: either refused at start (2), or the upload URLs
    it hands out accept the upload."""
    port = free_port()
    proc = subprocess.Popen(
        [EXE, "--port", str(port), "--public-url", f"http://127.0.0.1:{port}/prefix"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            assert proc.wait(5) == 2
            return
        asset = requests.post(
            f"http://127.0.0.1:{port}/v2/nvcf/assets",
            headers={"Authorization": "Bearer nvapi-x"},
            json={"contentType": "a/b", "description": "d"},
            timeout=10,
        ).json()
        r = requests.put(
            asset["uploadUrl"],
            data=b"x",
            headers={"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_a_storage_base_url_without_a_scheme_is_refused() -> None:
    """Emulator(storage_base_url="localhost:8000") raises ValueError at construction."""
    with pytest.raises(ValueError, match="storage_base_url"):
        Emulator(storage_base_url="localhost:8000").close()
