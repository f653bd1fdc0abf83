"""What the emulated worker calls: one small interface, four adapters.

A :class:`Container` answers ``invoke(request)`` with a :class:`ContainerResponse` and
``health(uri, port)`` with ``True`` when ready. The adapters:

- :class:`CallableContainer`: a Python function ``fn(request: ContainerRequest)`` returning a
  :class:`ContainerResponse`, a dict/list (JSON), ``bytes``/``str``, ``(body, status[, headers])``,
  or an iterator of chunks (streamed as ``text/event-stream``).
- :class:`WsgiContainer`: a WSGI app (Flask, Django, ...), called in-process.
- :class:`AsgiContainer`: an ASGI app (FastAPI, Starlette, ...) on an event loop thread the
  container owns, as uvicorn runs it (lifespan once, at start; shutdown on close).
- :class:`UrlContainer`: a server already running, e.g. ``http://127.0.0.1:8000``, reached over
  HTTP as NVCF's worker reaches ``127.0.0.1:<inferencePort>``.

:func:`as_container` picks the adapter for an object or a ``package.module:attr`` / URL string.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import inspect
import io
import json
import logging
import math
import queue
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

import requests
from urllib3.exceptions import ReadTimeoutError
from werkzeug.datastructures import Headers

from ..domain.clock import monotonic
from ..headers import make_environ
from ..storage.local import when_not_busy

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger(__name__)

#: Headers never passed between hops (RFC 9110 §7.6.1), plus the ones a hop recomputes.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


def hop_by_hop(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The lower-case names a hop drops from ``headers``: :data:`HOP_BY_HOP` and every name
    their ``Connection`` header lists (RFC 9110 §7.6.1), as NVCF's services drop them."""
    listed = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    }
    return HOP_BY_HOP | listed


class ContainerConnectionError(Exception):
    """The container could not be reached, or did not answer in time."""


@dataclass
class ContainerRequest:
    """The request the worker sends to the container (``POST <inferenceUrl>``)."""

    method: str
    path: str
    headers: Headers
    body: bytes
    #: The function's ``inferencePort`` (used by :class:`UrlContainer` when its URL has none).
    port: int = 8000
    #: Seconds the container may take.
    timeout: float = 300.0

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header, matched case-insensitively (as containers should match NVCF's)."""
        return self.headers.get(name, default)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def request_id(self) -> str:
        return self.headers.get("NVCF-REQID", "")

    @property
    def asset_ids(self) -> list[str]:
        """``NVCF-FUNCTION-ASSET-IDS``, split (empty without assets)."""
        value = self.headers.get("NVCF-FUNCTION-ASSET-IDS", "")
        return [item for item in value.split(",") if item]

    @property
    def asset_dir(self) -> Path:
        return Path(self.headers.get("NVCF-ASSET-DIR", ""))

    @property
    def output_dir(self) -> Path:
        """``NVCF-LARGE-OUTPUT-DIR``: files left here come back to the client in a zip."""
        return Path(self.headers.get("NVCF-LARGE-OUTPUT-DIR", ""))

    def asset_path(self, asset_id: str) -> Path:
        return self.asset_dir / asset_id

    def write_progress(self, progress: int, partial_response: Any = None) -> None:
        """Write the progress file NVCF's worker watches (``<output dir>/progress``)."""
        doc: dict[str, Any] = {"id": self.request_id, "progress": progress}
        if partial_response is not None:
            doc["partialResponse"] = partial_response
        # A name of its own per write (threads of one container may report at once), removed
        # whatever happens (a file left in the output dir would turn the answer into a zip).
        tmp = self.output_dir / f".progress.{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_text(json.dumps(doc))
            # (Windows refuses the replace while the worker reads the file: wait for it.)
            when_not_busy(lambda: tmp.replace(self.output_dir / "progress"))
        finally:
            tmp.unlink(missing_ok=True)


@dataclass
class ContainerResponse:
    """What the container answered. ``chunks`` (when set) is the body, still to be read."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: Iterator[bytes] | None = None
    on_close: Callable[[], None] | None = None

    @property
    def content_type(self) -> str:
        for name, value in self.headers:
            if name.lower() == "content-type":
                return value
        return ""

    @property
    def is_event_stream(self) -> bool:
        return self.content_type.split(";")[0].strip().lower() == "text/event-stream"

    def read(self, stop: Callable[[], bool] | None = None) -> bytes:
        """Read the whole body (once); later calls return it again.

        ``stop`` is asked after each chunk: once it is true, reading ends with a
        :class:`ContainerConnectionError` (an answer nobody waits for any more is not read on
        forever)."""
        if self.chunks is not None:
            try:
                parts = []
                for chunk in self.chunks:
                    parts.append(chunk)
                    if stop is not None and stop():
                        raise ContainerConnectionError("the answer is no longer awaited")
                self.body = b"".join(parts)
            finally:
                self.chunks = None
                self.close()
        return self.body

    def close(self) -> None:
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()

    def json(self) -> Any:
        return json.loads(self.read())


@runtime_checkable
class Container(Protocol):
    """The one interface the worker calls."""

    def invoke(self, request: ContainerRequest) -> ContainerResponse: ...

    def health(self, uri: str, port: int, timeout: float = 2.0) -> int:
        """The status code of ``GET <uri>`` (0 when unreachable)."""
        ...

    def close(self) -> None: ...


# -- plain Python callables --------------------------------------------------------------------


def _coerce(result: Any) -> ContainerResponse:
    if isinstance(result, ContainerResponse):
        return result
    if isinstance(result, tuple):
        if len(result) not in (2, 3):
            raise TypeError("a container tuple is (body, status) or (body, status, headers)")
        resp = _coerce_body(result[0], int(result[1]))
        if len(result) == 3:
            extra: Mapping[str, str] | Sequence[tuple[str, str]] = result[2]
            pairs = list(extra.items()) if isinstance(extra, Mapping) else list(extra)
            names = {n.lower() for n, _ in pairs}
            resp.headers = [(n, v) for n, v in resp.headers if n.lower() not in names] + pairs
        return resp
    return _coerce_body(result, 200)


def _coerce_body(body: Any, status: int) -> ContainerResponse:
    if body is None:
        return ContainerResponse(status, b"", [])
    if isinstance(body, bytes | bytearray | memoryview):
        return ContainerResponse(
            status, bytes(body), [("Content-Type", "application/octet-stream")]
        )
    if isinstance(body, str):
        return ContainerResponse(status, body.encode(), [("Content-Type", "text/plain")])
    if isinstance(body, dict | list | int | float | bool):
        data = json.dumps(body).encode()
        return ContainerResponse(status, data, [("Content-Type", "application/json")])
    if isinstance(body, Iterable):
        return ContainerResponse(
            status,
            b"",
            [("Content-Type", "text/event-stream")],
            chunks=_begun(_chunk(c) for c in body),
            on_close=getattr(body, "close", None),  # a client gone: the generator is closed
        )
    raise TypeError(f"a container cannot answer with {type(body).__name__}")


def _begun(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The body of an answer whose status line is out: a failure in it can only drop the
    connection, as a server does (NVCF's worker then answers its inference connection error)."""
    try:
        yield from chunks
    except ContainerConnectionError:
        raise
    except Exception as exc:
        raise ContainerConnectionError(
            f"the container failed after it began its answer: {exc!r}"
        ) from exc


def _chunk(chunk: object) -> bytes:
    """One chunk of a streamed answer: bytes, or text (UTF-8); anything else is the
    container's mistake (``bytes(3)`` would be three NUL bytes)."""
    if isinstance(chunk, str):
        return chunk.encode()
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    raise TypeError(f"a container stream yielded {type(chunk).__name__}; chunks are bytes or str")


class CallableContainer:
    """A Python function as a container: ``fn(request: ContainerRequest) -> ...``.

    Return a :class:`ContainerResponse`, a dict or list (JSON), ``bytes`` or ``str``, ``None``
    (empty 200), ``(body, status)`` or ``(body, status, headers)``, or an iterator of chunks
    (answered as ``text/event-stream``). An exception is what a web framework would make of it:
    a 500 from the container.
    """

    def __init__(
        self, fn: Callable[[ContainerRequest], Any], health: Callable[[], bool] | None = None
    ) -> None:
        self.fn = fn
        self._health = health

    def invoke(self, request: ContainerRequest) -> ContainerResponse:
        return _coerce(self.fn(request))

    def health(self, uri: str, port: int, timeout: float = 2.0) -> int:
        return 200 if self._health is None or self._health() else 503

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"CallableContainer({getattr(self.fn, '__qualname__', self.fn)!r})"


# -- WSGI ----------------------------------------------------------------------------------------


def _environ(
    method: str, path: str, headers: Headers | None, body: bytes, port: int
) -> dict[str, Any]:
    """The WSGI environ a server on ``127.0.0.1:<port>`` would build for this request (with
    the emulator's own header rule: repeats joined, and an underscored name counts as its
    hyphenated one unless that was sent too)."""
    raw_path, _, query = path.partition("?")
    sent = [] if headers is None else headers.items()
    return make_environ(
        method,
        raw_path,
        query,
        [("Content-Length", str(len(body)))]
        + [(k, v) for k, v in sent if k.lower() != "content-length"],
        io.BytesIO(body),
        host=f"127.0.0.1:{port}",
        server_name="127.0.0.1",
        port=port,
    )


class WsgiContainer:
    """A WSGI app (e.g. a Flask app) as a container, called in-process with a real environ."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def _call(
        self,
        method: str,
        path: str,
        headers: Headers | None,
        body: bytes,
        port: int,
    ) -> ContainerResponse:
        environ = _environ(method, path, headers, body, port)
        captured: dict[str, Any] = {}
        written: deque[bytes] = deque()  # what the app gave write(), not yet passed on
        sent = False  # the status line is out: a server sends it with the first body bytes

        def write(data: bytes) -> None:
            if "status" not in captured:
                raise RuntimeError("the WSGI app called write() before start_response")
            written.append(_wsgi_chunk(data))

        def start_response(
            status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            if exc_info is not None:
                # PEP 3333: an error page replaces an answer whose headers are not out yet;
                # once they are, start_response re-raises the app's exception.
                if sent and exc_info[1] is not None:
                    raise exc_info[1].with_traceback(exc_info[2])
            elif "status" in captured:
                raise RuntimeError(
                    "the WSGI app called start_response twice without exc_info (PEP 3333)"
                )
            captured["status"] = status
            captured["headers"] = list(response_headers)
            return write

        app_iter = self.app(environ, start_response)
        it = (_wsgi_chunk(c) for c in app_iter)
        head: list[bytes] = []
        try:
            # As a WSGI server, pull until the app has started its response and yielded its
            # first bytes: a server sends the status line only then, so an app failing (or
            # calling start_response with exc_info) before it still answers as it chose.
            while not sent:
                try:
                    chunk = next(it)
                except StopIteration:
                    break
                if chunk:
                    head.append(chunk)
                sent = "status" in captured and bool(head or written)
        except BaseException:
            _close(app_iter)
            raise
        sent = True
        if "status" not in captured:
            _close(app_iter)
            raise RuntimeError("the WSGI app returned without calling start_response")

        def drain() -> Iterator[bytes]:
            while written:
                yield written.popleft()

        def chunks() -> Iterator[bytes]:
            yield from drain()
            yield from head
            for chunk in it:
                yield from drain()  # written while the app made this chunk: before it
                yield chunk
            yield from drain()

        return ContainerResponse(
            status=int(str(captured["status"]).split(" ", 1)[0]),
            headers=captured["headers"],
            chunks=_begun(chunks()),
            on_close=lambda: _close(app_iter),
        )

    def invoke(self, request: ContainerRequest) -> ContainerResponse:
        return self._call(request.method, request.path, request.headers, request.body, request.port)

    def health(self, uri: str, port: int, timeout: float = 2.0) -> int:
        resp = self._call("GET", uri, None, b"", port)
        deadline = monotonic() + timeout
        try:
            resp.read(stop=lambda: monotonic() > deadline)  # a probe gives up in time
        except ContainerConnectionError:
            return 0
        return resp.status

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"WsgiContainer({self.app!r})"


def _wsgi_chunk(chunk: object) -> bytes:
    if not isinstance(chunk, bytes):
        raise TypeError(
            f"the WSGI app yielded {type(chunk).__name__}, not bytes (PEP 3333: bodies are bytes)"
        )
    return chunk


def _close(app_iter: object) -> None:
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()


# -- ASGI ----------------------------------------------------------------------------------------


class _Exchange:
    """One request to an ASGI app: its messages go from the event loop to the worker thread
    one at a time (the app's ``send`` returns once the worker took the message, so a fast app
    cannot pile up a body in memory), and the worker can tell the app its client is gone."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.inbox: queue.SimpleQueue[tuple[str, Any, asyncio.Future[None] | None]] = (
            queue.SimpleQueue()
        )
        self.gone = asyncio.Event()  # made on the loop (the loop thread creates exchanges)
        self.task: asyncio.Task[None] | None = None

    # -- on the loop --

    async def put(self, kind: str, payload: Any) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.inbox.put((kind, payload, waiter))
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            await asyncio.wait((waiter, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()

    def end(self, kind: str, payload: Any) -> None:
        self.inbox.put((kind, payload, None))

    # -- on the worker thread --

    def get(self, timeout: float) -> tuple[str, Any]:
        try:
            # An infinite container_timeout is no limit (a wait cannot be given inf).
            kind, payload, waiter = self.inbox.get(timeout=_finite(timeout))
        except queue.Empty:
            self.cancel()
            raise ContainerConnectionError(
                f"the container did not answer within {timeout:g} s"
            ) from None
        if waiter is not None:
            self.loop.call_soon_threadsafe(_resolve, waiter)
        return kind, payload

    def disconnect(self) -> None:
        """The client is gone: ``receive`` answers ``http.disconnect``, ``send`` raises."""
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self.loop.call_soon_threadsafe(self.gone.set)

    def cancel(self) -> None:
        task = self.task
        if task is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(task.cancel)


def _finite(timeout: float) -> float | None:
    return timeout if math.isfinite(timeout) else None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _latin1(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # what goes on the wire for it: its UTF-8 bytes
        return text.encode("utf-8", "surrogateescape")


def _check_start(message: Mapping[str, Any]) -> None:
    status = message.get("status")
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"the ASGI app sent the status {status!r}; an ASGI status is an int")
    for pair in message.get("headers", ()):
        name, value = pair
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise TypeError(
                f"the ASGI app sent the header {name!r}: {value!r}; ASGI header names and "
                "values are bytes"
            )


class _RealTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on real monotonic time, whatever freezegun does (as the worker's waits):
    under a frozen freezegun the stock loop mixes frozen and real readings, and an app's
    ``asyncio.sleep`` or timeout never ends."""

    def time(self) -> float:
        return monotonic()


class AsgiContainer:
    """An ASGI app (FastAPI, Starlette, ...) as a container, run as uvicorn runs it.

    The app runs on an event loop in a thread this container owns. Its lifespan starts when
    the container is made (once per function: load the model there) and ends at
    :meth:`close` (when the emulator closes or resets); the state it yields is each request's
    ``request.state``. An answer is complete at its last body message: background tasks go on
    after it. A client gone from a stream is told (``request.is_disconnected()``, ``send``
    raising ``OSError``); requests still running at :meth:`close` are cancelled.
    """

    #: Seconds :meth:`close` gives the app's lifespan shutdown.
    SHUTDOWN_TIMEOUT = 5.0

    def __init__(self, app: Any, startup_timeout: float = 30.0) -> None:
        self.asgi_app = app
        self._state: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # requests and their background tasks
        self._closed = False
        self._lifespan: asyncio.Task[None] | None = None
        self._lifespan_inbox: asyncio.Queue[dict[str, str]] | None = None
        self._lifespan_done: asyncio.Event | None = None
        self._loop = _RealTimeLoop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="nvcf-asgi-container", daemon=True
        )
        self._thread.start()
        try:
            future = asyncio.run_coroutine_threadsafe(self._start_lifespan(), self._loop)
            try:
                future.result(startup_timeout)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise RuntimeError(
                    f"the ASGI app's lifespan startup did not finish within {startup_timeout:g} s"
                ) from None
        except BaseException:
            self._closed = True
            self._stop_loop()
            raise

    # -- lifespan (on the loop) --

    async def _start_lifespan(self) -> None:
        inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        started: asyncio.Future[str | None] = self._loop.create_future()
        done = asyncio.Event()
        self._lifespan_inbox, self._lifespan_done = inbox, done
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self._state,
        }

        async def send(message: Mapping[str, Any]) -> None:
            kind = message.get("type")
            if kind == "lifespan.startup.complete" and not started.done():
                started.set_result(None)
            elif kind == "lifespan.startup.failed" and not started.done():
                started.set_result(str(message.get("message", "")) or "(no message)")
            elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                if kind == "lifespan.shutdown.failed":
                    log.warning("the ASGI app's lifespan shutdown failed: %s", message)
                done.set()

        async def run() -> None:
            try:
                await self.asgi_app(scope, inbox.get, send)
            except Exception as exc:
                if started.done():
                    log.warning("the ASGI app's lifespan raised: %r", exc)
                else:
                    # As uvicorn's lifespan "auto": an app that raises before answering the
                    # startup event does not do lifespan (a raw app asserting scope["type"]).
                    log.debug("the ASGI app does not support lifespan: %r", exc)
            finally:
                if not started.done():
                    started.set_result(None)
                done.set()

        await inbox.put({"type": "lifespan.startup"})
        self._lifespan = asyncio.ensure_future(run())
        failed = await started
        if failed is not None:
            raise RuntimeError(f"the ASGI app's lifespan startup failed: {failed}")

    async def _shutdown(self) -> None:
        for task in list(self._tasks):  # the emulator is going: nobody waits for them
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.SHUTDOWN_TIMEOUT)
        lifespan, inbox, done = self._lifespan, self._lifespan_inbox, self._lifespan_done
        if lifespan is None or inbox is None or done is None or lifespan.done():
            return
        await inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(done.wait(), self.SHUTDOWN_TIMEOUT)
        except TimeoutError:
            log.warning("the ASGI app's lifespan shutdown took over %s s", self.SHUTDOWN_TIMEOUT)
        lifespan.cancel()

    # -- requests --

    def _scope(
        self, method: str, path: str, headers: Headers | None, body: bytes, port: int
    ) -> dict[str, Any]:
        raw_path, _, query = path.partition("?")
        sent = [] if headers is None else list(headers.items())
        pairs = [(b"host", f"127.0.0.1:{port}".encode()), (b"content-length", b"%d" % len(body))]
        pairs += [
            (_latin1(k.lower()), _latin1(v))
            for k, v in sent
            if k.lower() not in ("host", "content-length")
        ]
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1", "replace"),
            "query_string": query.encode("latin-1", "replace"),
            "root_path": "",
            "headers": pairs,
            "server": ("127.0.0.1", port),
            "client": ("127.0.0.1", 0),
            "state": dict(self._state),
            "extensions": {},
        }

    async def _serve(self, scope: dict[str, Any], body: bytes, exchange: _Exchange) -> None:
        body_left = True
        started = finished = False

        async def receive() -> dict[str, Any]:
            nonlocal body_left
            if body_left and not exchange.gone.is_set():
                body_left = False
                return {"type": "http.request", "body": body, "more_body": False}
            await exchange.gone.wait()  # as a server: only the client leaving comes next
            return {"type": "http.disconnect"}

        async def send(message: Mapping[str, Any]) -> None:
            nonlocal started, finished
            if exchange.gone.is_set():
                raise OSError("the client went away")  # ASGI 2.4: uvicorn's ClientDisconnected
            kind = message.get("type")
            if kind == "http.response.start":
                if started:
                    raise RuntimeError("the ASGI app sent http.response.start twice")
                _check_start(message)
                started = True
            elif kind == "http.response.body":
                if not started:
                    raise RuntimeError(
                        "the ASGI app sent http.response.body before http.response.start"
                    )
                if finished:
                    raise RuntimeError("the ASGI app sent a body after its answer was complete")
                chunk = message.get("body", b"")
                if not isinstance(chunk, bytes | bytearray):
                    raise TypeError(
                        f"the ASGI app sent a {type(chunk).__name__} body; ASGI bodies are bytes"
                    )
                finished = not message.get("more_body", False)
            else:
                raise RuntimeError(f"the ASGI app sent an unexpected message {kind!r}")
            await exchange.put("message", message)

        try:
            await self.asgi_app(scope, receive, send)
        except asyncio.CancelledError:
            exchange.end("error", ContainerConnectionError("the ASGI app was cancelled"))
            raise
        except Exception as exc:
            if finished:  # after a whole answer (Starlette re-raises its 500): only logged
                log.warning("the ASGI app raised after its answer: %r", exc)
            exchange.end("error", exc)
        else:
            exchange.end("done", None)

    def _call(
        self,
        method: str,
        path: str,
        headers: Headers | None,
        body: bytes,
        port: int,
        timeout: float,
    ) -> ContainerResponse:
        if self._closed:
            raise ContainerConnectionError("the ASGI container is closed")
        scope = self._scope(method, path, headers, body, port)

        async def begin() -> _Exchange:
            exchange = _Exchange(self._loop)
            task = exchange.task = asyncio.ensure_future(self._serve(scope, body, exchange))
            self._tasks.add(task)  # requests and their background tasks, until they end
            task.add_done_callback(self._tasks.discard)
            return exchange

        try:
            future = asyncio.run_coroutine_threadsafe(begin(), self._loop)
            exchange = future.result(_finite(timeout))
        except (RuntimeError, concurrent.futures.TimeoutError) as exc:  # loop closed/stopped
            raise ContainerConnectionError(f"the ASGI container is not running: {exc!r}") from exc
        kind, payload = exchange.get(timeout)
        if kind == "error":
            raise payload
        if kind == "done":
            raise RuntimeError("the ASGI app returned without sending http.response.start")
        start = payload
        status = int(start["status"])
        response_headers = [
            (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            for name, value in start.get("headers", ())
        ]
        finished = False

        def chunks() -> Iterator[bytes]:
            nonlocal finished
            while True:
                kind, message = exchange.get(timeout)
                if kind == "error":
                    raise ContainerConnectionError(
                        f"the container failed after it began its answer: {message!r}"
                    ) from message
                if kind == "done":
                    raise ContainerConnectionError(
                        "the ASGI app returned without completing its answer"
                    )
                yield bytes(message.get("body", b""))
                if not message.get("more_body", False):
                    finished = True  # background tasks run on, as after uvicorn's answer
                    return

        def close() -> None:
            if not finished:
                exchange.disconnect()

        return ContainerResponse(status, b"", response_headers, chunks(), on_close=close)

    def invoke(self, request: ContainerRequest) -> ContainerResponse:
        return self._call(
            request.method,
            request.path,
            request.headers,
            request.body,
            request.port,
            request.timeout,
        )

    def health(self, uri: str, port: int, timeout: float = 2.0) -> int:
        try:
            resp = self._call("GET", uri, None, b"", port, timeout)
            resp.read()
        except ContainerConnectionError:
            return 0
        return resp.status

    def close(self) -> None:
        """Cancel the requests still running, run the lifespan shutdown, stop the loop."""
        if not self._closed:
            self._closed = True
            if self._thread.is_alive():
                future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
                try:
                    future.result(2 * self.SHUTDOWN_TIMEOUT + 1)
                except Exception:  # pragma: no cover - a lifespan that will not stop
                    log.exception("stopping the ASGI app failed")
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    def __repr__(self) -> str:
        return f"AsgiContainer({self.asgi_app!r})"


# -- a running server ------------------------------------------------------------------------------


class _NoRedirects(requests.Session):
    """A session that leaves a container's redirect to the client: ``requests`` reads (and
    keeps) a redirect's body even when it does not follow it, so the streamed body would be
    empty."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


class UrlContainer:
    """A container already running at ``url`` (``http://host[:port][/path]``).

    Requests go to ``<scheme>://<host>:<port><inferenceUrl>``; the port is the URL's, or the
    function's ``inferencePort`` when the URL has none. A path in the URL is only a default
    ``inferenceUrl`` for functions registered with this container.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a container URL is http(s)://host[:port][/path], got {url!r}")
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.path = parts.path if parts.path not in ("", "/") else None
        self._session = _NoRedirects()
        self._session.trust_env = False  # loopback: never through a proxy

    def url_for(self, path: str, port: int) -> str:
        """Where a request for ``path`` goes (``port``: the function's, when the URL has none)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port or port}{path}"

    def invoke(self, request: ContainerRequest) -> ContainerResponse:
        try:
            resp = self._session.request(
                request.method,
                self.url_for(request.path, request.port),
                headers=dict(request.headers.items()),
                data=request.body,
                timeout=_finite(request.timeout),
                stream=True,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise ContainerConnectionError(str(exc)) from exc
        # The body is decoded below, so its Content-Encoding no longer applies.
        headers = [(k, v) for k, v in resp.raw.headers.items() if k.lower() != "content-encoding"]

        def chunks() -> Iterator[bytes]:
            try:
                # What has come, as it comes (read1): an event stream that is not chunked (an
                # HTTP/1.0 server's, ended by closing) is not held back until 64 KiB gathered.
                while chunk := resp.raw.read1(64 * 1024, decode_content=True):
                    yield chunk
            except ReadTimeoutError as exc:
                raise ContainerConnectionError(
                    f"the container did not answer within {request.timeout:g} s: {exc}"
                ) from exc
            except Exception as exc:
                raise ContainerConnectionError(
                    f"the container's answer ended prematurely: {exc}"
                ) from exc

        return ContainerResponse(resp.status_code, b"", headers, chunks(), on_close=resp.close)

    def health(self, uri: str, port: int, timeout: float = 2.0) -> int:
        try:
            with self._session.get(self.url_for(uri, port), timeout=timeout) as resp:
                return resp.status_code
        except requests.RequestException:
            return 0

    def close(self) -> None:
        self._session.close()

    def __repr__(self) -> str:
        return f"UrlContainer({self.url!r})"


# -- picking an adapter ----------------------------------------------------------------------------


def _not_a_target(spec: str) -> ValueError:
    """The error for a container string that is neither a URL nor ``package.module:attr``,
    with the URL it probably meant when it looks like a mistyped one."""
    hint = ""
    lowered = spec.lower()
    if lowered.startswith("http"):
        scheme = "https" if lowered.startswith("https") else "http"
        rest = spec[len(scheme) :].lstrip(":/")
        hint = f" (did you mean {scheme}://{rest}?)"
    return ValueError(
        f"expected package.module:attr or an http://host:port[/path] URL, got {spec!r}: it is "
        f"neither a container URL nor an importable package.module:attr{hint}"
    )


def load_target(spec: str) -> Any:
    """``package.module:attr`` → the object (``attr`` may be dotted)."""
    module_name, sep, attr = spec.partition(":")
    if (
        not sep
        or not all(part.isidentifier() for part in module_name.split("."))
        or not all(part.isidentifier() for part in attr.split("."))
    ):
        raise _not_a_target(spec)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _is_asgi(obj: Any) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - the class's, not the instance's
    return call is not None and inspect.iscoroutinefunction(call)


def _positional_arity(obj: Any) -> int | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(
        1
        for p in sig.parameters.values()
        if p.kind in kinds and p.default is inspect.Parameter.empty
    )


def as_container(target: Any) -> Container:
    """The adapter for ``target``: a :class:`Container`, a URL, ``package.module:attr``, an ASGI
    app, a WSGI app (anything with ``wsgi_app``, or a callable taking ``environ,
    start_response``) or a plain callable taking a :class:`ContainerRequest`."""
    if isinstance(target, Container) and not callable(target):
        return target
    if isinstance(target, WsgiContainer | AsgiContainer | CallableContainer | UrlContainer):
        return target
    if isinstance(target, str):
        if target.startswith(("http://", "https://")):
            return UrlContainer(target)
        return as_container(load_target(target))
    if _is_asgi(target):
        return AsgiContainer(target)
    if hasattr(target, "wsgi_app"):
        return WsgiContainer(target)
    if callable(target):
        if _positional_arity(target) == 2:
            return WsgiContainer(target)
        return CallableContainer(target)
    raise TypeError(f"cannot use {type(target).__name__} as a container")


def check_takes_request(fn: Any) -> None:
    """A ``TypeError`` for a plain callable that cannot be called as ``fn(request)`` (checked
    when it is deployed: otherwise it would be ``ACTIVE`` and every invocation a 500)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (some builtins): give it the benefit
        return
    try:
        sig.bind(None)
    except TypeError:
        pass
    else:
        return
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    raise TypeError(
        f"cannot use {name}{sig} as a container: a callable container is called as "
        "fn(request) with one ContainerRequest, e.g. def infer(request: ContainerRequest) -> "
        "dict: ...; a WSGI app takes (environ, start_response), and an ASGI app is "
        "async (scope, receive, send)"
    )
