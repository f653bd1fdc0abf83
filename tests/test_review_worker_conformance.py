"""Worker <-> container conformance against NVIDIA's open-source NVCF worker and invocation service.

Sources (repo NVIDIA/nvcf):
- WORKER = src/compute-plane-services/worker-utils/worker/
- INV = src/invocation-plane-services/http-invocation/crates/server/

Where a test asserts something the Go worker only does through a library (goccy/go-json's
case-insensitive struct keys and sorted, HTML-escaped map encoding; Go's ``http.StatusText``),
its docstring names that library's file too. The tests that fail today assert NVCF's behaviour.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from flask import Flask, request

from nvcf_emulator import Emulator
from nvcf_emulator.worker import ContainerRequest, ContainerResponse

from .conftest import Gate

API = "https://api.nvcf.nvidia.com"
INFERENCE_SERVICE = "urn:inference-service:problem-details:"


def invoke(
    emu: Emulator,
    fid: str,
    headers: dict[str, str] | None = None,
    *,
    query: str = "",
    **kwargs: Any,
) -> requests.Response:
    kwargs.setdefault("json", {"x": 1})
    return requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}{query}",
        headers={**emu.headers, **(headers or {})},
        allow_redirects=False,
        timeout=30,
        **kwargs,
    )


def poll(emu: Emulator, req_id: str, seconds: int) -> requests.Response:
    return requests.get(
        f"{API}/v2/nvcf/pexec/status/{req_id}",
        headers={**emu.headers, "NVCF-POLL-SECONDS": str(seconds)},
        allow_redirects=False,
        timeout=30,
    )


def recorder(answer: Any = None) -> tuple[dict[str, str], Any]:
    """A container that records the headers it got (names upper-cased)."""
    seen: dict[str, str] = {}

    def work(req: ContainerRequest) -> Any:
        seen.update({k.upper(): v for k, v in req.headers.items()})
        return answer if answer is not None else {"ok": True}

    return seen, work


# -- a container answering 202 itself --------------------------------------------------------------


def test_container_202_in_default_mode_is_not_asked_again_on_a_status_poll(
    nvcf: Emulator,
) -> None:
    """WORKER/work.go makeRestRequest: with backwards compatibility on (the default: no
    ``nvcf-feature-disable-worker-compatibility``, no event stream), ``client`` is replaced by a
    closure that ignores the poll's request and selects only on the progress channel, the ONE
    ``longRequest`` (``lo.Async2``: a single result) and the poll timer. Once the container's
    202 was consumed from ``longRequest``, a status poll gets a progress 202 or a generated empty
    202 when its window ends; the container is never called again. Re-asking on each poll is the
    non-compatible path only (integration_test.go TestIntegrationNonBackwardsCompatible
    "inference-driven 202 polling"; TestIntegrationBackwardsCompatible has no such case)."""
    answers = iter([ContainerResponse(202), ContainerResponse(200, b'{"v":2}')])
    fid, _ = nvcf.add_function(lambda req: next(answers), name="self-async")
    r = invoke(nvcf, fid)
    assert r.status_code == 202
    later = poll(nvcf, r.headers["NVCF-REQID"], 1)
    assert later.status_code == 202, later.content  # the generated 202 of the poll window
    assert later.headers["NVCF-STATUS"] == "in-progress"
    assert later.content == b""
    assert nvcf.invocations[-1].container_calls == 1


def test_a_client_gone_after_a_containers_202_frees_its_worker_at_once(nvcf: Emulator) -> None:
    """WORKER/work.go makeRestRequest: with no poll within max(2 x poll, 10 s) after a 202,
    the worker cancels the request. Here the container answered 202 once (never to be asked
    again): once the client's window passes on the emulator clock, the request is cancelled
    and its staged dirs go, without waiting for another request or for container_timeout."""
    fid, _ = nvcf.add_function(lambda req: ContainerResponse(202), name="gone")
    r = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "1"})
    assert r.status_code == 202
    record = nvcf.invocations[-1]
    nvcf.clock.advance(11)  # past max(2 x 1 s, 10 s)
    deadline = time.monotonic() + 5
    while not record.done:
        assert time.monotonic() < deadline, "the worker still holds the abandoned request"
        time.sleep(0.01)
    assert record.status.value == "cancelled"
    assert record.container_calls == 1
    assert record.asset_dir is not None and not record.asset_dir.exists()


def test_container_202_reaches_the_client_with_its_body_and_headers(nvcf: Emulator) -> None:
    """WORKER/work.go mapBackwardsCompatibilityHttpResponse: a status below 400 (202 included),
    small and with no output files, is returned with ``Header: res.Header`` and the buffered
    body; makeRestRequest then sends that 202 through handleRestResponse -> SendResponse
    unchanged (the same in the non-compatible path). INV/src/routes/post_pexec.rs
    handle_streaming_response only appends NVCF-STATUS (in-progress) and NVCF-REQID."""

    def accepted(req: ContainerRequest) -> ContainerResponse:
        return ContainerResponse(
            202, b'{"queued":true}', [("Content-Type", "application/json"), ("X-Job", "7")]
        )

    fid, _ = nvcf.add_function(accepted, name="queued")
    r = invoke(nvcf, fid)
    assert r.status_code == 202
    assert r.headers["NVCF-STATUS"] == "in-progress"
    assert r.content == b'{"queued":true}'
    assert r.headers.get("X-Job") == "7"
    assert r.headers["Content-Type"] == "application/json"


# -- headers the container gets --------------------------------------------------------------------


def test_poll_seconds_header_is_the_remaining_window_truncated_to_whole_seconds(
    nvcf: Emulator,
) -> None:
    """WORKER/work.go createInferenceRequest: ``shiftedPollDuration := targetPollDuration -
    time.Since(work.RequestTime)`` and ``nvcf-poll-seconds = strconv.Itoa(int(
    shiftedPollDuration.Seconds()))``: Go's int() truncates, and some time always passed since
    the invocation service stamped RequestTime, so a 5 s window reaches the container as "4"
    and the 60 s default (getTargetPollDuration) as "59" (work_test.go TestCreateInferenceRequest
    asserts exactly this formula)."""
    seen, work = recorder()
    fid, _ = nvcf.add_function(work, name="poll-header")
    assert invoke(nvcf, fid, {"NVCF-POLL-SECONDS": "5"}).status_code == 200
    assert seen["NVCF-POLL-SECONDS"] == "4"
    assert invoke(nvcf, fid).status_code == 200
    assert seen["NVCF-POLL-SECONDS"] == "59"


@pytest.mark.parametrize("accept", ["text/event-stream; charset=utf-8", "TEXT/EVENT-STREAM"])
def test_only_an_exact_event_stream_accept_gets_the_20_minute_default_window(
    nvcf: Emulator, accept: str
) -> None:
    """INV/src/routes/post_pexec.rs poll_duration: the 1200 s default applies only when
    ``Accept`` equals ``mime::TEXT_EVENT_STREAM.essence_str()`` byte for byte
    (``.filter(|accept| *accept == ...)``); any other value, parameters or upper case included,
    keeps the 60 s default, although the worker (work.go shouldHandleBackwardsCompatibility,
    mime.ParseMediaType) still treats the request as streaming."""
    seen, work = recorder()
    fid, _ = nvcf.add_function(work, name="sse-window")
    r = invoke(nvcf, fid, {"Accept": accept})
    assert r.status_code == 200
    assert int(seen["NVCF-POLL-SECONDS"]) <= 60


def test_connection_listed_client_headers_do_not_reach_the_container(nvcf: Emulator) -> None:
    """INV/src/routes/http_headers.rs remove_hop_by_hop_headers (called by post_pexec.rs pexec
    before the headers go to the worker) drops every header named in ``Connection`` (RFC 7230
    §6.1), as its test_remove_headers_listed_in_connection_header checks."""
    seen, work = recorder()
    fid, _ = nvcf.add_function(work, name="hop")
    r = invoke(nvcf, fid, {"Connection": "X-Secret", "X-Secret": "1", "X-Kept": "2"})
    assert r.status_code == 200
    assert seen.get("X-KEPT") == "2"
    assert "X-SECRET" not in seen


# -- the error mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "title"),
    [
        (413, "Request Entity Too Large"),
        (414, "Request URI Too Long"),
        (418, "I'm a teapot"),
        (422, "Unprocessable Entity"),
        (499, ""),
    ],
)
def test_container_error_title_and_type_follow_gos_status_text(
    nvcf: Emulator, status: int, title: str
) -> None:
    """WORKER/response/error.go CreateErrorResponse: ``title = http.StatusText(code)`` and the
    type suffix is ``strings.ReplaceAll(strings.ToLower(title), " ", "-")`` (only spaces
    replaced, so "i'm-a-teapot"). Go's table (golang/go src/net/http/status.go) says "Request
    URI Too Long", "I'm a teapot"; an unknown code has "" (response/error_extra_test.go
    TestCreateErrorResponseUnknownStatusCode: type ends in "problem-details:"; protojson then
    leaves the empty title out). 413 and 422 pass on Python 3.11 but not on 3.13, whose
    http.HTTPStatus renamed them."""
    fid, _ = nvcf.add_function(lambda req: ({"error": "boom"}, status), name=f"e{status}")
    r = invoke(nvcf, fid)
    assert r.status_code == status
    doc = r.json()
    assert doc["type"] == INFERENCE_SERVICE + title.lower().replace(" ", "-")
    assert doc.get("title", "") == title
    assert doc["detail"] == "boom"


def test_container_error_member_is_matched_case_insensitively(nvcf: Emulator) -> None:
    """WORKER/work.go mapBackwardsCompatibilityHttpResponse unmarshals the body into
    ``ErrorBody{Error string `json:"error"`}`` with github.com/goccy/go-json, whose struct
    decoder matches keys case-insensitively as encoding/json does (goccy/go-json
    internal/decoder/struct.go decodeKeyByBitmapUint8: ``largeToSmallTable[c]``): a Triton-ish
    ``{"Error": "..."}`` is the detail too (inferred from the library, not an NVCF test)."""
    fid, _ = nvcf.add_function(lambda req: ({"Error": "model exploded"}, 500), name="cap")
    r = invoke(nvcf, fid)
    assert r.status_code == 500
    assert r.json()["detail"] == "model exploded"


def test_error_status_with_output_files_is_problem_json_not_a_302(nvcf: Emulator) -> None:
    """WORKER/work.go mapBackwardsCompatibilityHttpResponse checks ``res.StatusCode >=
    http.StatusBadRequest`` before it looks at the scanned artifacts: a 4xx that left files in
    NVCF-LARGE-OUTPUT-DIR is still the problem JSON, never a zip."""

    def work(req: ContainerRequest) -> Any:
        (req.output_dir / "partial.bin").write_bytes(b"half")
        return {"error": "bad prompt"}, 400

    fid, _ = nvcf.add_function(work, name="err-with-files")
    r = invoke(nvcf, fid)
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["type"] == INFERENCE_SERVICE + "bad-request"
    assert r.json()["detail"] == "bad prompt"


# -- the progress file -----------------------------------------------------------------------------


def test_progress_file_keys_are_matched_case_insensitively(nvcf: Emulator, gate: Gate) -> None:
    """WORKER/progress/progress.go monitorProgress decodes the file into ``Progress{RequestId
    `json:"id"`, PercentComplete uint32 `json:"progress"`, PartialResponse map[string]any
    `json:"partialResponse"`}`` with goccy/go-json, whose keys match case-insensitively
    (internal/decoder/struct.go): ``{"ID", "Progress", "PartialResponse"}`` is an update
    (inferred from the library)."""

    def write(req: ContainerRequest) -> None:
        doc = {"ID": req.request_id, "Progress": 30, "PartialResponse": {"k": 1}}
        (req.output_dir / "progress").write_text(json.dumps(doc))

    gate.before = write
    fid, _ = nvcf.add_function(gate, name="progress-case")
    r = invoke(nvcf, fid, {"NVCF-POLL-SECONDS": "3"})
    assert r.status_code == 202
    assert r.headers.get("NVCF-PERCENT-COMPLETE") == "30"
    assert r.json() == {"k": 1}


def test_progress_partial_response_is_reencoded_as_the_go_worker_encodes_it(
    nvcf: Emulator, gate: Gate
) -> None:
    """WORKER/progress/progress.go: ``json.Unmarshal`` into ``map[string]any`` (numbers are
    float64) then ``json.Marshal(progress.PartialResponse)`` is the 202's body: keys sorted,
    ``<``/``>``/``&`` escaped, ``1.0`` written as ``1`` (goccy/go-json, as encoding/json)."""

    def write(req: ContainerRequest) -> None:
        doc = {"id": req.request_id, "progress": 50, "partialResponse": {"z": 1.0, "a": "<b>"}}
        (req.output_dir / "progress").write_text(json.dumps(doc))

    gate.before = write
    fid, _ = nvcf.add_function(gate, name="progress-encoding")
    r = invoke(nvcf, fid, {"NVCF-POLL-SECONDS": "3"})
    assert r.status_code == 202
    assert r.content == b'{"a":"\\u003cb\\u003e","z":1}'


# -- response headers back to the client -----------------------------------------------------------


def test_container_expose_headers_are_kept_next_to_nvcf_reqid(nvcf: Emulator) -> None:
    """INV/tests/test_response_headers.rs test_all_response_headers_returned: the container's
    own ``Access-Control-Expose-Headers`` values reach the client, and post_pexec.rs
    handle_streaming_response ``try_append``s ``nvcf-reqid`` next to them (it does not replace
    them)."""
    fid, _ = nvcf.add_function(
        lambda req: (
            {"ok": True},
            200,
            [("Access-Control-Expose-Headers", "x-header1, x-header2"), ("X-Header1", "foo")],
        ),
        name="expose",
    )
    r = invoke(nvcf, fid)
    assert r.status_code == 200
    exposed = {v.strip() for v in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed == {"nvcf-reqid", "x-header1", "x-header2"}
    assert r.headers["X-Header1"] == "foo"


def test_headers_the_container_lists_in_connection_do_not_reach_the_client(
    nvcf: Emulator,
) -> None:
    """WORKER/httpstream/request_stream.go SendResponse calls removeHopByHopHeaders
    (httpstream/hop_headers.go, copied from httputil.ReverseProxy), which first deletes every
    header named in the response's ``Connection`` (RFC 7230 §6.1), then the fixed list."""
    fid, _ = nvcf.add_function(
        lambda req: (
            {"ok": True},
            200,
            [("Connection", "X-Private"), ("X-Private", "1"), ("X-Public", "2")],
        ),
        name="hop-response",
    )
    r = invoke(nvcf, fid)
    assert r.status_code == 200
    assert r.headers.get("X-Public") == "2"
    assert "X-Private" not in r.headers


# -- what is forwarded (pins) ----------------------------------------------------------------------


def test_client_query_string_is_not_forwarded_to_the_inference_url(nvcf: Emulator) -> None:
    """INV/src/routes/post_pexec.rs pexec: outside the TLB, ``request_path`` is the version's
    ``default_path`` (its inferenceUrl), not the client's path and query; WORKER/work.go
    createInferenceRequest calls ``inferenceUrlWithoutPath + work.RequestPath`` with the
    client's method."""
    app = Flask("query")

    @app.get("/v2/health/ready")
    def ready() -> str:
        return "ok"

    @app.post("/infer")
    def infer() -> dict[str, str]:
        return {"path": request.path, "query": request.query_string.decode()}

    fid, _ = nvcf.add_function(app, name="query", inference_url="/infer")
    r = invoke(nvcf, fid, query="?debug=1")
    assert r.status_code == 200
    assert r.json() == {"path": "/infer", "query": ""}


def test_repeated_asset_references_stay_repeated_in_the_asset_ids_header(
    nvcf: Emulator,
) -> None:
    """INV/src/routes/input_asset_header.rs InputAssetHeader::decode splits, trims and parses
    without de-duplicating; post_pexec.rs request_assets maps each id to an
    InputAssetReference; WORKER/work.go createInferenceRequest joins them all with ","."""
    asset = requests.post(
        f"{API}/v2/nvcf/assets",
        headers=nvcf.headers,
        json={"contentType": "text/plain", "description": "d"},
        timeout=30,
    ).json()
    put = requests.put(
        asset["uploadUrl"],
        data=b"hi",
        headers={"Content-Type": "text/plain", "x-amz-meta-nvcf-asset-description": "d"},
        timeout=30,
    )
    assert put.status_code == 200
    seen, work = recorder()
    fid, _ = nvcf.add_function(work, name="dupes")
    aid = asset["assetId"]
    r = invoke(nvcf, fid, {"NVCF-INPUT-ASSET-REFERENCES": f"{aid}, {aid}"})
    assert r.status_code == 200
    assert seen["NVCF-FUNCTION-ASSET-IDS"] == f"{aid},{aid}"


def test_client_values_for_worker_owned_and_region_headers_are_replaced(nvcf: Emulator) -> None:
    """WORKER/work.go createInferenceRequest skips client headers in ``workerOwnedHeaders``
    (e.g. nvcf-large-output-dir, nvcf-function-asset-ids) and Sets nvcf-poll-seconds itself;
    INV/src/routes/http_headers.rs inject_invocation_region_header ``insert``s the service's
    NVCF-INVOCATION-REGION over any client value (test invocation_region_header_replaces_
    client_value). A feature flag such as nvcf-feature-disable-worker-compatibility is an
    ordinary client header: it reaches the container."""
    seen, work = recorder()
    fid, _ = nvcf.add_function(work, name="owned")
    r = invoke(
        nvcf,
        fid,
        {
            "NVCF-LARGE-OUTPUT-DIR": "/forged",
            "NVCF-FUNCTION-ASSET-IDS": "forged",
            "NVCF-INVOCATION-REGION": "forged",
            "NVCF-POLL-SECONDS": "30",
            "nvcf-feature-disable-worker-compatibility": "true",
        },
    )
    assert r.status_code == 200
    assert seen["NVCF-LARGE-OUTPUT-DIR"] != "/forged"
    assert "NVCF-FUNCTION-ASSET-IDS" not in seen
    assert seen["NVCF-INVOCATION-REGION"] != "forged"
    assert int(seen["NVCF-POLL-SECONDS"]) <= 30
    assert seen["NVCF-FEATURE-DISABLE-WORKER-COMPATIBILITY"] == "true"


def test_content_type_defaults_even_with_the_compatibility_flag_off(nvcf: Emulator) -> None:
    """WORKER/work.go createInferenceRequest: the application/json default depends on the
    worker's config (``!w.config.V3BackwardsCompatibilityDisabled``), not on the per-request
    ``nvcf-feature-disable-worker-compatibility`` header, so a body sent without Content-Type
    is still labelled application/json for the container."""
    seen, work = recorder()
    fid, _ = nvcf.add_function(work, name="ctype")
    r = invoke(
        nvcf,
        fid,
        {"nvcf-feature-disable-worker-compatibility": "true"},
        json=None,
        data=b"raw",
    )
    assert r.status_code == 200
    assert seen["CONTENT-TYPE"] == "application/json"


def test_closing_with_a_state_dir_does_not_wait_for_a_request_parked_after_a_202(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a state dir, closing gives running requests up to 5 s to finish. A request whose
    container answered 202 in the default mode is never asked again: only its client's going
    or its hour can end it, so closing does not wait for it; it is cancelled (a status poll
    after a restart gets 404) and its staged dirs go. (The grace is made 20 s here, so that
    waiting for the request is seconds away from the bound on a loaded machine.)"""
    monkeypatch.setattr(Emulator, "SHUTDOWN_GRACE", 20.0)
    state = tmp_path / "state"
    emu = Emulator(state_dir=state)
    with emu:
        fid, _ = emu.add_function(lambda req: ContainerResponse(202), name="parked")
        r = invoke(emu, fid, headers={"NVCF-POLL-SECONDS": "1"})
        assert r.status_code == 202
        record = emu.invocations[-1]
        started = time.monotonic()
    assert time.monotonic() - started < 6  # not the 20 s grace
    assert record.done and record.status.value == "cancelled"
    assert record.asset_dir is not None and not record.asset_dir.exists()
    with Emulator(state_dir=state) as again:
        assert poll(again, r.headers["NVCF-REQID"], 1).status_code == 404
