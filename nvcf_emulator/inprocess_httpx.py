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
gives it over a real connection.

**Async.** The WSGI app is blocking, so :class:`AsyncEmulatorTransport` runs it in a worker
thread (anyio, which httpx depends on: asyncio and trio alike) and the event loop keeps
serving other tasks while a slow container works. An async request body is pulled into that
thread one chunk at a time, and the response is handed back one chunk at a time. Cancelling a
request returns at once; the app finishes in its thread as it would on a server whose client
went away.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import httpx

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


def _cut(exc: ConnectionResetError) -> httpx.RemoteProtocolError:
    """What httpx raises when a server closes the connection in the middle of a body."""
    return httpx.RemoteProtocolError(
        f"peer closed connection without sending complete message body ({exc})"
    )


class EmulatorTransport(httpx.BaseTransport):
    """A sync httpx transport that calls a WSGI app; bodies stream both ways."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            answer = call_app(self.app, _environ(request, request.stream), _read_timeout(request))
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
        try:
            yield from self._body.chunks()
        except ConnectionResetError as exc:  # StreamCut, or the container's stream broke
            raise _cut(exc) from None

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


def _pull(stream: httpx.AsyncByteStream) -> Iterator[bytes]:
    """An async body as a blocking iterator, for the app's thread: one chunk per step."""
    chunks = stream.__aiter__()
    done = object()

    async def step() -> object:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return done

    while (chunk := anyio.from_thread.run(step)) is not done:
        yield cast(bytes, chunk)


class AsyncEmulatorTransport(httpx.AsyncBaseTransport):
    """An async httpx transport that runs a WSGI app in a worker thread; bodies stream."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        stream = request.stream
        # Bytes, JSON and form bodies are sync streams too: read them in the thread directly.
        body = stream if isinstance(stream, httpx.SyncByteStream) else _pull(stream)
        environ = _environ(request, body)
        abandoned = threading.Event()

        def run() -> AppResponse:
            answer = call_app(self.app, environ)
            if abandoned.is_set():
                answer.body.close()
            return answer

        limit = _read_timeout(request)
        try:
            with anyio.fail_after(limit):  # here the call is cut short, as on a socket
                answer = await _in_thread(run, abandon=True)
        except TimeoutError:
            abandoned.set()
            raise httpx.ReadTimeout(
                f"Read timed out. (read timeout={limit})", request=request
            ) from None
        except Dropped:
            raise _dropped(request) from None
        except BodyFailed as exc:
            raise exc.error from None
        except BaseException:
            abandoned.set()
            raise
        return _response(answer, _AsyncAppStream(answer.body))


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
        try:
            while (chunk := await _in_thread(self._step, abandon=True)) is not None:
                yield chunk
        except ConnectionResetError as exc:  # StreamCut, or the container's stream broke
            raise _cut(exc) from None

    async def aclose(self) -> None:
        self._closing = True
        if self._lock.acquire(blocking=False):  # no step running: close now, in a thread
            self._lock.release()
            await _in_thread(self._close_now)
