"""In-process mode for httpx: ``httpx.Client`` / ``httpx.AsyncClient`` calls for the emulator's
hosts go into its WSGI app, with the rules and the body streaming of the ``requests`` routing.

:func:`nvcf_emulator.inprocess.route` enters :func:`route_httpx` by itself when httpx is
installed (the ``nvcf-emulator[httpx]`` extra); this module is imported only then.

**The hook.** httpx has no public per-URL hook for clients that user code constructs: the
transport is fixed when a client is built, and clients are often built before the emulator
starts (module globals, SDK objects). The one place where a client picks a transport for a URL
is ``Client._transport_for_url`` / ``AsyncClient._transport_for_url``, which is also what
respx's ``httpx`` mocker patches. We hook exactly that method on both classes: our hook returns
:class:`EmulatorTransport` / :class:`AsyncEmulatorTransport` for the emulator's hosts and calls
whatever was there before for every other URL, so a client's own transport, mounts and proxies,
and other mocking libraries, are untouched for other hosts. respx's machinery was not used:
both of its mockers read the request body whole before a handler sees it (``request.read()``
in ``httpx.MockTransport`` and in ``prepare_sync_request``), which would buffer a multi-GB
upload in memory. Patching ``HTTPTransport.handle_request`` instead was rejected too: it would
miss clients given other transports and collide with what already patches that method
(pytest-httpx, and the "no network in tests" guards many suites install there).

Living with other libraries:

* respx in its default mode (``httpcore``), pytest-httpx (0.22 and later patch
  ``HTTPTransport.handle_request``) and network guards on ``HTTPTransport`` work at lower
  layers, so they and the emulator work together in any start and stop order: the emulator's
  hosts come here, every other host reaches the user's mocks.
* respx with ``using="httpx"`` patches the same method. Started before the emulator, it keeps
  mocking other hosts. Started after, respx sees every request first: let the emulator's hosts
  through with ``respx_mock.route(host="api.nvcf.nvidia.com").pass_through()`` (respx then
  reads such bodies whole). Stop the two in reverse order of starting, as with any patches.

Nesting: several emulators may route at once, the innermost wins (as for ``requests``). The
hook is installed when the first route starts and removed when the last one ends, unless
something patched on top of it meanwhile: then it stays, and with no routes it only forwards.

**Failures.** When the caller's request body raises, the app sees a client that went away
(``ClientDisconnected``: nothing is stored) and the caller gets its own exception back, as httpx
gives it over a real connection. A body that sends more or fewer bytes than the
``Content-Length`` it was given fails the same way, with the ``LocalProtocolError`` h11 raises.

**Timeouts.** The read timeout runs as over a socket: from the end of the request body (a slow
upload is no read timeout) to the answer, and between the chunks of a streamed answer.

**Async.** The WSGI app is blocking, so :class:`AsyncEmulatorTransport` runs it in a worker
thread (anyio, which httpx depends on: asyncio and trio alike) and the event loop keeps
serving other tasks while a slow container works. An async request body is pulled into that
thread one chunk at a time, and the response is handed back one chunk at a time. Cancelling a
request (or its read timeout) returns at once; the request body is read no further, and the
app finishes in its thread as it would on a server whose client went away.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import h11
import httpx

from .domain.clock import perf_counter
from .inprocess import (
    AppResponse,
    BodyFailed,
    Claim,
    Dropped,
    TimedOut,
    _AppIterReader,
    call_app,
    claimant,
    make_environ,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["AsyncEmulatorTransport", "EmulatorTransport", "route_httpx"]

_T = TypeVar("_T")
_HOOKED = "_transport_for_url"
_lock = threading.Lock()
_routes: list[tuple[Callable[[str], Claim], EmulatorTransport, AsyncEmulatorTransport]] = []
_installed: list[tuple[type[Any], Any, Any]] = []  # (class, what was there, our hook)


def _hook(original: Callable[[Any, httpx.URL], Any], is_async: bool) -> Any:
    def _transport_for_url(self: Any, url: httpx.URL) -> Any:
        routes = ((matches, (sync, async_)) for matches, sync, async_ in reversed(_routes))
        chosen = claimant(routes, str(url))
        if chosen is None:
            return original(self, url)
        return chosen[1] if is_async else chosen[0]

    _transport_for_url.__doc__ = "nvcf-emulator: the emulator's hosts go to its WSGI app."
    return _transport_for_url


def _install() -> None:
    for cls in (httpx.Client, httpx.AsyncClient):
        original = vars(cls)[_HOOKED]
        hook = _hook(original, is_async=cls is httpx.AsyncClient)
        setattr(cls, _HOOKED, hook)
        _installed.append((cls, original, hook))


def _uninstall() -> None:
    while _installed:
        cls, original, hook = _installed.pop()
        if vars(cls).get(_HOOKED) is hook:
            setattr(cls, _HOOKED, original)
        # Else a later patch wraps our hook and will put it back when it stops; with no routes
        # left the hook only forwards to what it replaced, and a new route installs a new one.


@contextmanager
def route_httpx(app: WSGIApplication, matches: Callable[[str], Claim]) -> Iterator[None]:
    """Send httpx requests whose URL ``matches`` into ``app`` while the block runs."""
    entry = (matches, EmulatorTransport(app), AsyncEmulatorTransport(app))
    with _lock:
        if not _routes:
            _install()
        _routes.append(entry)
    try:
        yield
    finally:
        with _lock:
            _routes.remove(entry)
            if not _routes:
                _uninstall()


def _environ(request: httpx.Request, body: object) -> dict[str, Any]:
    # The bytes httpx would send, as a server reads them (latin-1), not httpx's guessed decoding.
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
    return make_environ(request.method, str(request.url), headers, body)


class LengthMismatch(httpx.LocalProtocolError, h11.LocalProtocolError):
    """A request body longer or shorter than its ``Content-Length`` header. Over a socket h11
    refuses it with its own ``LocalProtocolError`` (httpcore 1.0 lets it through unmapped);
    this one is also the ``httpx.LocalProtocolError`` httpx maps h11's other errors to."""


def _declared_length(request: httpx.Request) -> int | None:
    """The body length h11 holds the body to: its ``Content-Length``, unless it is chunked."""
    if "transfer-encoding" in request.headers:
        return None
    value = request.headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None


def _sent(chunks: Iterable[bytes], request: httpx.Request) -> Iterator[bytes]:
    """The request body as h11 sends it: never more nor fewer bytes than its declared length.
    The chunk that reaches the length is held until the body is seen to end there, since the
    app, having read that many bytes, never asks for more."""
    declared = _declared_length(request)
    if declared is None:
        yield from chunks
        return
    sent = 0
    rest = iter(chunks)
    for chunk in rest:
        sent += len(chunk)
        if sent == declared and any(rest):  # any(): up to the first non-empty chunk
            sent += 1
        if sent > declared:
            raise LengthMismatch("Too much data for declared Content-Length", request=request)
        yield chunk
    if sent < declared:
        raise LengthMismatch("Too little data for declared Content-Length", request=request)


def _read_timeout(request: httpx.Request) -> float | None:
    limit = (request.extensions.get("timeout") or {}).get("read")
    return float(limit) if isinstance(limit, int | float) else None


def _response(
    answer: AppResponse, stream: httpx.SyncByteStream | httpx.AsyncByteStream
) -> httpx.Response:
    return httpx.Response(
        answer.status,
        headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers],
        stream=stream,
        extensions={
            "http_version": b"HTTP/1.1",
            "reason_phrase": answer.reason.encode("latin-1"),
        },
    )


def _dropped(request: httpx.Request) -> httpx.RemoteProtocolError:
    """What httpx raises when a server closes the connection without answering."""
    return httpx.RemoteProtocolError(
        "Server disconnected without sending a response (injected fault).", request=request
    )


@contextmanager
def _reading_errors() -> Iterator[None]:
    """A streamed answer's failures as httpx raises them over a socket: a late chunk is a
    ``ReadTimeout`` (httpx adds the request), a cut (:class:`StreamCut`, or the container's
    stream broke) the server closing the connection in the middle of the body."""
    try:
        yield
    except TimedOut as exc:
        raise httpx.ReadTimeout(str(exc)) from None
    except ConnectionResetError as exc:
        raise httpx.RemoteProtocolError(
            f"peer closed connection without sending complete message body ({exc})"
        ) from None


class EmulatorTransport(httpx.BaseTransport):
    """A sync httpx transport that calls a WSGI app; bodies stream both ways."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        limit = _read_timeout(request)
        environ = _environ(request, _sent(cast(Iterable[bytes], request.stream), request))
        try:
            answer = call_app(self.app, environ, limit)
        except TimedOut as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from None
        except Dropped:
            raise _dropped(request) from None
        except BodyFailed as exc:
            raise exc.error from None
        return _response(answer, _SyncAppStream(answer.body))


class _SyncAppStream(httpx.SyncByteStream):
    def __init__(self, body: _AppIterReader) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        with _reading_errors():
            yield from self._body.chunks()

    def close(self) -> None:
        self._body.close()


_ABANDON = "abandon_on_cancel" in inspect.signature(anyio.to_thread.run_sync).parameters
#: Threads for in-process requests, per event loop: apart from anyio's default limiter (40
#: threads, shared with the user's own ``to_thread`` calls), so slow containers cannot starve it.
MAX_THREADS = 256
_limiter: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("nvcf_emulator")


def _threads() -> anyio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(MAX_THREADS)
        _limiter.set(limiter)
        return limiter


async def _in_thread(func: Callable[[], _T], *, abandon: bool = False) -> _T:
    """``func()`` in a worker thread; ``abandon``: a cancelled caller returns without waiting."""
    limiter = _threads()
    if _ABANDON:
        return await anyio.to_thread.run_sync(func, abandon_on_cancel=abandon, limiter=limiter)
    return await anyio.to_thread.run_sync(func, cancellable=abandon, limiter=limiter)  # anyio<4.1


class _AsyncBody:
    """The body of an async request as a blocking iterator for the app's thread: an async
    stream is pulled one chunk per step on the event loop, a sync one (bytes, JSON, form and
    multipart bodies) is read in the thread directly. Once the request is abandoned (cancelled,
    timed out) the body is read no further, as over a dropped connection: the app sees the
    client gone."""

    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> None:
        self._sync: httpx.SyncByteStream | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        if isinstance(stream, httpx.SyncByteStream):
            self._sync = stream
        else:
            self._chunks = stream.__aiter__()
        self._abandoned = False
        self._scope: anyio.CancelScope | None = None  # the step running, if any

    def abandon(self) -> None:
        """On the event loop: stop reading, cancelling a step that waits for the body."""
        self._abandoned = True
        if self._scope is not None:
            self._scope.cancel()

    async def _step(self) -> bytes | None:
        assert self._chunks is not None
        if not self._abandoned:
            with anyio.CancelScope() as self._scope:
                try:
                    return await self._chunks.__anext__()
                except StopAsyncIteration:
                    return None
                finally:
                    self._scope = None
        raise _gone()

    def __iter__(self) -> Iterator[bytes]:
        if self._sync is None:
            while (chunk := anyio.from_thread.run(self._step)) is not None:
                yield chunk
            return
        for chunk in self._sync:
            if self._abandoned:
                raise _gone()
            yield chunk


def _gone() -> ConnectionAbortedError:
    return ConnectionAbortedError("the request was given up while its body was sent")


class _Call:
    """The app called for an async request, in a worker thread. A caller that gives up
    (cancelled, timed out) abandons it: the request body is read no further, and an answer
    that comes all the same is closed, whichever of the two threads gets there first."""

    def __init__(self, app: WSGIApplication, environ: dict[str, Any], body: _AsyncBody) -> None:
        self._app = app
        self._environ = environ
        self._body = body
        self._lock = threading.Lock()
        self._abandoned = False
        #: What the app answered, or raised (from the thread, unless abandoned).
        self.outcome: AppResponse | BaseException | None = None

    def __call__(self) -> None:
        try:
            outcome: AppResponse | BaseException = call_app(self._app, self._environ)
        except BaseException as exc:
            outcome = exc
        with self._lock:
            if not self._abandoned:
                self.outcome = outcome
                return
        if isinstance(outcome, AppResponse):
            outcome.body.close()

    def abandon(self) -> None:
        self._body.abandon()
        with self._lock:
            self._abandoned = True
            outcome, self.outcome = self.outcome, None
        if isinstance(outcome, AppResponse):
            outcome.body.close()

    async def run(self, limit: float | None) -> bool:
        """Run the call; False if its answer did not begin within ``limit`` seconds (the read
        timeout) of the app's last read of the request body: the call is left to its thread."""
        body = self._environ["wsgi.input"]  # inprocess._BodyReader: when the app read it last
        done = anyio.Event()

        async def call() -> None:
            try:
                await _in_thread(self, abandon=True)
            finally:
                done.set()

        timed_out = False
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call)
            while not done.is_set():
                # While the app waits for the body, look again a read timeout later.
                idle = 0.0 if body.reading else perf_counter() - body.last_read
                with anyio.move_on_after(None if limit is None else limit - idle):
                    await done.wait()
                if (
                    not done.is_set()
                    and limit is not None
                    and not body.reading
                    and perf_counter() - body.last_read >= limit
                ):
                    timed_out = True
                    tasks.cancel_scope.cancel()
                    break
        return not timed_out


class AsyncEmulatorTransport(httpx.AsyncBaseTransport):
    """An async httpx transport that runs a WSGI app in a worker thread; bodies stream."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = _AsyncBody(request.stream)
        call = _Call(self.app, _environ(request, _sent(body, request)), body)
        limit = _read_timeout(request)
        try:
            answered = await call.run(limit)
        except BaseException:
            call.abandon()
            raise
        if not answered:
            call.abandon()
            raise httpx.ReadTimeout(f"Read timed out. (read timeout={limit})", request=request)
        outcome = call.outcome
        if isinstance(outcome, Dropped):
            raise _dropped(request) from None
        if isinstance(outcome, BodyFailed):
            raise outcome.error from None
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        outcome.body.read_timeout = limit  # called without it: the wait above is timed here
        return _response(outcome, _AsyncAppStream(outcome.body))


class _AsyncAppStream(httpx.AsyncByteStream):
    """The app's response iterable, advanced in worker threads one chunk per step.

    A step holds ``_lock`` while the app produces a chunk. Closing never waits for a step that a
    cancelled reader left running: that step closes the app iterable when it ends.
    """

    def __init__(self, body: _AppIterReader) -> None:
        self._body = body
        self._chunks = body.chunks()
        self._lock = threading.Lock()
        self._closing = False

    def _step(self) -> bytes | None:
        with self._lock:
            chunk = None if self._closing else next(self._chunks, None)
        if self._closing:
            self._close_now()
        return chunk

    def _close_now(self) -> None:
        with self._lock:
            self._body.close()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _reading_errors():
            while (chunk := await _in_thread(self._step, abandon=True)) is not None:
                yield chunk

    async def aclose(self) -> None:
        self._closing = True
        if self._lock.acquire(blocking=False):  # no step running: close now, in a thread
            self._lock.release()
            await _in_thread(self._close_now)
