"""Review of the worker's container adapters, read as a user whose real container is a FastAPI
app, a Flask app, a plain callable or a server already running on a port.

Every server, thread and event loop a test starts is stopped; real waits stay under ~1 s
(small ``container_timeout`` values).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import StreamingResponse
from flask import Flask, Response, send_file

from nvcf_emulator import Emulator
from nvcf_emulator.worker import AsgiContainer, ContainerRequest, WsgiContainer

API = "https://api.nvcf.nvidia.com"
CONNECTION_ERROR = "Inference connection error while making inference request"


def invoke(
    emu: Emulator, fid: str, *, stream: bool = False, timeout: float = 5, **kwargs: Any
) -> requests.Response:
    headers = {**emu.headers, **kwargs.pop("headers", {})}
    if stream:
        headers["Accept"] = "text/event-stream"
    kwargs.setdefault("json", {"x": 1})
    return requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}",
        headers=headers,
        allow_redirects=False,
        timeout=timeout,
        stream=stream,
        **kwargs,
    )


def wait_for(check: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def quick(emu: Emulator) -> str:
    """A function that answers at once: proves a worker thread is free."""
    return emu.add_function(lambda req: {"ok": True}, name="quick").function_id


# -- (a) FastAPI / ASGI -------------------------------------------------------------------------


def lifespan_app(events: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        app.state.model = "weights"
        yield {"tokenizer": "tok"}
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": app.state.model == "weights"}

    @app.post("/")
    async def infer(request: Request) -> dict[str, str]:
        return {"model": request.app.state.model, "tokenizer": request.state.tokenizer}

    return app


def test_fastapi_lifespan_runs_once_per_function_and_shuts_down_with_the_emulator() -> None:
    events: list[str] = []
    with Emulator() as emu:
        fid = emu.add_function(lifespan_app(events), name="lifespan").function_id
        for _ in range(3):
            r = invoke(emu, fid)
            assert r.status_code == 200, r.text
            assert r.json() == {"model": "weights", "tokenizer": "tok"}
        assert events == ["startup"]
    assert events == ["startup", "shutdown"]


def test_fastapi_lifespan_that_fails_refuses_the_function() -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no GPU for the model")
        yield

    app = FastAPI(lifespan=lifespan)
    with Emulator() as emu:
        with pytest.raises(RuntimeError, match="no GPU for the model"):
            emu.add_function(app, name="broken")
        assert emu.functions.all() == []


def test_fastapi_background_task_does_not_hold_back_the_answer() -> None:
    released = threading.Event()
    ran: list[str] = []
    app = FastAPI()
    app.get("/v2/health/ready")(lambda: {"ok": True})

    async def cleanup() -> None:
        while not released.is_set():
            await asyncio.sleep(0.01)
        ran.append("cleanup")

    @app.post("/")
    async def infer(background: BackgroundTasks) -> dict[str, bool]:
        background.add_task(cleanup)
        return {"ok": True}

    # An answer held back for the task would come at the container timeout (10 s) or never:
    # the client's 5 s read timeout fails it, and leaves a loaded machine seconds of slack.
    with Emulator(container_timeout=10) as emu:
        fid = emu.add_function(app, name="bg").function_id
        try:
            r = invoke(emu, fid, timeout=5)
            assert r.status_code == 200
            assert r.json() == {"ok": True}
        finally:
            released.set()
        wait_for(lambda: ran == ["cleanup"], "the background task to finish")


def test_fastapi_stream_is_not_buffered_and_sees_the_client_go() -> None:
    go = threading.Event()
    ended: list[str] = []
    app = FastAPI()
    app.get("/v2/health/ready")(lambda: {"ok": True})

    @app.post("/")
    async def infer(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            try:
                yield b"data: first\n\n"
                while not go.is_set():
                    await asyncio.sleep(0.01)
                n = 0
                while not await request.is_disconnected():
                    n += 1
                    yield f"data: {n}\n\n".encode()
                    await asyncio.sleep(0.01)
                ended.append("disconnected")
            finally:
                ended.append("closed")

        return StreamingResponse(events(), media_type="text/event-stream")

    with Emulator() as emu:
        fid = emu.add_function(app, name="sse").function_id
        with invoke(emu, fid, stream=True, timeout=2) as r:
            assert r.status_code == 200
            chunks = r.iter_content(None)
            assert next(chunks) == b"data: first\n\n"  # before the app may go on
            go.set()
            assert next(chunks).startswith(b"data: ")
        wait_for(lambda: "closed" in ended, "the app's stream to end after the client left")


def test_asgi_app_that_never_answers_frees_its_worker_at_the_timeout() -> None:
    async def hang(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v2/health/ready":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["type"] == "http":
            await asyncio.sleep(30)

    with Emulator(container_timeout=0.3, worker_threads=1) as emu:
        fid = emu.add_function(hang, name="hang").function_id
        r = invoke(emu, fid)
        assert r.status_code == 500
        assert r.json()["detail"] == CONNECTION_ERROR
        t0 = time.monotonic()
        assert invoke(emu, quick(emu)).json() == {"ok": True}  # the one worker is free again
        # A worker held by the app would serve the call only after its 30 s sleep (the client
        # gives up at 5 s): 4 s leaves a loaded machine seconds of slack.
        assert time.monotonic() - t0 < 4.0


# -- (b) Flask / WSGI ---------------------------------------------------------------------------


def test_wsgi_exc_info_before_any_body_replaces_the_answer() -> None:
    """PEP 3333: start_response(..., exc_info) before the headers went out replaces them (a
    server raises only once they are sent); the app's own error page reaches the client."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/v2/health/ready":
            start_response("200 OK", [])
            return [b""]
        start_response("200 OK", [("Content-Type", "application/json")])
        try:
            raise ValueError("bad input")
        except ValueError:
            start_response(
                "422 Unprocessable Entity",
                [("Content-Type", "application/json")],
                sys.exc_info(),
            )
        return [b'{"error": "bad input: x must be positive"}']

    with Emulator() as emu:
        fid = emu.add_function(app, name="exc-info").function_id
        r = invoke(emu, fid)
        assert r.status_code == 422
        assert r.json()["detail"] == "bad input: x must be positive"


def test_wsgi_write_callable_used_while_iterating_loses_nothing() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"a")
        yield b"b"
        write(b"c")
        yield b"d"

    with Emulator() as emu:
        fid = emu.add_function(app, name="write", health_uri="/").function_id
        r = invoke(emu, fid)
        assert r.status_code == 200
        assert r.content == b"abcd"


def test_flask_send_file_and_a_streamed_generator_closed_when_the_client_goes(
    tmp_path: Any,
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    (tmp_path / "blob.bin").write_bytes(data)
    closed = threading.Event()
    app = Flask(__name__)
    app.get("/v2/health/ready")(lambda: "ok")

    @app.post("/file")
    def file() -> Response:
        return send_file(tmp_path / "blob.bin", mimetype="application/octet-stream")

    @app.post("/sse")
    def sse() -> Response:
        def gen() -> Iterator[str]:
            try:
                while True:
                    yield "data: tick\n\n"
                    time.sleep(0.01)
            finally:
                closed.set()

        return Response(gen(), mimetype="text/event-stream")

    with Emulator(max_response_bytes=2 << 20) as emu:
        fid = emu.add_function(app, name="file", inference_url="/file").function_id
        r = invoke(emu, fid)
        assert r.status_code == 200
        assert r.content == data
        sid = emu.add_function(app, name="sse", inference_url="/sse").function_id
        with invoke(emu, sid, stream=True) as r:
            assert next(r.iter_content(None)).startswith(b"data: tick")
        assert closed.wait(2)


def test_wsgi_body_that_never_ends_frees_its_worker_at_the_timeout() -> None:
    stopped = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        if environ["PATH_INFO"] == "/v2/health/ready":
            yield b"{}"
            return
        try:
            while True:
                yield b" "
                time.sleep(0.005)
        finally:
            stopped.set()

    assert WsgiContainer(app).health("/", 8000, timeout=0.1) == 0  # a probe gives up too
    assert stopped.wait(5)
    stopped.clear()
    with Emulator(container_timeout=0.3, worker_threads=1) as emu:
        fid = emu.add_function(app, name="forever").function_id
        r = invoke(emu, fid)
        assert r.status_code == 500
        assert r.json()["detail"] == CONNECTION_ERROR
        assert stopped.wait(5)  # the worker let go of the app (and its memory)
        assert invoke(emu, quick(emu)).json() == {"ok": True}


# -- (c) a plain callable -----------------------------------------------------------------------


def test_callable_stream_failing_midway_is_an_inference_connection_error() -> None:
    def infer(req: ContainerRequest) -> Iterator[str]:
        yield "data: 1\n\n"
        raise RuntimeError("GPU fell off the bus")

    with Emulator() as emu:
        fid = emu.add_function(infer, name="midway").function_id
        r = invoke(emu, fid)
        assert r.status_code == 500
        assert r.json()["type"] == "urn:inference-connection:problem-details:internal-server-error"
        assert r.json()["detail"] == CONNECTION_ERROR
        assert "GPU fell off the bus" in (emu.invocations[-1].error or "")


# -- (d) a server already running ---------------------------------------------------------------


class _Server:
    """A threading HTTP server on loopback, with a handler class given per test."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(2)


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[_Server]:
    server = _Server(handler)
    try:
        yield server
    finally:
        server.stop()


class _Base(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # health
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))


def test_url_http10_event_stream_is_forwarded_event_by_event() -> None:
    """An HTTP/1.0 server (no chunking: the body ends when it closes) streaming events: each
    reaches the client as it comes, not once 64 KiB have gathered."""
    go = threading.Event()

    class Handler(_Base):
        protocol_version = "HTTP/1.0"

        def do_POST(self) -> None:
            self.body()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b"data: first\n\n")
            self.wfile.flush()
            go.wait(2)
            self.wfile.write(b"data: second\n\n")

    with serving(Handler) as server, Emulator() as emu:
        fid = emu.add_function(server.url, name="h10").function_id
        try:
            with invoke(emu, fid, stream=True, timeout=1) as r:
                assert r.status_code == 200
                chunks = r.iter_content(None)
                assert next(chunks) == b"data: first\n\n"
                go.set()
                assert b"".join(chunks) == b"data: second\n\n"
        finally:
            go.set()


def test_url_server_that_closes_mid_body_is_an_inference_connection_error() -> None:
    class Handler(_Base):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.body()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b'{"partial":')
            self.close_connection = True

    with serving(Handler) as server, Emulator() as emu:
        fid = emu.add_function(server.url, name="cut").function_id
        r = invoke(emu, fid)
        assert r.status_code == 500
        assert r.json()["detail"] == CONNECTION_ERROR


def test_url_slow_server_hits_the_container_timeout() -> None:
    release = threading.Event()

    class Handler(_Base):
        def do_POST(self) -> None:
            self.body()
            release.wait(15)  # far beyond the client's 5 s: a missed timeout fails the call
            with contextlib.suppress(OSError):
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

    with serving(Handler) as server, Emulator(container_timeout=0.3, worker_threads=1) as emu:
        fid = emu.add_function(server.url, name="slow").function_id
        try:
            t0 = time.monotonic()
            r = invoke(emu, fid)
            assert r.status_code == 500
            assert r.json()["detail"] == CONNECTION_ERROR
            assert time.monotonic() - t0 < 4.0  # container_timeout (0.3 s), not the server's 15 s
            assert invoke(emu, quick(emu)).json() == {"ok": True}
        finally:
            release.set()


def test_url_headers_reach_the_server_as_the_worker_sends_them() -> None:
    seen: list[list[tuple[str, str]]] = []

    class Handler(_Base):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            data = self.body()
            seen.append(list(self.headers.items()))
            self.send_response(307)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with serving(Handler) as server, Emulator() as emu:
        fid = emu.add_function(server.url, name="hdrs").function_id
        big = b"x" * (3 << 20)
        r = invoke(emu, fid, data=big, headers={"X-Trace": "t-1", "Content-Type": "text/plain"})
        assert r.status_code == 307  # the container's redirect is the client's, not followed
        assert r.headers["Location"] == "/elsewhere"
        assert r.content == big
        names = {k.lower(): v for k, v in seen[-1]}
        assert names["x-trace"] == "t-1"
        assert names["content-type"] == "text/plain"
        assert names["content-length"] == str(len(big))
        assert names["nvcf-reqid"] == r.headers["NVCF-REQID"]
        assert "authorization" not in names


def test_emulator_close_stops_the_asgi_loop_thread() -> None:
    app = FastAPI()
    app.get("/v2/health/ready")(lambda: {"ok": True})
    with Emulator() as emu:
        ref = emu.add_function(app, name="a")
        container = ref.container
        assert isinstance(container, AsgiContainer)
    assert not container._thread.is_alive()


def test_asgi_app_with_no_container_timeout_answers() -> None:
    """``container_timeout=inf`` (no limit) is a valid setting: the ASGI bridge must not turn
    it into a wait it cannot make."""
    app = FastAPI()
    app.get("/v2/health/ready")(lambda: {"ok": True})
    app.post("/")(lambda: {"answer": 42})
    with Emulator(container_timeout=float("inf")) as emu:
        fid = emu.add_function(app, name="no-limit").function_id
        r = invoke(emu, fid)
        assert r.status_code == 200, r.text
        assert r.json() == {"answer": 42}


def test_url_container_with_no_container_timeout_answers() -> None:
    class Handler(_Base):
        def do_POST(self) -> None:
            self.body()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "13")
            self.end_headers()
            self.wfile.write(b'{"answer":42}')

    with serving(Handler) as server, Emulator(container_timeout=float("inf")) as emu:
        fid = emu.add_function(server.url, name="no-limit-url").function_id
        r = invoke(emu, fid)
        assert r.status_code == 200, r.text
        assert r.json() == {"answer": 42}
