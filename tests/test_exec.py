"""The legacy envelope API, ``/v2/nvcf/exec/...``: pexec wrapped in NVCF's JSON envelope, as
NVIDIA's invocation service does it (``post_exec.rs``, ``get_exec.rs``)."""

from __future__ import annotations

import io
import json
import threading
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.server import EmulatorServer
from nvcf_emulator.worker import ContainerRequest

from .conftest import Gate
from .test_pexec import API, MISSING_AUTH, assert_problem, new_asset

NIL = "00000000-0000-0000-0000-000000000000"


def execute(
    emu: Emulator,
    fid: str,
    envelope: Any = None,
    *,
    vid: str | None = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    base: str = API,
) -> requests.Response:
    """``POST /v2/nvcf/exec/...`` with ``envelope`` as JSON (or ``data`` as it is)."""
    path = f"/v2/nvcf/exec/functions/{fid}" + (f"/versions/{vid}" if vid else "")
    if data is None:
        data = json.dumps(envelope if envelope is not None else {"requestBody": {"x": 1}}).encode()
    return requests.post(
        f"{base}{path}",
        headers={**emu.headers, "Content-Type": "application/json", **(headers or {})},
        data=data,
        allow_redirects=False,
    )


def exec_status(emu: Emulator, req_id: str, **headers: str) -> requests.Response:
    return requests.get(
        f"{API}/v2/nvcf/exec/status/{req_id}",
        headers={**emu.headers, **headers},
        allow_redirects=False,
    )


def recorder(answer: Any = None) -> tuple[list[ContainerRequest], Any]:
    """A container that keeps what it was sent and answers ``answer`` (default: ``{"ok": 1}``)."""
    seen: list[ContainerRequest] = []

    def container(req: ContainerRequest) -> Any:
        seen.append(req)
        return answer if answer is not None else {"ok": 1}

    return seen, container


# -- fulfilled -------------------------------------------------------------------------------------


def test_fulfilled_answer_is_the_envelope_with_the_containers_json(nvcf: Emulator) -> None:
    seen, container = recorder({"zebra": 1, "apple": [1.0, "é"], "nested": {"b": None, "a": 2}})
    fid, _ = nvcf.add_function(container, name="echo")

    r = execute(
        nvcf,
        fid,
        {"requestBody": {"b": 2, "a": "x"}, "unknownMember": True},
        headers={"X-Custom": "not forwarded", "Accept": "text/event-stream"},
    )

    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    req_id = nvcf.invocations[-1].request_id
    # serde_json's order: the struct's fields as declared, absent ones left out (no null);
    # the container's JSON written again with its keys sorted, compact.
    assert r.text == (
        f'{{"reqId":"{req_id}","status":"fulfilled","percentComplete":100,'
        '"response":{"apple":[1.0,"é"],"nested":{"a":2,"b":null},"zebra":1}}'
    )
    # NVCF's envelope answer carries none of pexec's headers
    assert "NVCF-REQID" not in r.headers and "NVCF-STATUS" not in r.headers
    assert r.headers["Access-Control-Allow-Credentials"] == "true"  # its CORS layer's, as pexec
    # the container got requestBody, written again, as JSON, and none of the client's headers
    (req,) = seen
    assert req.method == "POST"
    assert req.body == b'{"a":"x","b":2}'
    assert req.header("Content-Type") == "application/json"
    assert req.header("X-Custom") is None and req.header("Accept") is None
    assert req.header("NVCF-REQID") == req_id
    # the result was delivered: the record is gone
    gone = exec_status(nvcf, req_id)
    assert gone.status_code == 404
    assert gone.json() == {"reqId": NIL, "status": "errored", "errorCode": 404}


@pytest.mark.parametrize(
    ("sent", "received"),
    [
        (b'{"requestBody": null}', b"null"),
        (b'{"requestBody": "text"}', b'"text"'),
        (b'{"requestBody": [1, -0, 1e2, 1.0, 0.00001, 1e-7]}', b"[1,-0.0,100.0,1.0,0.00001,1e-7]"),
        (b'{"requestBody": 123456789012345678901234}', b"1.2345678901234569e23"),
        (
            b'{"requestBody": {"a": 1, "a": 2, "\\u00e9": "\\u2028</"}}',
            '{"a":2,"é":"\u2028</"}'.encode(),
        ),
        (b'{"requestHeader": null, "requestBody": {}}', b"{}"),
    ],
)
def test_request_body_reaches_the_container_as_serde_json_writes_it(
    nvcf: Emulator, sent: bytes, received: bytes
) -> None:
    seen, container = recorder()
    fid, _ = nvcf.add_function(container, name="echo")
    r = execute(nvcf, fid, data=sent)
    assert r.status_code == 200, r.text
    assert seen[0].body == received


def test_version_pinning(nvcf: Emulator) -> None:
    fid, v1 = nvcf.add_function(lambda req: {"v": 1}, name="model")
    _, v2 = nvcf.add_function(lambda req: {"v": 2}, name="model", function_id=fid)
    for vid, answer in ((v1, 1), (v2, 2)):
        r = execute(nvcf, fid, vid=vid)
        assert r.status_code == 200, r.text
        assert r.json()["response"] == {"v": answer}
        assert nvcf.invocations[-1].version_id == vid
    unknown = execute(nvcf, fid, vid=str(uuid.uuid4()))
    assert unknown.status_code == 404
    assert unknown.headers["Content-Type"] == "application/problem+json"


# -- assets ----------------------------------------------------------------------------------------


def test_asset_references_are_staged_for_the_container(nvcf: Emulator) -> None:
    def reads_assets(req: ContainerRequest) -> dict[str, Any]:
        asset_dir = Path(req.header("NVCF-ASSET-DIR") or "")
        ids = (req.header("NVCF-FUNCTION-ASSET-IDS") or "").split(",")
        return {"ids": ids, "data": [(asset_dir / i).read_text() for i in ids]}

    fid, _ = nvcf.add_function(reads_assets, name="assets")
    a1, a2 = new_asset(b"red cat", emu=nvcf), new_asset(b"blue dog", emu=nvcf)

    # ids in any form Rust's UUID parser reads: named in their canonical form
    braced = "{" + a2.upper() + "}"
    envelope = {"requestHeader": {"inputAssetReferences": [a1, braced]}, "requestBody": {}}
    r = execute(nvcf, fid, envelope)

    assert r.status_code == 200, r.text
    assert r.json()["response"] == {"ids": [a1, a2], "data": ["red cat", "blue dog"]}
    assert nvcf.invocations[-1].asset_ids == [a1, a2]


def test_an_unknown_asset_is_pexecs_404_and_the_container_is_not_called(nvcf: Emulator) -> None:
    seen, container = recorder()
    fid, _ = nvcf.add_function(container, name="echo")
    missing = str(uuid.uuid4())
    envelope = {"requestHeader": {"inputAssetReferences": [missing]}, "requestBody": {}}
    r = execute(nvcf, fid, envelope)
    assert_problem(r, 404, f"NotFound error: failed to find asset {missing}")
    assert seen == []


@pytest.mark.parametrize(
    "reference",
    [
        "not-a-uuid",
        "",
        " 2f1c6c2e-8d3b-4f0e-9a51-3b8c1d2e4f60",
        "2f1c6c2e-8d3b-4f0e-9a51-3b8c1d2e4f60,",
    ],
)
def test_an_asset_reference_that_is_not_a_uuid_is_a_400(nvcf: Emulator, reference: str) -> None:
    """Each item must be one whole UUID (no trimming, no list, unlike the header). NVCF answers a
    500 here (its uuid::Error becomes an AppError); the emulator a 400, before the function is
    looked up, as NVCF parses the ids before calling pexec."""
    seen, container = recorder()
    fid, _ = nvcf.add_function(container, name="echo")
    envelope = {"requestHeader": {"inputAssetReferences": [reference]}, "requestBody": {}}
    for function_id in (fid, str(uuid.uuid4())):
        r = execute(nvcf, function_id, envelope)
        assert r.status_code == 400, r.text
        assert r.headers["Content-Type"] == "application/problem+json"
        assert "inputAssetReferences" in r.json()["detail"]
    assert seen == []


# -- slow containers: 202 and the status poll ------------------------------------------------------


def test_slow_container_is_in_progress_then_the_status_poll_has_the_result(
    nvcf: Emulator, gate: Gate
) -> None:
    gate.answer = {"done": True}
    fid, _ = nvcf.add_function(gate, name="slow")

    r = execute(nvcf, fid, {"requestHeader": {"pollDurationSeconds": 1}, "requestBody": {}})

    assert r.status_code == 202, r.text
    req_id = nvcf.invocations[-1].request_id
    assert r.text == f'{{"reqId":"{req_id}","status":"in-progress"}}'
    assert nvcf.invocations[-1].poll_seconds == 1
    gate.open()
    done = exec_status(nvcf, req_id)
    assert done.status_code == 200, done.text
    assert done.json() == {
        "reqId": req_id,
        "status": "fulfilled",
        "percentComplete": 100,
        "response": {"done": True},
    }
    again = exec_status(nvcf, req_id)
    assert again.status_code == 404
    assert again.json() == {"reqId": NIL, "status": "errored", "errorCode": 404}


@pytest.mark.nvcf(always_async=True)
def test_exec_and_pexec_status_polls_read_the_same_requests(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: {"ok": True}, name="f")
    # an exec request polled by pexec: the container's answer as it is
    r = execute(nvcf, fid)
    assert r.status_code == 202
    req_id = r.json()["reqId"]
    pexec = requests.get(f"{API}/v2/nvcf/pexec/status/{req_id}", headers=nvcf.headers)
    assert pexec.status_code == 200 and pexec.json() == {"ok": True}
    # a pexec request polled by exec: the envelope
    p = requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, json={})
    assert p.status_code == 202
    polled = exec_status(nvcf, p.headers["NVCF-REQID"])
    assert polled.status_code == 200
    assert polled.json()["response"] == {"ok": True}


def test_a_progress_update_is_in_progress_without_its_partial_response(
    nvcf: Emulator, gate: Gate
) -> None:
    """NVCF's envelope has no room for the worker's progress: percentComplete is only ever 100
    (a 200 or a 302), and response only a 200's body."""
    gate.before = lambda req: req.write_progress(40, {"partial": True})
    fid, _ = nvcf.add_function(gate, name="progress")
    r = execute(nvcf, fid, {"requestHeader": {"pollDurationSeconds": 5}, "requestBody": {}})
    assert r.status_code == 202, r.text
    assert r.json() == {"reqId": nvcf.invocations[-1].request_id, "status": "in-progress"}


def test_status_of_an_unknown_or_malformed_request_id(nvcf: Emulator) -> None:
    r = exec_status(nvcf, str(uuid.uuid4()))
    assert r.status_code == 404
    assert r.headers["Content-Type"] == "application/json"
    assert r.text == f'{{"reqId":"{NIL}","status":"errored","errorCode":404}}'
    bad = exec_status(nvcf, "nope")
    assert bad.status_code == 400
    assert bad.headers["Content-Type"].startswith("text/plain")
    assert bad.text.startswith("Invalid URL: ")


# -- errors of the container -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (({"error": "busy"}, 503), 503),
        (({"error": "bad input"}, 422), 422),
        (({"created": True}, 201), 201),  # NVCF: only a 200 (or 302) is fulfilled
    ],
)
def test_a_container_error_is_errored_with_its_status(
    nvcf: Emulator, answer: Any, status: int
) -> None:
    fid, _ = nvcf.add_function(lambda req: answer, name="fails")
    r = execute(nvcf, fid)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/json"
    req_id = nvcf.invocations[-1].request_id
    assert r.json() == {"reqId": req_id, "status": "errored", "errorCode": status}


def test_a_container_that_raises_is_errored_500(nvcf: Emulator) -> None:
    def boom(req: ContainerRequest) -> Any:
        raise RuntimeError("boom")

    fid, _ = nvcf.add_function(boom, name="boom")
    r = execute(nvcf, fid)
    assert r.status_code == 500
    assert r.json() == {
        "reqId": nvcf.invocations[-1].request_id,
        "status": "errored",
        "errorCode": 500,
    }


@pytest.mark.parametrize("answer", ["plain text", b"", b'{"a": NaN}'])
def test_a_200_that_is_not_json_is_a_500_problem_and_the_result_is_gone(
    nvcf: Emulator, answer: Any
) -> None:
    fid, _ = nvcf.add_function(lambda req: answer, name="text")
    r = execute(nvcf, fid)
    req_id = nvcf.invocations[-1].request_id
    assert r.status_code == 500, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    detail = r.json()["detail"]
    assert detail.startswith(f"invalid json in response body for request_id: {req_id}; cause: ")
    assert exec_status(nvcf, req_id).status_code == 404  # delivered (and lost), as in NVCF


# -- large results ---------------------------------------------------------------------------------


@pytest.mark.nvcf(max_response_bytes=100)
def test_a_large_answer_is_fulfilled_with_a_response_reference(nvcf: Emulator) -> None:
    big = {"data": "x" * 500}
    fid, _ = nvcf.add_function(lambda req: big, name="big")

    r = execute(nvcf, fid)

    assert r.status_code == 200, r.text
    doc = r.json()
    req_id = nvcf.invocations[-1].request_id
    assert list(doc) == ["reqId", "status", "responseReference", "percentComplete"]
    assert doc["status"] == "fulfilled" and doc["percentComplete"] == 100
    assert doc["reqId"] == req_id
    zipped = requests.get(doc["responseReference"])
    assert zipped.status_code == 200
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
        assert json.loads(zf.read(f"{req_id}.response")) == big


# -- refusals: the envelope, the function, the key -------------------------------------------------


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "EOF"),
        (b"not json", "expected ident at line 1 column 2"),  # serde's words
        (b"{}", "missing field `requestBody`"),
        (b'{"requestbody": 1}', "missing field `requestBody`"),
        (b"[null, {}]", "invalid type: sequence, expected struct InvokeFunctionRequest"),
        (b'"text"', 'invalid type: string "text", expected struct InvokeFunctionRequest'),
        (b'{"requestBody": 1, "requestBody": 2}', "duplicate field `requestBody`"),
        (b'{"requestHeader": 5, "requestBody": 1}', "invalid type: integer `5`"),
        (
            b'{"requestHeader": {"inputAssetReferences": "a"}, "requestBody": 1}',
            'invalid type: string "a", expected a sequence',
        ),
        (
            b'{"requestHeader": {"inputAssetReferences": [1]}, "requestBody": 1}',
            "invalid type: integer `1`, expected a string",
        ),
        (
            b'{"requestHeader": {"pollDurationSeconds": 1.5}, "requestBody": 1}',
            "invalid type: floating point `1.5`, expected i64",
        ),
        (
            b'{"requestHeader": {"pollDurationSeconds": "5"}, "requestBody": 1}',
            'invalid type: string "5", expected i64',
        ),
        (
            b'{"requestHeader": {"pollDurationSeconds": 9223372036854775808}, "requestBody": 1}',
            "invalid value: integer `9223372036854775808`, expected i64",
        ),
        (
            b'{"requestHeader": {"pollDurationSeconds": 1, "pollDurationSeconds": 2}, '
            b'"requestBody": 1}',
            "duplicate field `pollDurationSeconds`",
        ),
        (b'{"requestBody": NaN}', "NaN"),
        (b'{"requestBody": 1e400}', "number out of range"),
        (b'{"requestBody": "\\ud800"}', "surrogate"),
        (b'{"requestBody": "\xff"}', "unicode"),
        (b'{"requestBody": ' + b"[" * 128 + b"]" * 128 + b"}", "recursion limit exceeded"),
    ],
)
def test_a_bad_envelope_is_a_400_problem_before_the_function_is_looked_up(
    nvcf: Emulator, data: bytes, detail: str
) -> None:
    seen, container = recorder()
    fid, _ = nvcf.add_function(container, name="echo")
    for function_id in (fid, str(uuid.uuid4())):
        r = execute(nvcf, function_id, data=data)
        assert r.status_code == 400, r.text
        assert r.headers["Content-Type"] == "application/problem+json"
        assert detail in r.json()["detail"]
    assert seen == []


def test_nesting_up_to_serdes_limit_is_read(nvcf: Emulator) -> None:
    seen, container = recorder()
    fid, _ = nvcf.add_function(container, name="echo")
    deepest = b"[" * 127 + b"]" * 127  # 128 levels with the envelope's own object
    r = execute(nvcf, fid, data=b'{"requestBody": ' + deepest + b"}")
    assert r.status_code == 200, r.text
    assert seen[0].body == deepest


def test_an_envelope_over_two_mib_is_a_400(nvcf: Emulator) -> None:
    seen, container = recorder()
    fid, _ = nvcf.add_function(container, name="echo")
    filler = "x" * (2 * 1024 * 1024)
    r = execute(nvcf, fid, {"requestBody": filler})
    assert_problem(r, 400, "failed to collect request body: length limit exceeded")
    just = execute(nvcf, fid, {"requestBody": filler[: 2 * 1024 * 1024 - 20]})
    assert just.status_code == 200, just.text[:200]
    assert len(seen) == 1


@pytest.mark.parametrize("seconds", [-1, 3601])
def test_a_bad_poll_duration_is_pexecs_400_after_the_function(nvcf: Emulator, seconds: int) -> None:
    seen, container = recorder()
    fid, _ = nvcf.add_function(container, name="echo")
    envelope = {"requestHeader": {"pollDurationSeconds": seconds}, "requestBody": {}}
    r = execute(nvcf, fid, envelope)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("failed to parse poll duration: pollDurationSeconds")
    assert execute(nvcf, str(uuid.uuid4()), envelope).status_code == 404
    assert seen == []


def test_a_zero_poll_duration_counts_as_one_second(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: {"ok": 1}, name="f")
    r = execute(nvcf, fid, {"requestHeader": {"pollDurationSeconds": 0}, "requestBody": {}})
    assert r.status_code == 200
    assert nvcf.invocations[-1].poll_seconds == 1


def test_a_whole_float_poll_duration_is_taken(nvcf: Emulator) -> None:
    """A deliberate difference: serde refuses ``5.0`` for an i64; the emulator takes it, as JSON
    Schema (its OpenAPI document) counts ``5.0`` an integer. ``5.5`` stays a 400."""
    fid, _ = nvcf.add_function(lambda req: {"ok": 1}, name="f")
    r = execute(
        nvcf, fid, data=b'{"requestHeader": {"pollDurationSeconds": 5.0}, "requestBody": 1}'
    )
    assert r.status_code == 200, r.text
    assert nvcf.invocations[-1].poll_seconds == 5


def test_exec_status_reads_no_poll_header(nvcf: Emulator) -> None:
    """NVCF's exec status polls pexec with an empty header map: NVCF-POLL-SECONDS is not read
    (pexec's status answers a bad one with 400)."""
    fid, _ = nvcf.add_function(lambda req: {"ok": 1}, name="f")
    nvcf.configure(always_async=True)
    req_id = execute(nvcf, fid).json()["reqId"]
    bad = {"NVCF-POLL-SECONDS": "soon"}
    pexec = requests.get(f"{API}/v2/nvcf/pexec/status/{req_id}", headers={**nvcf.headers, **bad})
    assert pexec.status_code == 400
    r = exec_status(nvcf, req_id, **bad)
    assert r.status_code == 200, r.text
    assert r.json()["response"] == {"ok": 1}


def test_client_poll_and_asset_headers_are_not_read(nvcf: Emulator) -> None:
    """exec builds pexec's request from the envelope alone: NVCF-POLL-SECONDS and
    NVCF-INPUT-ASSET-REFERENCES of the client's call are not read (a bad one is no 400)."""
    fid, _ = nvcf.add_function(lambda req: {"ok": 1}, name="f")
    r = execute(
        nvcf,
        fid,
        headers={"NVCF-POLL-SECONDS": "not a number", "NVCF-INPUT-ASSET-REFERENCES": "nope"},
    )
    assert r.status_code == 200, r.text
    assert nvcf.invocations[-1].poll_seconds == nvcf.config.poll_seconds
    assert nvcf.invocations[-1].asset_ids == []


def test_unknown_function_is_pexecs_404_problem(nvcf: Emulator) -> None:
    r = execute(nvcf, str(uuid.uuid4()))
    assert r.status_code == 404
    assert r.headers["Content-Type"] == "application/problem+json"
    bad = execute(nvcf, "not-a-uuid")
    assert bad.status_code == 400
    assert bad.text.startswith("Invalid URL: ")


def test_no_key_or_a_wrong_key_is_a_401(nvcf: Emulator) -> None:
    seen, container = recorder()
    fid, _ = nvcf.add_function(container, name="echo")
    url = f"{API}/v2/nvcf/exec/functions/{fid}"
    body = {"requestBody": {}}
    for r in (
        requests.post(url, json=body),
        requests.get(f"{API}/v2/nvcf/exec/status/{uuid.uuid4()}"),
    ):
        assert r.status_code == 401
        assert r.headers["Content-Type"].startswith("text/plain")
        assert r.text == MISSING_AUTH
    for r in (
        requests.post(url, json=body, headers={"Authorization": "Bearer wrong"}),
        requests.get(
            f"{API}/v2/nvcf/exec/status/{uuid.uuid4()}", headers={"Authorization": "Bearer wrong"}
        ),
    ):
        assert r.status_code == 401
        assert r.headers["Content-Type"] == "application/problem+json"
    # the auth layer answers before the body is read
    assert requests.post(url, data=b"{}").status_code == 401
    assert seen == []


def test_cors_preflight_and_wrong_methods(nvcf: Emulator) -> None:
    fid = str(uuid.uuid4())
    pre = requests.options(
        f"{API}/v2/nvcf/exec/functions/{fid}",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 200
    assert pre.headers["Allow"] == "POST"
    assert pre.headers["Access-Control-Allow-Origin"] == "https://app.example"
    status = requests.options(f"{API}/v2/nvcf/exec/status/{fid}")
    assert status.status_code == 200 and status.headers["Allow"] == "GET,HEAD"
    wrong = requests.get(f"{API}/v2/nvcf/exec/functions/{fid}", headers=nvcf.headers)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"


# -- faults ----------------------------------------------------------------------------------------


def test_invoke_and_status_faults_apply_to_exec(nvcf: Emulator, gate: Gate) -> None:
    fid, _ = nvcf.add_function(gate, name="slow")
    nvcf.faults.add("invoke", status=503, times=1)
    r = execute(nvcf, fid)
    assert r.status_code == 503
    assert r.headers["Content-Type"] == "application/problem+json"
    assert gate.calls == 0  # instead of the invocation

    r = execute(nvcf, fid, {"requestHeader": {"pollDurationSeconds": 1}, "requestBody": {}})
    assert r.status_code == 202
    req_id = r.json()["reqId"]
    nvcf.faults.add("status", status=429, times=1)
    assert exec_status(nvcf, req_id).status_code == 429
    gate.open()
    done = exec_status(nvcf, req_id)  # the faulted poll left the result for this one
    assert done.status_code == 200
    assert done.json()["response"] == {"done": True}


# -- over a socket ---------------------------------------------------------------------------------


def test_exec_over_a_served_emulator(nvcf_server: EmulatorServer) -> None:
    emu = nvcf_server.emulator
    received: list[bytes] = []
    lock = threading.Lock()

    def echo(req: ContainerRequest) -> Any:
        with lock:
            received.append(req.body)
        return {"echo": req.json()}

    fid, vid = emu.add_function(echo, name="echo")
    r = requests.post(
        f"{nvcf_server.url}/v2/nvcf/exec/functions/{fid}/versions/{vid}",
        headers=emu.headers,
        json={"requestBody": {"b": [1, 2], "a": "z"}},
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "fulfilled" and doc["percentComplete"] == 100
    assert doc["response"] == {"echo": {"a": "z", "b": [1, 2]}}
    assert received == [b'{"a":"z","b":[1,2]}']
    unknown = requests.get(
        f"{nvcf_server.url}/v2/nvcf/exec/status/{doc['reqId']}", headers=emu.headers
    )
    assert unknown.status_code == 404
    assert unknown.json() == {"reqId": NIL, "status": "errored", "errorCode": 404}


def test_the_call_log_names_an_exec_calls_request(nvcf: Emulator) -> None:
    """The envelope has no ``NVCF-REQID`` header: the call log reads its ``reqId`` instead, so
    an exec call can be found by its request, as a pexec call can."""
    _, container = recorder()
    fid, _ = nvcf.add_function(container, name="echo")
    r = execute(nvcf, fid)
    assert r.status_code == 200
    (call,) = [c for c in nvcf.calls if c.path.startswith("/v2/nvcf/exec/functions/")]
    assert call.request_id == r.json()["reqId"]
    unknown = exec_status(nvcf, str(uuid.uuid4()))
    assert unknown.json()["reqId"] == NIL
    assert nvcf.calls[-1].request_id is None  # the nil id names no request
