"""Review: the function life cycle meeting invocations, through the HTTP API.

Deploy, undeploy, redeploy and delete while requests are queued, running or waiting to be
fetched; several versions behind one function id; shared functions; containers that answer
oddly; status polls with bad windows or bad ids. Each test says what a user sees.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from nvcf_emulator.worker import ContainerRequest, ContainerResponse

from .conftest import Api, Gate

SPEC = {
    "deploymentSpecifications": [
        {"gpu": "L40S", "instanceType": "gl40s_1", "minInstances": 1, "maxInstances": 1}
    ]
}
KEYS = {"nvapi-owner": "nca-owner", "nvapi-friend": "nca-friend", "nvapi-other": "nca-other"}
OWNER = {"Authorization": "Bearer nvapi-owner"}
FRIEND = {"Authorization": "Bearer nvapi-friend"}
OTHER = {"Authorization": "Bearer nvapi-other"}
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "instance", "requestId"}


# -- helpers -------------------------------------------------------------------------------------


def invoke(
    api: Api,
    fid: str,
    body: Any = None,
    *,
    vid: str | None = None,
    headers: dict[str, str] | None = None,
    auth: dict[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    path = f"/v2/nvcf/pexec/functions/{fid}" + (f"/versions/{vid}" if vid else "")
    return requests.post(
        f"{api.base_url}{path}",
        headers={**(auth or api.headers), **(headers or {})},
        json=body if body is not None else {"x": 1},
        allow_redirects=False,
        timeout=30,
        **kwargs,
    )


def poll(
    api: Api,
    req_id: str,
    *,
    seconds: str | None = "5",
    auth: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    extra = {"NVCF-POLL-SECONDS": seconds} if seconds is not None else {}
    return requests.get(
        f"{api.base_url}/v2/nvcf/pexec/status/{req_id}",
        headers={**(auth or api.headers), **extra, **(headers or {})},
        allow_redirects=False,
        timeout=30,
        **kwargs,
    )


def deployment_url(api: Api, fid: str, vid: str) -> str:
    return f"{api.base_url}/v2/nvcf/deployments/functions/{fid}/versions/{vid}"


def version_url(api: Api, fid: str, vid: str) -> str:
    return f"{api.base_url}/v2/nvcf/functions/{fid}/versions/{vid}"


def create_function(api: Api, image: str, name: str = "fn", **body: Any) -> dict[str, Any]:
    r = requests.post(
        f"{api.base_url}/v2/nvcf/functions",
        headers=api.headers,
        json={"name": name, "inferenceUrl": "/infer", "containerImage": image, **body},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    fn: dict[str, Any] = r.json()["function"]
    assert fn["status"] == "INACTIVE"
    return fn


def status_of(api: Api, fid: str, vid: str, auth: dict[str, str] | None = None) -> str:
    r = requests.get(version_url(api, fid, vid), headers=auth or api.headers, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["function"]["status"])


def assert_problem(r: requests.Response, status: int, detail: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/problem+json", r.headers
    doc = r.json()
    assert set(doc) >= PROBLEM_MEMBERS, doc
    assert doc["status"] == status
    if detail is not None:
        assert doc["detail"] == detail


def not_found(fid: str, vid: str | None, nca: str) -> str:
    return (
        f"Function id '{fid}' version '{vid or 'null'}': Specified function in account "
        f"'{nca}' is not found"
    )


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def image_app(tag: str) -> Callable[[ContainerRequest], Any]:
    def answer(req: ContainerRequest) -> Any:
        return {"tag": tag, "version": req.header("NVCF-FUNCTION-VERSION-ID")}

    return answer


def nca_of(api: Api) -> str:
    return api.emulator.config.default_nca_id


@pytest.fixture
def gates() -> Iterator[list[Gate]]:
    """Gates a test makes; all opened at the end so no worker thread stays blocked."""
    made: list[Gate] = []
    yield made
    for g in made:
        g.open()


# -- undeploy / delete while requests are queued, running or unfetched -----------------------------


@pytest.mark.nvcf(always_async=True, worker_threads=1)
def test_undeploy_while_one_request_runs_and_one_is_queued(api: Api, gate: Gate) -> None:
    """The running call finishes; the queued one gets NVCF's answer to a request no worker
    takes (504, errored, no body); new calls are 404 and so is the queue endpoint: NVCF has a
    queue only for ACTIVE or DEPLOYING versions (repo NVIDIA/nvcf, nvcf-core
    rest/queue/QueueFacade.java, getQueuesDetails)."""
    fid, vid = api.emulator.add_function(gate, name="busy")
    running = invoke(api, fid, {"n": 1})
    assert running.status_code == 202
    assert gate.entered.wait(5)
    queued = invoke(api, fid, {"n": 2})
    assert queued.status_code == 202
    pos = requests.get(
        f"{api.base_url}/v2/nvcf/queues/{queued.headers['NVCF-REQID']}/position",
        headers=api.headers,
        timeout=10,
    )
    assert pos.json()["positionInQueue"] == 1

    down = requests.delete(deployment_url(api, fid, vid), headers=api.headers, timeout=10)
    assert (down.status_code, down.json()["function"]["status"]) == (200, "INACTIVE")
    assert_problem(invoke(api, fid), 404, not_found(fid, None, nca_of(api)))
    gate.open()

    first = poll(api, running.headers["NVCF-REQID"])
    assert (first.status_code, first.json()) == (200, {"done": True})
    second = poll(api, queued.headers["NVCF-REQID"])
    assert (second.status_code, second.content) == (504, b"")
    assert second.headers["NVCF-STATUS"] == "errored"
    assert second.headers["NVCF-REQID"] == queued.headers["NVCF-REQID"]
    assert poll(api, queued.headers["NVCF-REQID"]).status_code == 404
    queues = requests.get(
        f"{api.base_url}/v2/nvcf/queues/functions/{fid}", headers=api.headers, timeout=10
    )
    assert_problem(
        queues, 404, f"Function id '{fid}': Queue not found - Function is likely not deployed"
    )


@pytest.mark.nvcf(always_async=True, worker_threads=1)
def test_delete_version_with_a_queued_request_then_the_queue_endpoints(
    api: Api, gate: Gate
) -> None:
    """After DELETE of the version: queue details are 404 problem JSON; the queued request's
    poller gets 504 (no worker took it), then 404."""
    fid, vid = api.emulator.add_function(gate, name="doomed")
    running = invoke(api, fid).headers["NVCF-REQID"]
    assert gate.entered.wait(5)
    queued = invoke(api, fid).headers["NVCF-REQID"]
    gone = requests.delete(version_url(api, fid, vid), headers=api.headers, timeout=10)
    assert gone.status_code == 204 and gone.content == b""
    for path in (f"queues/functions/{fid}", f"queues/functions/{fid}/versions/{vid}"):
        r = requests.get(f"{api.base_url}/v2/nvcf/{path}", headers=api.headers, timeout=10)
        assert_problem(r, 404)
    assert_problem(invoke(api, fid, vid=vid), 404, not_found(fid, vid, nca_of(api)))
    gate.open()
    assert poll(api, running).status_code == 200
    answer = poll(api, queued)
    assert (answer.status_code, answer.content) == (504, b"")
    assert poll(api, queued).status_code == 404


@pytest.mark.nvcf(always_async=True)
def test_an_unfetched_result_survives_undeploy_and_delete_of_its_version(api: Api) -> None:
    """The result lives in the invocation service, not on the instance: still delivered once."""
    fid, vid = api.emulator.add_function(lambda req: {"kept": req.json()}, name="kept")
    ids = [invoke(api, fid, {"n": n}).headers["NVCF-REQID"] for n in range(2)]
    wait_for(lambda: all(i.done for i in api.emulator.invocations), what="results")
    assert requests.delete(deployment_url(api, fid, vid), headers=api.headers).status_code == 200
    r = poll(api, ids[0])
    assert (r.status_code, r.json()) == (200, {"kept": {"n": 0}})
    assert r.headers["NVCF-STATUS"] == "fulfilled"
    assert requests.delete(version_url(api, fid, vid), headers=api.headers).status_code == 204
    r = poll(api, ids[1])
    assert (r.status_code, r.json()) == (200, {"kept": {"n": 1}})
    assert poll(api, ids[1]).status_code == 404


def test_undeploy_while_running_the_caller_still_gets_its_answer(api: Api, gate: Gate) -> None:
    fid, vid = api.emulator.add_function(gate, name="undeploy-mid-run")
    result: dict[str, requests.Response] = {}
    caller = threading.Thread(
        target=lambda: result.update(r=invoke(api, fid, headers={"NVCF-POLL-SECONDS": "10"}))
    )
    caller.start()
    try:
        assert gate.entered.wait(5)
        down = requests.delete(
            deployment_url(api, fid, vid) + "?graceful=true", headers=api.headers, timeout=10
        )
        assert (down.status_code, down.json()["function"]["status"]) == (200, "INACTIVE")
    finally:
        gate.open()
        caller.join(10)
    assert (result["r"].status_code, result["r"].json()) == (200, {"done": True})
    assert result["r"].headers["NVCF-STATUS"] == "fulfilled"
    assert invoke(api, fid).status_code == 404


# -- the deployment life cycle over the API -----------------------------------------------------


@pytest.mark.nvcf(deploy_delay=30)
def test_full_deployment_cycle_through_the_api(api: Api) -> None:
    """INACTIVE 404 -> DEPLOYING 404 -> ACTIVE 200 -> PUT keeps it serving -> second POST is 400
    and keeps it serving -> DELETE INACTIVE 404 -> redeploy DEPLOYING again -> ACTIVE 200."""
    api.emulator.register_image("img:cycle", image_app("cycle"))
    fn = create_function(api, "img:cycle", name="cycle")
    fid, vid = fn["id"], fn["versionId"]
    nca = nca_of(api)
    assert_problem(invoke(api, fid), 404, not_found(fid, None, nca))
    assert_problem(invoke(api, fid, vid=vid), 404, not_found(fid, vid, nca))
    # no deployment yet: GET / PUT / DELETE on it are 404, not 500
    for method in ("GET", "DELETE"):
        r = requests.request(method, deployment_url(api, fid, vid), headers=api.headers)
        assert_problem(r, 404)
    assert_problem(requests.put(deployment_url(api, fid, vid), headers=api.headers, json=SPEC), 404)

    up = requests.post(deployment_url(api, fid, vid), headers=api.headers, json=SPEC)
    assert (up.status_code, up.json()["deployment"]["functionStatus"]) == (200, "DEPLOYING")
    assert_problem(invoke(api, fid, vid=vid), 404, not_found(fid, vid, nca))
    listed = requests.get(f"{api.base_url}/v2/nvcf/functions/{fid}/versions", headers=api.headers)
    assert [f["status"] for f in listed.json()["functions"]] == ["DEPLOYING"]
    assert "activeInstances" not in listed.json()["functions"][0]
    api.emulator.clock.advance(30)
    r = invoke(api, fid, vid=vid)
    assert (r.status_code, r.json()) == (200, {"tag": "cycle", "version": vid})
    got = requests.get(version_url(api, fid, vid), headers=api.headers).json()["function"]
    assert got["status"] == "ACTIVE" and got["activeInstances"][0]["functionVersionId"] == vid

    bigger = {
        "deploymentSpecifications": [{**SPEC["deploymentSpecifications"][0], "maxInstances": 4}]
    }
    put = requests.put(deployment_url(api, fid, vid), headers=api.headers, json=bigger)
    assert put.status_code == 200, put.text
    assert put.json()["deployment"]["deploymentSpecifications"][0]["maxInstances"] == 4
    assert put.json()["deployment"]["functionStatus"] == "ACTIVE"
    other_gpu = {
        "deploymentSpecifications": [{**SPEC["deploymentSpecifications"][0], "gpu": "H100"}]
    }
    assert_problem(
        requests.put(deployment_url(api, fid, vid), headers=api.headers, json=other_gpu), 400
    )
    again = requests.post(deployment_url(api, fid, vid), headers=api.headers, json=SPEC)
    assert_problem(again, 400)
    assert invoke(api, fid).status_code == 200
    assert status_of(api, fid, vid) == "ACTIVE"

    down = requests.delete(deployment_url(api, fid, vid), headers=api.headers)
    assert (down.status_code, down.json()["function"]["status"]) == (200, "INACTIVE")
    assert "activeInstances" not in down.json()["function"]
    assert_problem(invoke(api, fid), 404, not_found(fid, None, nca))
    assert_problem(requests.delete(deployment_url(api, fid, vid), headers=api.headers), 404)

    re_up = requests.post(deployment_url(api, fid, vid), headers=api.headers, json=SPEC)
    assert re_up.json()["deployment"]["functionStatus"] == "DEPLOYING"
    assert invoke(api, fid).status_code == 404
    api.emulator.clock.advance(30)
    assert invoke(api, fid).json() == {"tag": "cycle", "version": vid}


@pytest.mark.nvcf(deploy_delay=30)
def test_undeploy_while_deploying_stays_inactive_when_the_delay_passes(api: Api) -> None:
    api.emulator.register_image("img:abort", image_app("abort"))
    fn = create_function(api, "img:abort", name="abort")
    fid, vid = fn["id"], fn["versionId"]
    assert requests.post(deployment_url(api, fid, vid), headers=api.headers, json=SPEC).ok
    down = requests.delete(deployment_url(api, fid, vid), headers=api.headers)
    assert (down.status_code, down.json()["function"]["status"]) == (200, "INACTIVE")
    api.emulator.clock.advance(60)
    assert status_of(api, fid, vid) == "INACTIVE"
    assert_problem(invoke(api, fid), 404, not_found(fid, None, nca_of(api)))


def test_an_error_deployment_recovers_by_undeploy_register_and_redeploy(api: Api) -> None:
    """ERROR (no container for the image) is 404 to invoke, by id and by version; after the
    image is registered, undeploy + deploy makes it ACTIVE and invocable."""
    fn = create_function(api, "img:late", name="late")
    fid, vid = fn["id"], fn["versionId"]
    up = requests.post(deployment_url(api, fid, vid), headers=api.headers, json=SPEC)
    assert up.json()["deployment"]["functionStatus"] == "ERROR"
    assert up.json()["deployment"]["healthInfo"]
    assert_problem(invoke(api, fid), 404, not_found(fid, None, nca_of(api)))
    assert_problem(invoke(api, fid, vid=vid), 404, not_found(fid, vid, nca_of(api)))
    assert api.emulator.invocations == []
    api.emulator.register_image("img:late", image_app("late"))
    assert requests.delete(deployment_url(api, fid, vid), headers=api.headers).status_code == 200
    up = requests.post(deployment_url(api, fid, vid), headers=api.headers, json=SPEC)
    assert up.json()["deployment"]["functionStatus"] == "ACTIVE"
    assert "healthInfo" not in up.json()["deployment"]
    assert invoke(api, fid, vid=vid).json() == {"tag": "late", "version": vid}


def test_deploying_a_deleted_version_is_404_and_leaves_nothing_invocable(api: Api) -> None:
    api.emulator.register_image("img:del", image_app("del"))
    fn = create_function(api, "img:del", name="del")
    fid, vid = fn["id"], fn["versionId"]
    assert requests.delete(version_url(api, fid, vid), headers=api.headers).status_code == 204
    assert_problem(
        requests.post(deployment_url(api, fid, vid), headers=api.headers, json=SPEC), 404
    )
    assert_problem(requests.get(version_url(api, fid, vid), headers=api.headers), 404)
    assert_problem(requests.delete(version_url(api, fid, vid), headers=api.headers), 404)
    assert_problem(invoke(api, fid, vid=vid), 404)


# -- several versions behind one function id -----------------------------------------------------


def test_invoking_by_function_id_spreads_over_active_versions_only(api: Api) -> None:
    """Every answer comes from an ACTIVE (or DEGRADING) version, and the version the container
    saw is the version the record names; INACTIVE/ERROR/DEPLOYING versions get nothing."""
    emu = api.emulator
    v1 = emu.add_function(image_app("one"), name="multi")
    v2 = emu.add_function(image_app("two"), name="multi", function_id=v1.function_id)
    fid = v1.function_id
    listed = requests.get(f"{api.base_url}/v2/nvcf/functions/{fid}/versions", headers=api.headers)
    assert sorted(f["versionId"] for f in listed.json()["functions"]) == sorted(
        [v1.version_id, v2.version_id]
    )

    seen = set()
    for _ in range(40):
        r = invoke(api, fid)
        assert r.status_code == 200
        body = r.json()
        assert body["version"] == {"one": v1.version_id, "two": v2.version_id}[body["tag"]]
        assert emu.invocations[-1].version_id == body["version"]
        seen.add(body["tag"])
    assert seen == {"one", "two"}

    for status in ("INACTIVE", "ERROR", "DEPLOYING", "DEGRADED"):
        emu.set_function_status(fid, v2.version_id, status)
        tags = {invoke(api, fid).json()["tag"] for _ in range(10)}
        assert tags == {"one"}, status
        r = invoke(api, fid, vid=v2.version_id)
        assert r.status_code == (400 if status == "DEGRADED" else 404), (status, r.text)
    emu.set_function_status(fid, v1.version_id, "DEGRADING")
    emu.set_function_status(fid, v2.version_id, "ERROR")
    assert invoke(api, fid).json()["tag"] == "one"
    emu.set_function_status(fid, v1.version_id, "DEGRADED")
    r = invoke(api, fid)
    assert_problem(r, 400, f"Function id '{fid}': DEGRADED function cannot be invoked")
    emu.set_function_status(fid, v1.version_id, "INACTIVE")
    assert_problem(invoke(api, fid), 404, not_found(fid, None, nca_of(api)))


def test_a_version_id_under_another_functions_id_is_404_and_calls_nothing(api: Api) -> None:
    emu = api.emulator
    a = emu.add_function(image_app("a"), name="fa")
    b = emu.add_function(image_app("b"), name="fb")
    r = invoke(api, b.function_id, vid=a.version_id)
    assert_problem(r, 404, not_found(b.function_id, a.version_id, nca_of(api)))
    assert emu.invocations == []
    r = requests.get(version_url(api, b.function_id, a.version_id), headers=api.headers)
    assert_problem(r, 404)
    r = requests.delete(deployment_url(api, b.function_id, a.version_id), headers=api.headers)
    assert_problem(r, 404)
    assert invoke(api, a.function_id).json()["tag"] == "a"


def test_deleting_one_version_keeps_the_function_serving_from_the_other(api: Api) -> None:
    emu = api.emulator
    v1 = emu.add_function(image_app("one"), name="pair")
    v2 = emu.add_function(image_app("two"), name="pair", function_id=v1.function_id)
    fid = v1.function_id
    assert (
        requests.delete(version_url(api, fid, v1.version_id), headers=api.headers).status_code
        == 204
    )
    assert {invoke(api, fid).json()["tag"] for _ in range(10)} == {"two"}
    assert_problem(invoke(api, fid, vid=v1.version_id), 404)
    ids = requests.get(f"{api.base_url}/v2/nvcf/functions/ids", headers=api.headers).json()
    assert ids == {"functionIds": [fid]}
    queues = requests.get(f"{api.base_url}/v2/nvcf/queues/functions/{fid}", headers=api.headers)
    assert [q["functionVersionId"] for q in queues.json()["queues"]] == [v2.version_id]
    assert (
        requests.delete(version_url(api, fid, v2.version_id), headers=api.headers).status_code
        == 204
    )
    assert_problem(invoke(api, fid), 404)
    listed = requests.get(f"{api.base_url}/v2/nvcf/functions", headers=api.headers).json()
    assert listed == {"functions": []}


# -- sharing between accounts --------------------------------------------------------------------


@pytest.mark.nvcf(api_keys=KEYS, always_async=True)
def test_a_shared_function_invoked_by_the_friend(api: Api) -> None:
    """The friend may invoke and poll; the container sees the friend's NCA id; the owner and a
    third account cannot read the friend's request; the friend cannot manage the function;
    once the owner undeploys it, the friend's calls are 404."""
    emu = api.emulator

    def who(req: ContainerRequest) -> dict[str, Any]:
        return {"nca": req.header("NVCF-NCAID"), "fn": req.header("NVCF-FUNCTION-ID")}

    fid, vid = emu.add_function(who, name="shared", nca_id="nca-owner", shared_with=["nca-friend"])
    listed = requests.get(f"{api.base_url}/v2/nvcf/functions", headers=FRIEND).json()
    assert [(f["id"], f.get("ownedByDifferentAccount")) for f in listed["functions"]] == [
        (fid, True)
    ]
    r = invoke(api, fid, auth=FRIEND)
    assert r.status_code == 202
    req_id = r.headers["NVCF-REQID"]
    for stranger in (OWNER, OTHER):
        assert_problem(poll(api, req_id, auth=stranger), 404, f"Request id '{req_id}' not found")
        pos = requests.get(f"{api.base_url}/v2/nvcf/queues/{req_id}/position", headers=stranger)
        assert pos.status_code == 404
    got = poll(api, req_id, auth=FRIEND)
    assert (got.status_code, got.json()) == (200, {"nca": "nca-friend", "fn": fid})

    assert_problem(invoke(api, fid, auth=OTHER), 404, not_found(fid, None, "nca-other"))
    for method, url in (
        ("DELETE", deployment_url(api, fid, vid)),
        ("DELETE", version_url(api, fid, vid)),
    ):
        r = requests.request(method, url, headers=FRIEND)
        assert_problem(r, 404)
    r = requests.post(deployment_url(api, fid, vid), headers=FRIEND, json=SPEC)
    assert_problem(r, 404)
    assert status_of(api, fid, vid, auth=OWNER) == "ACTIVE"

    down = requests.delete(deployment_url(api, fid, vid), headers=OWNER)
    assert down.status_code == 200
    assert_problem(invoke(api, fid, auth=FRIEND), 404, not_found(fid, None, "nca-friend"))


# -- containers that answer oddly -----------------------------------------------------------------


def test_a_non_json_200_passes_through_unchanged(api: Api) -> None:
    body = b"\x00\xff not json \xfe"
    fid, _ = api.emulator.add_function(
        lambda req: ContainerResponse(200, body, [("Content-Type", "application/x-weird")]),
        name="binary",
    )
    r = invoke(api, fid)
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["Content-Type"] == "application/x-weird"
    assert r.headers["NVCF-STATUS"] == "fulfilled"
    assert r.headers["NVCF-REQID"]


def test_a_204_and_a_containers_own_302_pass_through_as_fulfilled(api: Api) -> None:
    def answer(req: ContainerRequest) -> Any:
        if req.json()["kind"] == "empty":
            return None, 204
        return "", 302, {"Location": "https://example.invalid/elsewhere"}

    fid, _ = api.emulator.add_function(answer, name="odd-status")
    r = invoke(api, fid, {"kind": "empty"})
    assert (r.status_code, r.content, r.headers["NVCF-STATUS"]) == (204, b"", "fulfilled")
    r = invoke(api, fid, {"kind": "redirect"})
    assert r.status_code == 302
    assert r.headers["Location"] == "https://example.invalid/elsewhere"
    assert r.headers["NVCF-STATUS"] == "fulfilled"


def test_container_headers_cannot_forge_nvcf_headers_or_break_framing(api: Api) -> None:
    """A container that sets NVCF-REQID/NVCF-STATUS, a wrong Content-Length, Transfer-Encoding
    and Connection: the client sees the real request id and status, the whole body, and the
    next call on the same connection works."""
    payload = {"ok": True}

    def liar(req: ContainerRequest) -> ContainerResponse:
        return ContainerResponse(
            200,
            json.dumps(payload).encode(),
            [
                ("Content-Type", "application/json"),
                ("NVCF-REQID", "forged"),
                ("NVCF-STATUS", "errored"),
                ("Content-Length", "99999"),
                ("Transfer-Encoding", "chunked"),
                ("Connection", "close"),
                ("X-Custom", "kept"),
            ],
        )

    fid, _ = api.emulator.add_function(liar, name="liar")
    with requests.Session() as s:
        for _ in range(2):
            r = s.post(
                f"{api.base_url}/v2/nvcf/pexec/functions/{fid}",
                headers=api.headers,
                json={},
                timeout=10,
            )
            assert r.status_code == 200
            assert r.json() == payload
            assert r.headers["NVCF-REQID"] == api.emulator.invocations[-1].request_id
            assert r.headers["NVCF-STATUS"] == "fulfilled"
            assert r.headers["X-Custom"] == "kept"
            assert r.headers.get("Transfer-Encoding") is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "bad-request"), (429, "too-many-requests"), (503, "service-unavailable")],
)
def test_container_error_statuses_become_problem_json_with_the_request_id(
    api: Api, status: int, kind: str
) -> None:
    fid, _ = api.emulator.add_function(
        lambda req: ({"error": f"nope {status}"}, status, {"Retry-After": "3"}), name="err"
    )
    r = invoke(api, fid)
    assert_problem(r, status, f"nope {status}")
    doc = r.json()
    assert doc["type"] == f"urn:inference-service:problem-details:{kind}"
    assert doc["requestId"] == r.headers["NVCF-REQID"]
    assert doc["instance"] == f"/v2/nvcf/pexec/functions/{fid}"
    assert r.headers["NVCF-STATUS"] == "errored"


def test_a_container_error_with_a_non_json_body_is_inference_error(api: Api) -> None:
    fid, _ = api.emulator.add_function(lambda req: ("<html>oops</html>", 502), name="html-err")
    r = invoke(api, fid)
    assert_problem(r, 502, "Inference error")
    assert r.json()["type"] == "urn:inference-service:problem-details:bad-gateway"


def test_a_container_header_value_outside_latin1_does_not_kill_the_answer(api: Api) -> None:
    """HTTP header bytes are opaque: a container's UTF-8 header value reaches the client as
    those bytes (``requests`` shows them as latin-1 text), the same in both modes."""
    fid, _ = api.emulator.add_function(
        lambda req: ({"ok": True}, 200, {"X-Label": "snow\u2603man"}), name="utf8-header"
    )
    r = invoke(api, fid)
    assert (r.status_code, r.json()) == (200, {"ok": True})
    assert r.headers["X-Label"].encode("latin-1").decode("utf-8") == "snow\u2603man"


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("X-Evil", "a\r\nX-Injected: 1", "X-Evil header contains a line break"),
        ("X-Nul", "a\0b", "X-Nul header contains a line break or NUL"),
        ("Bad Name", "v", "'Bad Name' is not a valid HTTP field name"),
    ],
)
def test_a_container_header_no_server_could_send_is_an_nvcf_error(
    api: Api, name: str, value: str, named: str
) -> None:
    """A header that cannot go on the wire (a line break, NUL, a name with a space) is a fault
    in the container: NVCF's 500 inference-connection problem naming the header, never a
    split response or a dropped connection; the emulator keeps serving."""
    fid, _ = api.emulator.add_function(
        lambda req: ({"ok": True}, 200, {name: value}), name="bad-header"
    )
    r = invoke(api, fid)
    assert_problem(r, 500)
    assert r.headers["NVCF-STATUS"] == "errored"
    assert "X-Injected" not in r.headers
    assert named in r.json()["detail"]
    assert r.json()["type"].startswith("urn:inference-connection:problem-details:")
    ok = api.emulator.add_function(lambda req: {"still": "up"}, name="after")
    assert invoke(api, ok.function_id).json() == {"still": "up"}


@pytest.mark.nvcf(max_response_bytes=1024)
def test_the_inline_limit_is_inclusive_and_the_zip_outlives_the_version(api: Api) -> None:
    """Exactly NVCF-MAX-RESPONSE-SIZE-BYTES is inline; one more is a 302 to a zip holding the
    body, downloadable without Authorization, twice, after the version is deleted."""

    def sized(req: ContainerRequest) -> ContainerResponse:
        n = req.json()["n"]
        assert req.header("NVCF-MAX-RESPONSE-SIZE-BYTES") == "1024"
        return ContainerResponse(200, b"a" * n, [("Content-Type", "text/plain")])

    fid, vid = api.emulator.add_function(sized, name="sized")
    exact = invoke(api, fid, {"n": 1024})
    assert (exact.status_code, len(exact.content)) == (200, 1024)
    over = invoke(api, fid, {"n": 1025})
    assert over.status_code == 302
    assert over.headers["NVCF-STATUS"] == "fulfilled"
    req_id = over.headers["NVCF-REQID"]
    assert requests.delete(version_url(api, fid, vid), headers=api.headers).status_code == 204
    for _ in range(2):
        z = requests.get(over.headers["Location"], timeout=10)
        assert z.status_code == 200
        with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
            assert zf.namelist() == [f"{req_id}.response"]
            assert zf.read(f"{req_id}.response") == b"a" * 1025
    assert poll(api, req_id).status_code == 404
    api.emulator.clock.advance(24 * 3600 + 1)
    gone = requests.get(over.headers["Location"], timeout=10)
    assert gone.status_code == 403  # S3's answer to a pre-signed GET past its expiry


@pytest.mark.nvcf(max_response_bytes=1024)
def test_a_huge_error_body_is_problem_json_not_a_zip(api: Api) -> None:
    fid, _ = api.emulator.add_function(lambda req: ({"error": "x" * 5000}, 500), name="huge-error")
    r = invoke(api, fid)
    assert_problem(r, 500, "x" * 5000)
    assert "Location" not in r.headers


@pytest.mark.nvcf(max_response_bytes=1024)
def test_streaming_mode_never_zips_even_a_huge_or_file_leaving_answer(api: Api) -> None:
    """Accept: text/event-stream turns the 302 off (reference §5): the body comes back as is."""

    def big(req: ContainerRequest) -> ContainerResponse:
        (req.output_dir / "left.bin").write_bytes(b"left over")
        return ContainerResponse(200, b"b" * 4096, [("Content-Type", "application/json")])

    fid, _ = api.emulator.add_function(big, name="big-stream")
    r = invoke(api, fid, headers={"Accept": "text/event-stream"})
    assert r.status_code == 200, r.headers
    assert r.content == b"b" * 4096
    assert r.headers["NVCF-STATUS"] == "fulfilled"
    # a list of media types is not streaming mode: the same answer is zipped
    r = invoke(api, fid, headers={"Accept": "text/event-stream, application/json"})
    assert r.status_code == 302


@pytest.mark.nvcf(always_async=True)
def test_an_event_stream_fetched_by_a_status_poll(api: Api) -> None:
    """POST answered 202 (always_async); the status poll carries the stream, every event,
    then the request id is 404."""

    def events(req: ContainerRequest) -> Iterator[str]:
        for i in range(3):
            yield f"data: {i}\n\n"

    fid, _ = api.emulator.add_function(events, name="sse-async")
    r = invoke(api, fid, headers={"Accept": "text/event-stream"})
    assert r.status_code == 202
    req_id = r.headers["NVCF-REQID"]
    got = poll(api, req_id, headers={"Accept": "text/event-stream"})
    assert got.status_code == 200
    assert got.headers["Content-Type"].startswith("text/event-stream")
    assert got.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert poll(api, req_id).status_code == 404


# -- status polls: windows, ids, repeated fetches -------------------------------------------------


@pytest.mark.nvcf(always_async=True)
@pytest.mark.parametrize("bad", ["abc", "-1", "3601", "1.5", "", "99999999999999999999999"])
def test_a_bad_poll_window_on_a_status_poll_is_400_and_keeps_the_result(api: Api, bad: str) -> None:
    fid, _ = api.emulator.add_function(lambda req: {"v": 1}, name="keep")
    req_id = invoke(api, fid).headers["NVCF-REQID"]
    wait_for(lambda: api.emulator.invocations[-1].done, what="result")
    r = poll(api, req_id, seconds=bad)
    assert_problem(r, 400)
    assert r.json()["detail"].startswith("failed to parse poll duration")
    ok = poll(api, req_id, seconds="0")  # 0 counts as 1; the result is ready at once
    assert (ok.status_code, ok.json()) == (200, {"v": 1})
    assert ok.headers["NVCF-STATUS"] == "fulfilled"
    assert poll(api, req_id, seconds="3600").status_code == 404


@pytest.mark.parametrize("bad", ["abc", "-5", "3601", "2.0"])
def test_a_bad_poll_window_on_invoke_runs_nothing(api: Api, bad: str) -> None:
    calls: list[int] = []
    fid, _ = api.emulator.add_function(lambda req: calls.append(1) or {}, name="untouched")
    r = invoke(api, fid, headers={"NVCF-POLL-SECONDS": bad})
    assert_problem(r, 400)
    assert calls == [] and api.emulator.invocations == []


@pytest.mark.parametrize(
    "req_id",
    [
        "not-a-uuid",
        "x" * 300,
        "00000000-0000-0000-0000-000000000000",
        "..%2F..%2Fassets",
        "%00",
    ],
)
def test_malformed_request_ids_on_status_and_queue_position_are_4xx(api: Api, req_id: str) -> None:
    for path in (f"pexec/status/{req_id}", f"queues/{req_id}/position"):
        r = requests.get(f"{api.base_url}/v2/nvcf/{path}", headers=api.headers, timeout=10)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        if r.headers.get("Content-Type") == "application/problem+json":
            assert r.json()["status"] == r.status_code


@pytest.mark.nvcf(always_async=True)
def test_bad_polls_and_strangers_do_not_consume_or_cancel_a_result(api: Api) -> None:
    """Malformed windows, wrong ids and a garbage key all leave the real result in place."""
    fid, _ = api.emulator.add_function(lambda req: {"mine": True}, name="mine")
    req_id = invoke(api, fid).headers["NVCF-REQID"]
    wait_for(lambda: api.emulator.invocations[-1].done, what="result")
    assert poll(api, req_id, seconds="nope").status_code == 400
    assert poll(api, req_id, auth={"Authorization": "Bearer not-a-key"}).status_code == 401
    r = requests.get(f"{api.base_url}/v2/nvcf/pexec/status/{req_id}", timeout=10)
    assert r.status_code == 401
    assert poll(api, req_id + "0").status_code == 400  # not a UUID: the path is refused
    assert poll(api, str(uuid.uuid4())).status_code == 404
    got = poll(api, req_id)
    assert (got.status_code, got.json()) == (200, {"mine": True})
    again = poll(api, req_id)
    assert_problem(again, 404, f"Request id '{req_id}' not found")
    assert again.json()["instance"] == f"/v2/nvcf/pexec/status/{req_id}"


# -- concurrency beyond the worker pool ----------------------------------------------------------


@pytest.mark.nvcf(always_async=True, worker_threads=2)
def test_undeploying_one_function_with_a_backlog_leaves_another_functions_backlog_intact(
    api: Api, gates: list[Gate]
) -> None:
    """Two functions share two workers; one is undeployed with requests queued: every request
    of the other still gets its own 200, nothing hangs, and both queues drain."""
    emu = api.emulator
    hold = Gate()
    gates.append(hold)
    fa = emu.add_function(hold, name="victim")
    fb = emu.add_function(lambda req: {"n": req.json()["n"]}, name="survivor")
    a_ids = [invoke(api, fa.function_id, {"n": i}).headers["NVCF-REQID"] for i in range(3)]
    wait_for(lambda: hold.calls == 2, what="both workers held")
    b_ids = [invoke(api, fb.function_id, {"n": i}).headers["NVCF-REQID"] for i in range(6)]
    down = requests.delete(deployment_url(api, *fa), headers=api.headers)
    assert down.status_code == 200
    hold.open()
    for i, req_id in enumerate(b_ids):
        r = poll(api, req_id)
        assert (r.status_code, r.json()) == (200, {"n": i})
    answers = [poll(api, req_id).status_code for req_id in a_ids]
    assert answers == [200, 200, 504]  # the two running finish; the queued one: no worker
    wait_for(lambda: emu.invocation_service.queue_depth(fa.function_id) == 0, what="drain")
    assert emu.invocation_service.queue_depth(fb.function_id) == 0


@pytest.mark.nvcf(always_async=True, worker_threads=1)
@pytest.mark.parametrize("how", ["undeploy", "delete"])
def test_a_queued_request_never_reaches_the_container_of_a_version_taken_down(
    api: Api, gate: Gate, how: str
) -> None:
    """Undeploy (or delete) the version while a request waits in its queue: the instance is
    gone, so nothing may run that request. NVCF answers a request no worker takes with 504,
    ``NVCF-STATUS: errored`` and no body (reference §4), never with a result from a function
    that is INACTIVE or deleted."""
    fid, vid = api.emulator.add_function(gate, name="taken-down")
    running = invoke(api, fid, {"n": 1}).headers["NVCF-REQID"]
    assert gate.entered.wait(5)
    queued = invoke(api, fid, {"n": 2}).headers["NVCF-REQID"]
    url = deployment_url(api, fid, vid) if how == "undeploy" else version_url(api, fid, vid)
    assert requests.delete(url, headers=api.headers, timeout=10).status_code in (200, 204)
    gate.open()
    assert poll(api, running).status_code == 200
    answer = poll(api, queued)
    assert gate.calls == 1, "the queued request ran on a version that was taken down"
    assert answer.status_code == 504, answer.text
    assert answer.headers["NVCF-STATUS"] == "errored"
    assert answer.headers["NVCF-REQID"] == queued
    assert answer.content == b""
    assert poll(api, queued).status_code == 404  # delivered once, then purged


@pytest.mark.parametrize("bad", [0, "lots", 20000])
def test_a_max_request_concurrency_out_of_range_is_400(api: Api, bad: Any) -> None:
    """Reference §3: maxRequestConcurrency is 1-1024 in the SDK, up to 16384 in ngcsdk;
    validation errors are 400 problem JSON and nothing is deployed."""
    api.emulator.register_image("img:mrc", image_app("mrc"))
    fn = create_function(api, "img:mrc", name="mrc")
    spec = {**SPEC["deploymentSpecifications"][0], "maxRequestConcurrency": bad}
    r = requests.post(
        deployment_url(api, fn["id"], fn["versionId"]),
        headers=api.headers,
        json={"deploymentSpecifications": [spec]},
        timeout=10,
    )
    assert_problem(r, 400)
    assert status_of(api, fn["id"], fn["versionId"]) == "INACTIVE"


@pytest.mark.parametrize("good", [1, 1024, 16384])
def test_a_max_request_concurrency_in_range_deploys(api: Api, good: int) -> None:
    api.emulator.register_image("img:mrc", image_app("mrc"))
    fn = create_function(api, "img:mrc", name="mrc")
    spec = {**SPEC["deploymentSpecifications"][0], "maxRequestConcurrency": good}
    r = requests.post(
        deployment_url(api, fn["id"], fn["versionId"]),
        headers=api.headers,
        json={"deploymentSpecifications": [spec]},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["deployment"]["deploymentSpecifications"][0]["maxRequestConcurrency"] == good
    assert invoke(api, fn["id"]).json()["tag"] == "mrc"


def test_invocations_racing_undeploy_and_redeploy_get_200_or_404_only(api: Api) -> None:
    """Four clients invoke while the owner flips the deployment 20 times: each answer is the
    container's 200, NVCF's 404 problem JSON, or (a call accepted just before an undeploy)
    the empty 504 of a request no worker took; never another 5xx or a dropped connection."""
    api.emulator.register_image("img:flip", image_app("flip"))
    fn = create_function(api, "img:flip", name="flip")
    fid, vid = fn["id"], fn["versionId"]
    url = deployment_url(api, fid, vid)
    assert requests.post(url, headers=api.headers, json=SPEC).status_code == 200
    stop = threading.Event()
    seen: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def client() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.post(
                        f"{api.base_url}/v2/nvcf/pexec/functions/{fid}",
                        headers=api.headers,
                        json={},
                        timeout=10,
                    )
                    seen.append((r.status_code, r.headers.get("Content-Type", "")))
                    if r.status_code == 200:
                        assert r.json() == {"tag": "flip", "version": vid}
                except BaseException as exc:
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            assert requests.delete(url, headers=api.headers, timeout=10).status_code == 200
            assert requests.post(url, headers=api.headers, json=SPEC, timeout=10).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    assert seen
    for status, ctype in seen:
        assert status == 504 or (status, ctype) in (
            (200, "application/json"),
            (404, "application/problem+json"),
        )
    assert invoke(api, fid).status_code == 200
