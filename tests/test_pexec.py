"""pexec end to end, in-process: assets, invocation, container, client, and each way it fails."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi import FastAPI
from fastapi import Request as FastApiRequest
from flask import Flask, Response, request

from nvcf_emulator import Emulator
from nvcf_emulator.worker import ContainerRequest, ContainerResponse

from .conftest import Gate

API = "https://api.nvcf.nvidia.com"
MISSING_AUTH = "Header of type `authorization` was missing"


# -- containers ------------------------------------------------------------------------------------


def checksum_flask() -> Flask:
    """The seed's custom container: reads every asset from NVCF-ASSET-DIR, returns sha256s."""
    app = Flask("checksums")

    @app.get("/v2/health/ready")
    def ready() -> str:
        return "ok"

    @app.post("/infer")
    def infer() -> dict[str, Any]:
        asset_dir = Path(request.headers["NVCF-ASSET-DIR"])
        ids = request.headers["NVCF-FUNCTION-ASSET-IDS"].split(",")
        return {
            "sha256": {i: hashlib.sha256((asset_dir / i).read_bytes()).hexdigest() for i in ids},
            "assetDir": str(asset_dir),
            "payload": request.get_json(),
        }

    return app


def checksum_fastapi() -> FastAPI:
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/infer")
    async def infer(req: FastApiRequest) -> dict[str, Any]:
        asset_dir = Path(req.headers["nvcf-asset-dir"])
        ids = req.headers["nvcf-function-asset-ids"].split(",")
        return {
            "sha256": {i: hashlib.sha256((asset_dir / i).read_bytes()).hexdigest() for i in ids},
            "assetDir": str(asset_dir),
            "payload": await req.json(),
        }

    return app


# -- helpers -------------------------------------------------------------------------------------


def new_asset(
    data: bytes, key: str | None = None, emu: Emulator | None = None, base: str = API
) -> str:
    """Create and upload an asset the way the seed does it; returns its id."""
    auth = {"Authorization": f"Bearer {key or (emu.api_key if emu else '')}"}
    r = requests.post(
        f"{base}/v2/nvcf/assets",
        headers=auth,
        json={"contentType": "application/octet-stream", "description": "input"},
    )
    assert r.status_code == 200, r.text
    asset = r.json()
    put = requests.put(
        asset["uploadUrl"],
        data=data,
        headers={
            "Content-Type": "application/octet-stream",
            "x-amz-meta-nvcf-asset-description": "input",
        },
    )
    assert put.status_code == 200, put.text
    return str(asset["assetId"])


def invoke(
    emu: Emulator,
    fid: str,
    body: Any = None,
    *,
    vid: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    path = f"/v2/nvcf/pexec/functions/{fid}" + (f"/versions/{vid}" if vid else "")
    return requests.post(
        f"{API}{path}",
        headers={**emu.headers, **(headers or {})},
        json=body if body is not None else {"x": 1},
        allow_redirects=False,
        **kwargs,
    )


def poll(emu: Emulator, req_id: str, **headers: str) -> requests.Response:
    return requests.get(
        f"{API}/v2/nvcf/pexec/status/{req_id}",
        headers={**emu.headers, **headers},
        allow_redirects=False,
    )


def assert_problem(
    r: requests.Response, status: int, detail: str, type_: str | None = None
) -> None:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    doc = r.json()
    assert doc["status"] == status
    assert doc["detail"] == detail
    if type_ is not None:
        assert doc["type"] == type_


# -- the seed flow -------------------------------------------------------------------------------


@pytest.mark.parametrize("make_app", [checksum_flask, checksum_fastapi], ids=["flask", "fastapi"])
def test_seed_flow_container_reads_both_assets(nvcf: Emulator, make_app: Any) -> None:
    fid, _ = nvcf.add_function(make_app(), name="checksums", inference_url="/infer")
    first, second = b"red cat" * 1000, b"\x89PNG blue dog"
    a1, a2 = new_asset(first, emu=nvcf), new_asset(second, emu=nvcf)

    r = invoke(
        nvcf, fid, {"prompt": "compare"}, headers={"NVCF-INPUT-ASSET-REFERENCES": f"{a1}, {a2}"}
    )

    assert r.status_code == 200, r.text
    assert r.headers["NVCF-STATUS"] == "fulfilled"
    body = r.json()
    assert body["sha256"] == {
        a1: hashlib.sha256(first).hexdigest(),
        a2: hashlib.sha256(second).hexdigest(),
    }
    assert body["payload"] == {"prompt": "compare"}
    asset_dir = Path(body["assetDir"])
    assert asset_dir.name == r.headers["NVCF-REQID"]
    assert not asset_dir.exists()  # staged dir removed when the request ended
    record = nvcf.invocations[-1]
    assert record.request_id == r.headers["NVCF-REQID"]
    assert [p.name for p in record.staged_files] == [a1, a2]
    assert record.container_headers["NVCF-FUNCTION-ASSET-IDS"] == f"{a1},{a2}"
    assert record.response_status == 200
    assert record.duration is not None and record.duration >= 0
    # the stored assets are untouched
    assert nvcf.asset_bytes(a1) == first


def test_asset_root_is_configurable_and_keep_staged_keeps_it(tmp_path: Path) -> None:
    root = tmp_path / "var" / "inf" / "inputAssets"
    with Emulator(root_dir=tmp_path / "emu", asset_root=root, keep_staged=True) as emu:
        fid, _ = emu.add_function(checksum_flask(), name="checksums", inference_url="/infer")
        a1 = new_asset(b"one", emu=emu)
        r = invoke(emu, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": a1})
        assert r.status_code == 200
        staged = root / r.headers["NVCF-REQID"] / a1
        assert staged.read_bytes() == b"one"
        assert (staged.parent.stat().st_mode & 0o777) == 0o777
        out = emu.invocations[-1].output_dir
        assert out is not None and out.is_dir() and (out.stat().st_mode & 0o777) == 0o777


def test_container_cannot_change_the_stored_asset(nvcf: Emulator) -> None:
    def scribble(req: ContainerRequest) -> dict[str, str]:
        path = req.asset_path(req.asset_ids[0])
        path.write_bytes(b"overwritten")
        return {"ok": "yes"}

    fid, _ = nvcf.add_function(scribble, name="scribble")
    a1 = new_asset(b"original", emu=nvcf)
    assert invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": a1}).status_code == 200
    assert nvcf.asset_bytes(a1) == b"original"


# -- headers sent to the container ----------------------------------------------------------------


def test_a_wsgi_container_sees_each_header_once(nvcf: Emulator) -> None:
    """A WSGI container's environ holds each header once: a client's ``NVCF-POLL_SECONDS``
    (ngcsdk's spelling) is not forwarded beside the worker's NVCF-POLL-SECONDS."""
    seen: dict[str, str] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update({k: v for k, v in environ.items() if k.startswith("HTTP_")})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    fid, _ = nvcf.add_function(app, name="wsgi")
    r = invoke(nvcf, fid, headers={"NVCF-POLL_SECONDS": "7", "X-Trace": "abc"})
    assert r.status_code == 200, r.text
    assert seen["HTTP_NVCF_POLL_SECONDS"] == "6"  # what is left of 7 s, cut to whole seconds
    assert seen["HTTP_X_TRACE"] == "abc"
    assert seen["HTTP_HOST"].startswith("127.0.0.1:")


def test_headers_sent_to_the_container(nvcf: Emulator) -> None:
    seen: dict[str, str] = {}

    def echo(req: ContainerRequest) -> dict[str, bool]:
        seen.update(req.headers.items())
        return {"asset_dir_exists": req.asset_dir.exists(), "out": req.output_dir.is_dir()}

    fid, vid = nvcf.add_function(echo, name="echo")
    r = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}",
        headers={
            **nvcf.headers,
            "X-Custom": "kept",
            "NVCF-REQID": "forged",
            "NVCF-NCAID": "forged",
            "Connection": "keep-alive, X-Custom-Hop",
            "Keep-Alive": "timeout=5",
            "NVCF-POLL-SECONDS": "30",
        },
        data=b"raw bytes",
    )
    assert r.status_code == 200
    assert r.json() == {"asset_dir_exists": False, "out": True}
    got = {k.upper(): v for k, v in seen.items()}
    assert got["NVCF-REQID"] == r.headers["NVCF-REQID"]
    assert got["NVCF-NCAID"] == "nvcf-emulator-nca"
    assert got["NVCF-FUNCTION-ID"] == fid
    assert got["NVCF-FUNCTION-VERSION-ID"] == vid
    assert got["NVCF-FUNCTION-NAME"] == "echo"
    assert got["NVCF-MAX-RESPONSE-SIZE-BYTES"] == "5242880"
    assert got["NVCF-ASSET-DIR"].endswith(r.headers["NVCF-REQID"])
    assert got["NVCF-LARGE-OUTPUT-DIR"].endswith(r.headers["NVCF-REQID"])
    assert 29 <= int(got["NVCF-POLL-SECONDS"]) <= 30
    assert got["CONTENT-TYPE"] == "application/json"  # set when the client sent none
    assert got["X-CUSTOM"] == "kept"
    assert "NVCF-FUNCTION-ASSET-IDS" not in got  # only when assets are referenced
    for dropped in ("AUTHORIZATION", "CONNECTION", "KEEP-ALIVE"):
        assert dropped not in got
    record = nvcf.invocations[-1]
    assert record.request_body == b"raw bytes"
    assert record.request_headers["Authorization"] == "Bearer ***"


# -- the sync and async paths -------------------------------------------------------------------


def test_response_passes_through_with_status_and_content_type(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(
        lambda req: ("<b>hi</b>", 201, {"Content-Type": "text/html", "X-Model": "m1"}), name="h"
    )
    r = invoke(nvcf, fid)
    assert r.status_code == 201
    assert r.text == "<b>hi</b>"
    assert r.headers["Content-Type"] == "text/html"
    assert r.headers["X-Model"] == "m1"
    assert r.headers["Access-Control-Expose-Headers"] == "nvcf-reqid"


@pytest.mark.nvcf(always_async=True)
def test_always_async_gives_202_then_the_result_then_404(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: {"answer": 42}, name="fast")
    r = invoke(nvcf, fid)
    assert r.status_code == 202
    assert r.headers["NVCF-STATUS"] == "in-progress"
    assert r.content == b""
    req_id = r.headers["NVCF-REQID"]
    done = poll(nvcf, req_id)
    assert done.status_code == 200
    assert done.json() == {"answer": 42}
    assert done.headers["NVCF-REQID"] == req_id
    assert done.headers["NVCF-STATUS"] == "fulfilled"
    again = poll(nvcf, req_id)
    assert_problem(again, 404, f"Request id '{req_id}' not found")
    assert nvcf.invocations[-1].delivered == [202, 200]


def test_slow_container_202_then_poll_to_200(nvcf: Emulator, gate: Gate) -> None:
    fid, _ = nvcf.add_function(gate, name="slow")
    r = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "1"})
    assert r.status_code == 202
    req_id = r.headers["NVCF-REQID"]
    assert gate.entered.wait(5)
    gate.open()
    done = poll(nvcf, req_id)
    assert done.status_code == 200
    assert done.json() == {"done": True}


def test_two_polls_waiting_on_one_request_both_wake_with_the_result(
    nvcf: Emulator, gate: Gate
) -> None:
    fid, _ = nvcf.add_function(gate, name="slow")
    req_id = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "1"}).headers["NVCF-REQID"]
    assert gate.entered.wait(5)
    answers: list[int] = []

    def wait_long() -> None:  # a 30 s poll window: only the result can end it early
        answers.append(poll(nvcf, req_id, **{"NVCF-POLL-SECONDS": "30"}).status_code)

    pollers = [threading.Thread(target=wait_long) for _ in range(2)]
    for t in pollers:
        t.start()
    deadline = time.monotonic() + 5
    while nvcf.invocation_service._records[req_id]._waiters < 2:  # both are waiting now
        assert time.monotonic() < deadline
        time.sleep(0.001)
    gate.open()
    for t in pollers:
        t.join(10)
    assert not any(t.is_alive() for t in pollers), "a poll slept through the result"
    assert answers == [200, 200]


def test_control_plane_answers_while_containers_work(nvcf: Emulator, gate: Gate) -> None:
    nvcf.configure(always_async=True)
    fid, _ = nvcf.add_function(gate, name="slow")
    r = invoke(nvcf, fid)
    assert gate.entered.wait(5)
    listed = requests.get(f"{API}/v2/nvcf/functions", headers=nvcf.headers)
    assert listed.status_code == 200
    position = requests.get(
        f"{API}/v2/nvcf/queues/{r.headers['NVCF-REQID']}/position", headers=nvcf.headers
    )
    assert position.status_code == 200
    assert position.json() == {
        "functionId": fid,
        "functionVersionId": nvcf.invocations[-1].version_id,
        "positionInQueue": 0,
    }
    gate.open()
    assert poll(nvcf, r.headers["NVCF-REQID"]).status_code == 200


@pytest.mark.nvcf(always_async=True, worker_threads=1)
def test_queue_position_when_workers_are_busy(nvcf: Emulator, gate: Gate) -> None:
    fid, _ = nvcf.add_function(gate, name="slow")
    first = invoke(nvcf, fid).headers["NVCF-REQID"]
    assert gate.entered.wait(5)
    second = invoke(nvcf, fid).headers["NVCF-REQID"]
    url = f"{API}/v2/nvcf/queues/{second}/position"
    assert requests.get(url, headers=nvcf.headers).json()["positionInQueue"] == 1
    depth = requests.get(f"{API}/v2/nvcf/queues/functions/{fid}", headers=nvcf.headers).json()
    assert depth["queues"][0]["queueDepth"] == 1
    gate.open()
    assert poll(nvcf, first).status_code == 200
    assert poll(nvcf, second).status_code == 200


def test_container_answering_202_is_asked_again_on_the_next_poll(nvcf: Emulator) -> None:
    """Without the worker's compatibility mapping, NVCF forwards each status poll to a
    container that answered 202 (its default mapping does not: test_review_worker_conformance)."""
    answers = iter([ContainerResponse(202), ContainerResponse(200, b'{"v":2}')])
    fid, _ = nvcf.add_function(lambda req: next(answers), name="self-async")
    r = invoke(nvcf, fid, headers={"nvcf-feature-disable-worker-compatibility": "true"})
    assert r.status_code == 202
    assert r.headers["NVCF-STATUS"] == "in-progress"
    done = poll(nvcf, r.headers["NVCF-REQID"])
    assert done.status_code == 200
    assert done.content == b'{"v":2}'
    record = nvcf.invocations[-1]
    assert record.container_calls == 2
    first, second = record.container_requests
    assert (first.method, first.body) == ("POST", b'{"x": 1}')
    assert (second.method, second.body) == ("GET", b"")  # the status poll, forwarded
    assert second.header("NVCF-REQID") == record.request_id
    assert second.header("Authorization") is None


# -- progress --------------------------------------------------------------------------------------


def test_progress_file_gives_202_with_percent_and_partial_response(
    nvcf: Emulator, gate: Gate
) -> None:
    gate.before = lambda req: req.write_progress(40, {"frames": 4})
    fid, _ = nvcf.add_function(gate, name="progress")
    r = invoke(nvcf, fid)
    assert r.status_code == 202
    assert r.headers["NVCF-PERCENT-COMPLETE"] == "40"
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"frames": 4}
    gate.open()
    done = poll(nvcf, r.headers["NVCF-REQID"])
    assert done.status_code == 200
    assert "NVCF-PERCENT-COMPLETE" not in done.headers
    assert [u.progress for u in nvcf.invocations[-1].progress] == [40]


def test_progress_updates_queue_in_order_and_other_ids_are_ignored(nvcf: Emulator) -> None:
    def work(req: ContainerRequest) -> dict[str, bool]:
        progress = req.output_dir / "progress"
        progress.write_text(json.dumps({"id": "someone-else", "progress": 5}))
        _wait_until_read(nvcf)
        progress.write_text(
            json.dumps({"id": req.request_id, "progress": 9, "partialResponse": []})
        )
        _wait_until_read(nvcf)  # not an object: dropped, as NVCF's worker drops it
        req.write_progress(33.6)  # floats are rounded
        _wait_until_read(nvcf)
        req.write_progress(66, {"step": 2})
        _wait_until_read(nvcf)
        return {"done": True}

    nvcf.configure(always_async=True)
    fid, _ = nvcf.add_function(work, name="steps")
    req_id = invoke(nvcf, fid).headers["NVCF-REQID"]
    first, second, third = poll(nvcf, req_id), poll(nvcf, req_id), poll(nvcf, req_id)
    assert (first.status_code, first.headers["NVCF-PERCENT-COMPLETE"], first.json()) == (
        202,
        "34",
        None,
    )
    assert (second.headers["NVCF-PERCENT-COMPLETE"], second.json()) == ("66", {"step": 2})
    assert third.status_code == 200


def test_progress_is_seen_after_the_watcher_went_idle(nvcf: Emulator, gate: Gate) -> None:
    """One progress watcher lives as long as the emulator; an invocation wakes it when idle."""
    first, _ = nvcf.add_function(lambda req: {"ok": True}, name="quick")
    assert invoke(nvcf, first).status_code == 200
    service = nvcf.invocation_service
    watcher = service._watcher
    deadline = time.monotonic() + 5
    while not service._watcher_idle and time.monotonic() < deadline:
        time.sleep(0.002)  # the watcher notices within one progress interval (10 ms)
    assert service._watcher_idle and watcher is not None and watcher.is_alive()
    gate.before = lambda req: req.write_progress(40)
    slow, _ = nvcf.add_function(gate, name="slow")
    r = invoke(nvcf, slow, headers={"NVCF-POLL-SECONDS": "2"})
    assert r.status_code == 202
    assert r.headers["NVCF-PERCENT-COMPLETE"] == "40"  # the idle watcher was woken: it looked
    assert service._watcher is watcher  # the same thread, not one per invocation
    gate.open()
    assert poll(nvcf, r.headers["NVCF-REQID"]).status_code == 200


def _wait_until_read(emu: Emulator) -> None:
    """Let the watcher see the progress file before it is rewritten (it looks every 10 ms)."""
    record = emu.invocations[-1]
    before = record._progress_sig
    deadline = time.monotonic() + 5
    while record._progress_sig == before and time.monotonic() < deadline:
        time.sleep(0.002)


# -- large outputs -------------------------------------------------------------------------------


def _zip(url: str) -> zipfile.ZipFile:
    got = requests.get(url)  # no Authorization, as ngcsdk fetches it
    assert got.status_code == 200, got.text
    assert got.headers["Content-Type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(got.content))


def test_files_in_the_large_output_dir_come_back_as_302_zip(nvcf: Emulator) -> None:
    def render(req: ContainerRequest) -> dict[str, str]:
        (req.output_dir / "frames").mkdir()
        (req.output_dir / "frames" / "0001.png").write_bytes(b"png-bytes")
        req.write_progress(100)
        return {"frames": "1"}

    fid, _ = nvcf.add_function(render, name="render")
    r = invoke(nvcf, fid)
    req_id = r.headers["NVCF-REQID"]
    if r.status_code == 202:  # the progress update may be delivered first
        r = poll(nvcf, req_id)
    assert r.status_code == 302
    assert r.headers["NVCF-STATUS"] == "fulfilled"
    archive = _zip(r.headers["Location"])
    assert sorted(archive.namelist()) == [f"{req_id}.response", "frames/0001.png"]
    assert json.loads(archive.read(f"{req_id}.response")) == {"frames": "1"}
    assert archive.read("frames/0001.png") == b"png-bytes"
    assert nvcf.invocations[-1].output_files == ["frames/0001.png"]


@pytest.mark.nvcf(max_response_bytes=1000)
def test_result_over_the_inline_limit_is_a_302_valid_for_24_hours(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: b"x" * 1001, name="big")
    small_fid, _ = nvcf.add_function(lambda req: b"x" * 1000, name="small")
    assert invoke(nvcf, small_fid).status_code == 200
    r = invoke(nvcf, fid)
    assert r.status_code == 302
    location = r.headers["Location"]
    archive = _zip(location)
    assert archive.read(f"{r.headers['NVCF-REQID']}.response") == b"x" * 1001
    nvcf.clock.advance(24 * 3600 - 5)
    assert requests.get(location).status_code == 200
    nvcf.clock.advance(10)
    expired = requests.get(location)  # a pre-signed S3 GET in NVCF: S3's answer
    assert expired.status_code == 403 and "<Message>Request has expired</Message>" in expired.text


# -- SSE ------------------------------------------------------------------------------------------


def sse_app(gate: Gate) -> Flask:
    app = Flask("sse")

    @app.get("/v2/health/ready")
    def ready() -> str:
        return "ok"

    @app.post("/stream")
    def stream() -> Response:
        def events() -> Iterator[str]:
            yield "data: first\n\n"
            # The client opens the gate on reading the first event: that event must reach it
            # while the container is still at work.
            yield "data: second\n\n" if gate.opened.wait(5) else "data: gate never opened\n\n"

        return Response(events(), mimetype="text/event-stream")

    return app


def test_event_stream_is_forwarded_as_it_arrives(nvcf_server: Any, gate: Gate) -> None:
    emu: Emulator = nvcf_server.emulator
    fid, _ = emu.add_function(sse_app(gate), name="sse", inference_url="/stream")
    r = requests.post(
        f"{nvcf_server.url}/v2/nvcf/pexec/functions/{fid}",
        headers={**emu.headers, "Accept": "text/event-stream"},
        json={"prompt": "go"},
        stream=True,
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["NVCF-REQID"]
    lines = r.iter_lines()
    assert next(lines) == b"data: first"
    assert not gate.opened.is_set()  # the first event arrived while the container still works
    gate.open()
    assert [line for line in lines if line] == [b"data: second"]
    r.close()
    record = emu.invocations[-1]
    assert record.streaming and record.output_dir is not None
    assert not record.output_dir.exists()


def test_event_stream_in_process_arrives_as_it_comes(nvcf: Emulator, gate: Gate) -> None:
    fid, _ = nvcf.add_function(sse_app(gate), name="sse", inference_url="/stream")
    r = invoke(nvcf, fid, headers={"Accept": "text/event-stream"}, stream=True)
    assert r.status_code == 200
    lines = r.iter_lines()  # 512-byte reads: the 13-byte event must not wait for more
    assert next(lines) == b"data: first"
    assert not gate.opened.is_set()  # the first event arrived while the container still works
    gate.open()
    assert [line for line in lines if line] == [b"data: second"]
    r.close()
    assert nvcf.invocations[-1].poll_seconds == 1200  # the SSE default


def test_event_stream_in_process_read_whole(nvcf: Emulator, gate: Gate) -> None:
    gate.open()
    fid, _ = nvcf.add_function(sse_app(gate), name="sse", inference_url="/stream")
    r = invoke(nvcf, fid, headers={"Accept": "text/event-stream"})
    assert r.status_code == 200
    assert r.text == "data: first\n\ndata: second\n\n"


def test_streaming_mode_passes_container_errors_through_unchanged(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: ("nope", 418), name="teapot")
    r = invoke(nvcf, fid, headers={"Accept": "text/event-stream"})
    assert r.status_code == 418
    assert r.text == "nope"


# -- versions and accounts ------------------------------------------------------------------------


def test_version_specific_invoke(nvcf: Emulator) -> None:
    fid, v1 = nvcf.add_function(lambda req: {"v": 1}, name="model")
    _, v2 = nvcf.add_function(lambda req: {"v": 2}, name="model", function_id=fid)
    assert invoke(nvcf, fid, vid=v1).json() == {"v": 1}
    assert invoke(nvcf, fid, vid=v2).json() == {"v": 2}
    assert invoke(nvcf, fid).json() in ({"v": 1}, {"v": 2})
    assert nvcf.invocations[1].version_id == v2
    unknown = "00000000-0000-4000-8000-000000000000"
    r = invoke(nvcf, fid, vid=unknown)
    assert_problem(
        r,
        404,
        f"Function id '{fid}' version '{unknown}': Specified function in account "
        "'nvcf-emulator-nca' is not found",
    )


@pytest.mark.nvcf(api_keys={"nvapi-a": "nca-a", "nvapi-b": "nca-b"})
def test_asset_references_are_per_account(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(
        checksum_flask(), name="sums", inference_url="/infer", nca_id="nca-b"
    )
    a_asset = new_asset(b"belongs to a", key="nvapi-a")
    b_asset = new_asset(b"belongs to b", key="nvapi-b")
    as_b = {"Authorization": "Bearer nvapi-b"}
    r = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}",
        headers={**as_b, "NVCF-INPUT-ASSET-REFERENCES": f"{b_asset},{a_asset}"},
        json={},
    )
    assert_problem(r, 404, f"NotFound error: failed to find asset {a_asset}")
    assert nvcf.invocations == []  # the container was not called
    ok = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}",
        headers={**as_b, "NVCF-INPUT-ASSET-REFERENCES": b_asset},
        json={},
    )
    assert ok.status_code == 200
    assert ok.json()["sha256"] == {b_asset: hashlib.sha256(b"belongs to b").hexdigest()}
    # account a cannot invoke b's function at all, nor poll b's request
    as_a = {"Authorization": "Bearer nvapi-a"}
    r = requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", headers=as_a, json={})
    assert_problem(
        r,
        404,
        f"Function id '{fid}' version 'null': Specified function in account 'nca-a' is not found",
    )


# -- errors ---------------------------------------------------------------------------------------


def test_missing_authorization_is_text_plain_401(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: {}, name="f")
    r = requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", json={})
    assert r.status_code == 401
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text == MISSING_AUTH
    r = requests.get(f"{API}/v2/nvcf/pexec/status/{fid}")
    assert (r.status_code, r.text) == (401, MISSING_AUTH)
    bad = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}", headers={"Authorization": "Bearer x"}, json={}
    )
    assert bad.status_code == 401
    assert bad.headers["Content-Type"] == "application/problem+json"


def test_asset_reference_errors(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: {}, name="f")
    unknown = "6f1c2a4e-0000-4000-8000-000000000001"
    r = invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": unknown})
    assert_problem(r, 404, f"NotFound error: failed to find asset {unknown}")
    # NVCF's header extractor answers in text/plain, before the function is even looked up
    for bad_fid in (fid, "00000000-0000-4000-8000-00000000dead"):
        r = invoke(nvcf, bad_fid, headers={"NVCF-INPUT-ASSET-REFERENCES": f"{unknown},not-a-uuid"})
        assert r.status_code == 400
        assert r.headers["Content-Type"].startswith("text/plain")
        assert r.text == "invalid HTTP header (nvcf-input-asset-references)"
    # created but never uploaded
    created = requests.post(
        f"{API}/v2/nvcf/assets",
        headers=nvcf.headers,
        json={"contentType": "image/png", "description": "d"},
    ).json()["assetId"]
    r = invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": created})
    assert_problem(r, 404, f"NotFound error: failed to find asset {created}")
    # deleted, and expired
    deleted = new_asset(b"x", emu=nvcf)
    requests.delete(f"{API}/v2/nvcf/assets/{deleted}", headers=nvcf.headers)
    r = invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": deleted})
    assert_problem(r, 404, f"NotFound error: failed to find asset {deleted}")
    expiring = new_asset(b"x", emu=nvcf)
    nvcf.clock.advance(24 * 3600 + 1)
    r = invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": expiring})
    assert_problem(r, 404, f"NotFound error: failed to find asset {expiring}")
    assert nvcf.invocations == []
    # spaces and empty items are tolerated
    live = new_asset(b"x", emu=nvcf)
    r = invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": f",, {live} ,"})
    assert r.status_code == 200
    assert nvcf.invocations[-1].asset_ids == [live]
    upper = new_asset(b"x", emu=nvcf)
    r = invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": upper.upper()})
    assert r.status_code == 200  # parsed as a UUID, so case does not matter
    # the forms NVCF's parser (Rust's Uuid::parse_str) reads, and no others (Python's
    # uuid.UUID would also take "0x" prefixes, signs, underscores and stray hyphens)
    simple = live.replace("-", "")
    for form in (simple, "{" + live + "}", "urn:uuid:" + live):
        r = invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": form})
        assert r.status_code == 200, form
        assert nvcf.invocations[-1].asset_ids == [live]
    for form in ("0x" + simple[2:], "+" + simple[1:], simple[:8] + "-" + simple[8:], "{" + live):
        r = invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": form})
        assert (r.status_code, r.text) == (400, "invalid HTTP header (nvcf-input-asset-references)")


def test_container_error_status_becomes_problem_json(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: ({"error": "prompt too long"}, 400), name="picky")
    r = invoke(nvcf, fid)
    assert_problem(r, 400, "prompt too long", "urn:inference-service:problem-details:bad-request")
    assert r.json()["title"] == "Bad Request"
    assert r.json()["requestId"] == r.headers["NVCF-REQID"]
    assert r.json()["instance"] == f"/v2/nvcf/pexec/functions/{fid}"
    assert r.headers["NVCF-STATUS"] == "errored"
    fid2, _ = nvcf.add_function(lambda req: ("overloaded", 503), name="busy")
    r = invoke(nvcf, fid2)
    assert_problem(
        r, 503, "Inference error", "urn:inference-service:problem-details:service-unavailable"
    )


def test_container_that_raises_is_a_500_and_the_traceback_is_recorded(nvcf: Emulator) -> None:
    def broken(req: ContainerRequest) -> None:
        raise RuntimeError("CUDA out of memory")

    fid, _ = nvcf.add_function(broken, name="broken")
    r = invoke(nvcf, fid)
    assert_problem(
        r, 500, "Inference error", "urn:inference-service:problem-details:internal-server-error"
    )
    assert "CUDA out of memory" in (nvcf.invocations[-1].error or "")
    # the emulator keeps working
    assert requests.get(f"{API}/v2/nvcf/functions", headers=nvcf.headers).status_code == 200


@pytest.mark.nvcf(container_timeout=0.2)
def test_container_that_hangs_times_out_with_the_connection_error(
    nvcf: Emulator, gate: Gate
) -> None:
    fid, _ = nvcf.add_function(gate, name="stuck")
    r = invoke(nvcf, fid)
    assert_problem(
        r,
        500,
        "Inference connection error while making inference request",
        "urn:inference-connection:problem-details:internal-server-error",
    )
    assert r.headers["NVCF-STATUS"] == "errored"


def test_function_status_rules(nvcf: Emulator) -> None:
    fid, vid = nvcf.add_function(lambda req: {"ok": True}, name="f")
    not_found = (
        f"Function id '{fid}' version 'null': Specified function in account "
        "'nvcf-emulator-nca' is not found"
    )
    for status in ("INACTIVE", "DEPLOYING", "ERROR"):
        nvcf.set_function_status(fid, vid, status)
        assert_problem(invoke(nvcf, fid), 404, not_found)
    nvcf.set_function_status(fid, vid, "DEGRADED")
    assert_problem(
        invoke(nvcf, fid), 400, f"Function id '{fid}': DEGRADED function cannot be invoked"
    )
    nvcf.set_function_status(fid, vid, "DEGRADING")
    assert invoke(nvcf, fid).status_code == 200
    unknown = "11111111-2222-4333-8444-555555555555"
    assert_problem(
        invoke(nvcf, unknown),
        404,
        f"Function id '{unknown}' version 'null': Specified function in account "
        "'nvcf-emulator-nca' is not found",
    )


def test_request_body_limit_is_5_mib_inclusive(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: {"n": len(req.body)}, name="sink")
    exact = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, data=b"a" * 5242880
    )
    assert exact.status_code == 200
    assert exact.json() == {"n": 5242880}
    over = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, data=b"a" * 5242881
    )
    assert over.status_code == 413
    assert over.headers["Content-Type"] == "application/problem+json"
    assert len(nvcf.invocations) == 1


def test_poll_seconds_header(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: {"poll": req.header("NVCF-POLL-SECONDS")}, name="f")
    for bad in ("abc", "3601", "1.5", "-1", "1_0"):
        r = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": bad})
        assert r.status_code == 400, bad
        assert r.json()["detail"].startswith("failed to parse poll duration: NVCF-POLL-SECONDS")
    assert invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "0"}).json()["poll"] in ("0", "1")
    assert invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "3600"}).status_code == 200
    assert nvcf.invocations[-1].poll_seconds == 3600
    assert invoke(nvcf, fid).status_code == 200
    assert nvcf.invocations[-1].poll_seconds == 60  # the default
    # ngcsdk's spelling counts as the same header
    assert invoke(nvcf, fid, headers={"NVCF-POLL_SECONDS": "abc"}).status_code == 400
    assert invoke(nvcf, fid, headers={"NVCF-POLL_SECONDS": "7"}).status_code == 200
    assert nvcf.invocations[-1].poll_seconds == 7


def test_unknown_request_id_is_404(nvcf: Emulator) -> None:
    r = poll(nvcf, "7d7a3f4e-0000-4000-8000-00000000abcd")
    assert_problem(r, 404, "Request id '7d7a3f4e-0000-4000-8000-00000000abcd' not found")


@pytest.mark.nvcf(always_async=True)
def test_request_is_cancelled_when_nobody_polls_after_a_202(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: {"late": True}, name="f")
    r = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "5"})
    req_id = r.headers["NVCF-REQID"]
    nvcf.clock.advance(11)  # max(2 x 5 s, 10 s) without a poll
    assert_problem(poll(nvcf, req_id), 404, f"Request id '{req_id}' not found")


@pytest.mark.nvcf(always_async=True)
def test_request_record_lives_at_most_an_hour(nvcf: Emulator, gate: Gate) -> None:
    gate.before = lambda req: req.write_progress(10)  # so that the first poll answers at once
    fid, _ = nvcf.add_function(gate, name="f")
    req_id = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "3600"}).headers["NVCF-REQID"]
    nvcf.clock.advance(3599)
    assert poll(nvcf, req_id, **{"NVCF-POLL-SECONDS": "1"}).status_code == 202
    nvcf.clock.advance(2)
    assert poll(nvcf, req_id).status_code == 404


def test_reset_forgets_functions_and_invocations(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: {}, name="f")
    assert invoke(nvcf, fid).status_code == 200
    nvcf.reset()
    assert nvcf.invocations == []
    assert invoke(nvcf, fid).status_code == 404


# -- both modes -----------------------------------------------------------------------------------


def test_invoke_in_process_and_over_a_socket(api: Any) -> None:
    emu: Emulator = api.emulator

    def work(req: ContainerRequest) -> dict[str, Any]:
        (req.output_dir / "out.txt").write_text("file")
        return {"poll": req.header("NVCF-POLL-SECONDS")}

    fid, _ = emu.add_function(work, name="both")
    url = f"{api.base_url}/v2/nvcf/pexec/functions/{fid}"
    bad = requests.post(url, headers={**api.headers, "NVCF-POLL_SECONDS": "x"}, json={})
    assert bad.status_code == 400  # ngcsdk's underscore spelling is read in both modes
    r = requests.post(
        url, headers={**api.headers, "NVCF-POLL_SECONDS": "7"}, json={}, allow_redirects=False
    )
    assert r.status_code == 302
    location = r.headers["Location"]
    assert location.startswith(f"{api.base_url}/_nvcf/results/")
    archive = _zip(location)
    req_id = r.headers["NVCF-REQID"]
    assert json.loads(archive.read(f"{req_id}.response")) == {"poll": "6"}  # 7 s, cut
    assert archive.read("out.txt") == b"file"


def test_worker_threads_stop_with_the_emulator(tmp_path: Path) -> None:
    emu = Emulator(root_dir=tmp_path)
    with emu:
        fid, _ = emu.add_function(lambda req: {}, name="f")
        assert invoke(emu, fid).status_code == 200
        pool = emu.invocation_service._pool
        assert pool is not None
        watcher = emu.invocation_service._watcher
        threads = [*pool._threads, watcher]
        assert watcher is not None
        assert all(t is not None and t.is_alive() and t.daemon for t in threads)
    assert not any(t is not None and t.is_alive() for t in threads)


@pytest.mark.nvcf(admin_token="s3cret")
def test_result_download_needs_no_admin_token(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: b"x" * 10, name="big")
    nvcf.configure(max_response_bytes=5)
    r = invoke(nvcf, fid)
    assert r.status_code == 302
    assert _zip(r.headers["Location"]).read(f"{r.headers['NVCF-REQID']}.response") == b"x" * 10
    token = r.headers["Location"].split("/")[-2]
    wrong = r.headers["Location"].replace(token, "0" * len(token))
    assert requests.get(wrong).status_code == 404


def test_invocations_are_listed_for_server_mode(nvcf_server: Any) -> None:
    emu: Emulator = nvcf_server.emulator
    fid, _ = emu.add_function(lambda req: {"ok": True}, name="listed")
    r = requests.post(
        f"{nvcf_server.url}/v2/nvcf/pexec/functions/{fid}", headers=emu.headers, data=b"12345"
    )
    assert r.status_code == 200
    listed = requests.get(f"{nvcf_server.url}/_emulator/invocations").json()["invocations"]
    assert len(listed) == 1
    record = listed[0]
    assert record["requestId"] == r.headers["NVCF-REQID"]
    assert record["functionName"] == "listed"
    assert record["status"] == "fulfilled"
    assert record["requestBytes"] == 5
    assert record["responseStatus"] == 200
    assert record["delivered"] == [200]
    assert record["containerHeaders"]["NVCF-FUNCTION-ID"] == fid
    assert "Authorization" not in record["containerHeaders"]


def test_cors_preflight_on_invocation_paths(nvcf: Emulator) -> None:
    r = requests.options(
        f"{API}/v2/nvcf/pexec/functions/{uuid.uuid4()}",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert r.headers["Access-Control-Allow-Methods"] == "POST"
    assert r.headers["Access-Control-Allow-Headers"] == "authorization,content-type"
    # found by fuzzing: werkzeug's <path:...> does not match a decoded newline (%0A)
    for path in ("functions/a%0Ab", "functions/a%0Ab/versions/c", "status/a%0Ab"):
        assert requests.options(f"{API}/v2/nvcf/pexec/{path}").status_code == 200, path


def test_poll_window_runs_in_real_time_while_freezegun_freezes_time(
    nvcf: Emulator, gate: Gate
) -> None:
    from freezegun import freeze_time

    fid, _ = nvcf.add_function(gate, name="slow")
    with freeze_time("2031-01-01 00:00:00"):
        started = time.perf_counter()
        r = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "1"})
        elapsed = time.perf_counter() - started
    assert r.status_code == 202
    assert elapsed < 5  # not the gate's 10 s


def test_only_a_string_error_member_becomes_the_detail(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(
        lambda req: ({"error": {"code": 7}, "detail": "ignored"}, 422), name="shaped"
    )
    r = invoke(nvcf, fid)
    assert_problem(
        r, 422, "Inference error", "urn:inference-service:problem-details:unprocessable-entity"
    )


def test_compatibility_off_header_passes_the_answer_through(nvcf: Emulator) -> None:
    def work(req: ContainerRequest) -> Any:
        (req.output_dir / "left.txt").write_text("not zipped")
        return ({"error": "raw"}, 400)

    fid, _ = nvcf.add_function(work, name="raw")
    r = invoke(nvcf, fid, headers={"nvcf-feature-disable-worker-compatibility": "true"})
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"error": "raw"}
    assert r.headers["NVCF-STATUS"] == "errored"


def test_event_stream_in_process_with_httpx_arrives_as_it_is_written(
    nvcf: Emulator, gate: Gate
) -> None:
    import httpx

    def events(req: ContainerRequest) -> Iterator[str]:
        yield "data: first\n\n"
        gate.opened.wait(5)
        yield "data: second\n\n"

    fid, _ = nvcf.add_function(events, name="sse")
    with (
        httpx.Client() as client,
        client.stream(
            "POST",
            f"{API}/v2/nvcf/pexec/functions/{fid}",
            headers={**nvcf.headers, "Accept": "text/event-stream"},
            json={},
        ) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines) == "data: first"
        assert not gate.opened.is_set()
        gate.open()
        assert [line for line in lines if line] == ["data: second"]
