"""In-process mode: ``requests`` calls for the emulator's hosts go into its WSGI app, no socket.

The router hooks ``requests.Session.get_adapter``, the one place where requests picks a transport
for a URL, and hands back a :class:`WSGIAdapter` for the emulator's hosts. Every other URL keeps
its usual adapter, so ``responses`` and moto's ``mock_aws`` (which both patch
``HTTPAdapter.send``) keep working beside the emulator, whichever was started first. Bodies
stream both ways: a file or generator body is read by the app chunk by chunk, never whole.

When httpx is installed, ``route()`` also routes ``httpx.Client`` and ``httpx.AsyncClient`` the
same way (see :mod:`nvcf_emulator.inprocess_httpx`); the pieces below (:func:`make_environ`,
:func:`call_app`) are shared by both, so both clients meet the same rules.
"""

from __future__ import annotations

import functools
import http.client
import importlib.util
import io
import logging
import os
import stat
import threading
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError, ResponseError
from urllib3.response import HTTPResponse
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout
from werkzeug.exceptions import ClientDisconnected

from .domain.clock import perf_counter
from .headers import make_environ as wsgi_environ
from .http.app import DROP_KEY
from .http.pexec import invocation_domain
from .http.responses import STREAMED_KEY
from .storage.kernel import DEST_ERRORS, kernel_copy

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from .emulator import Emulator

log = logging.getLogger(__name__)

#: How strongly an emulator claims a URL (see :func:`url_matcher`).
Claim = int
NOT_MINE, HOST, OWNER = 0, 1, 2

_T = TypeVar("_T")
_lock = threading.Lock()
_routes: list[tuple[Callable[[str], Claim], WSGIAdapter]] = []
_original_get_adapter = requests.Session.get_adapter


def claimant(routes: Iterable[tuple[Callable[[str], Claim], _T]], url: str) -> _T | None:
    """What to send ``url`` to, of ``routes`` ordered innermost first: the first that owns it
    (its API host, or an upload URL for one of its assets), else the first whose host it is."""
    fallback = None
    for matches, target in routes:
        claim = matches(url)
        if claim == OWNER:
            return target
        if claim and fallback is None:
            fallback = target
    return fallback


def _may_retry(retries: Retry) -> bool:
    """Whether a policy can ever send a request twice or refuse a status (``Retry(0,
    status_forcelist=[503])`` turns a 503 into ``RetryError``); requests' default cannot."""
    return retries.total not in (0, False) or bool(retries.status_forcelist)


def _get_adapter(self: requests.Session, url: str) -> Any:
    adapter = claimant(reversed(_routes), url)
    if adapter is None:
        return _original_get_adapter(self, url)
    mounted = _original_get_adapter(self, url)
    if (
        isinstance(mounted, HTTPAdapter)
        and type(mounted) is not HTTPAdapter
        and _GENUINE_SEND is not None
    ):
        # The user's own subclass: it runs as it would, only its pool is the app.
        return adapter.through(mounted)
    # Keep the retry policy of the adapter the user mounted for this URL (an
    # HTTPAdapter(max_retries=Retry(...))): only the transport is swapped.
    retries = getattr(mounted, "max_retries", None)
    if isinstance(retries, Retry) and _may_retry(retries):
        return adapter.with_retries(retries)
    return adapter


@contextmanager
def route(emulator: Emulator) -> Iterator[None]:
    """Route the emulator's API and storage hosts into its app while the block runs."""
    adapter = WSGIAdapter(emulator.app)
    matches = url_matcher(emulator)
    entry = (matches, adapter)
    with _lock:
        _routes.append(entry)
        requests.Session.get_adapter = _get_adapter  # type: ignore[method-assign]
    try:
        with _route_httpx(emulator.app, matches):
            yield
    finally:
        with _lock:
            _routes.remove(entry)
            if not _routes:
                requests.Session.get_adapter = _original_get_adapter  # type: ignore[method-assign]
            still_routed = any(a.app is emulator.app for _, a in _routes)
        if not still_routed:
            _cut_streams(emulator.app)


class StreamCut(ConnectionResetError):
    """A response still being read when its emulator stopped being routed (closed): what a
    client sees when a server stops mid-response. requests raises ``ChunkedEncodingError``
    from it, the httpx transports ``httpx.RemoteProtocolError``."""

    def __init__(self) -> None:
        super().__init__("the emulator was closed while this response was being read")


#: Streamed responses of each app still being read, cut when the app stops being routed.
_open_bodies: weakref.WeakKeyDictionary[Any, weakref.WeakSet[_AppIterReader]] = (
    weakref.WeakKeyDictionary()
)


def _cut_streams(app: WSGIApplication) -> None:
    with _lock:
        bodies = list(_open_bodies.pop(app, ()))
    for body in bodies:
        body.cut()


def url_matcher(emulator: Emulator) -> Callable[[str], Claim]:
    """How the emulator claims a URL (its hosts are read on every call): ``OWNER`` for its API
    hosts and for upload URLs of its own assets (lately expired ones too), ``HOST`` for other
    URLs on its storage host
    (which every emulator shares by default: the asset decides which one an upload reaches),
    else ``NOT_MINE``."""

    def matches(url: str) -> Claim:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        passthrough = host not in emulator.routed_hosts
        if passthrough:
            # https://<functionId>.invocation.<api host>/...: a pass-through call (the app
            # reads the function from the Host). NVIDIA's nvcf-cli drops the API host's
            # "api." (<fid>.invocation.nvcf.nvidia.com): that form is the emulator's too.
            domain = invocation_domain(host)
            if domain is not None and domain not in emulator.api_hosts:
                domain = f"api.{domain}"
            if domain is None or domain not in emulator.api_hosts:
                return NOT_MINE
            host = domain
        ports = emulator.routed_ports.get(host)
        if ports is not None:
            # A base URL with an explicit port (a served emulator's http://127.0.0.1:PORT/...):
            # other ports on that host are other servers, never this emulator.
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                return NOT_MINE
            if port not in ports:
                return NOT_MINE
        if passthrough or host not in emulator.storage_hosts:
            return OWNER
        asset_id = parts.path.rpartition("/")[2]
        return OWNER if emulator.assets.knows(asset_id) else HOST

    return matches


def _route_httpx(
    app: WSGIApplication, matches: Callable[[str], Claim]
) -> AbstractContextManager[Any]:
    """httpx's routing when httpx is installed (imported only then), else nothing."""
    if importlib.util.find_spec("httpx") is None:
        return nullcontext()
    from .inprocess_httpx import route_httpx

    return route_httpx(app, matches)


class _BodyReader(io.RawIOBase):
    """A read-only stream over bytes, a file object, or an iterable of chunks.

    When the caller's body fails while it is read (a generator raising, a file erroring), the
    app sees what a server sees when a client goes away mid-body (``ClientDisconnected``), and
    the caller gets the original error back, as it would from a broken connection.

    ``last_read`` (real ``perf_counter()``, whatever freezegun does) is when the app last got
    bytes of the body, and ``reading`` whether it waits for some now: a read timeout runs from
    the end of the body sent, as over a socket, never over a slow upload.
    """

    def __init__(self, body: object) -> None:
        self.error: BaseException | None = None
        self.last_read = perf_counter()
        self.reading = False
        self._file: Any = None
        self._iter: Iterator[bytes] | None = None
        self._buf = memoryview(b"")
        #: The body file's descriptor for kernel copies: None not yet looked at, -1 none.
        self._kernel_fd: int | None = None
        if body is None:
            self._file = io.BytesIO(b"")
        elif isinstance(body, bytes | bytearray | memoryview):
            self._file = io.BytesIO(bytes(body))
        elif isinstance(body, str):
            self._file = io.BytesIO(body.encode("utf-8"))
        elif hasattr(body, "read"):
            self._file = body
        elif isinstance(body, Iterable):
            self._iter = (c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in body)
        else:  # pragma: no cover - requests never prepares other body types
            raise TypeError(f"unsupported request body {type(body).__name__}")

    def readable(self) -> bool:
        return True

    def transfer_to(self, fd: int, count: int) -> int | None:
        """Copy up to ``count`` bytes of a body that is a regular file straight into the file
        ``fd`` in the kernel (``copy_file_range``, else ``sendfile``), from the body's current
        position, which then moves on as a read would move it. Returns the bytes copied (0 at
        the end of the file), or ``None`` when the body is no such file or the kernel cannot
        copy it: then it is read as usual. Errors on the destination (a full disk) are raised
        as they are; errors on the body's side count as the body failing, as in a read."""
        src = self._kernel_source()
        if src is None:
            return None
        position = self._file.tell()
        try:
            copied = kernel_copy(src, fd, count, position)
        except OSError as exc:
            if exc.errno in DEST_ERRORS:
                raise
            self.error = exc
            raise ClientDisconnected() from exc
        finally:
            self.last_read = perf_counter()
        if copied is None:
            self._kernel_fd = -1
            return None
        self._file.seek(position + copied)
        return copied

    def _kernel_source(self) -> int | None:
        if self._kernel_fd is None:
            self._kernel_fd = -1
            body = self._file
            if (
                isinstance(body, io.BufferedReader | io.BufferedRandom | io.FileIO)
                and body.seekable()
            ):
                try:
                    fd = body.fileno()
                    if stat.S_ISREG(os.fstat(fd).st_mode):
                        self._kernel_fd = fd
                except (OSError, ValueError):
                    pass
        return None if self._kernel_fd < 0 else self._kernel_fd

    def readinto(self, b: Any) -> int:
        self.reading = True
        try:
            return self._readinto(b)
        except Exception as exc:
            self.error = exc
            raise ClientDisconnected() from exc
        finally:
            self.reading = False
            self.last_read = perf_counter()

    def _readinto(self, b: Any) -> int:
        # Fill the buffer (short only at the end of the body), as a server's body reader does:
        # readers such as ``request.stream.read(limit + 1)`` read once and expect all of it.
        view = memoryview(b).cast("B")
        filled = 0
        while filled < len(view) and (n := self._read_some(view[filled:])):
            filled += n
        return filled

    def _read_some(self, view: memoryview) -> int:
        if self._file is not None and isinstance(self._file, io.RawIOBase | io.BufferedIOBase):
            return self._file.readinto(view) or 0  # straight into the caller's buffer, no copy
        if not self._buf:
            if self._file is not None:  # a text file, or another reader: its data as UTF-8
                data = self._file.read(len(view))
                self._buf = memoryview(data.encode("utf-8") if isinstance(data, str) else data)
            while not self._buf and self._iter is not None:
                try:
                    self._buf = memoryview(next(self._iter))
                except StopIteration:
                    self._iter = None
            self._buf = self._buf.cast("B")
        n = min(len(view), len(self._buf))
        view[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class _AsItComes(HTTPResponse):
    """urllib3's response, streamed as the app yields: ``stream()`` (what ``iter_content`` and
    ``iter_lines`` read) hands over each read as soon as it has bytes, as urllib3 does for a
    chunked response on a socket. Its own ``stream()`` fills every ``amt``-byte read first, so
    server-sent events stayed back until 512 bytes had come or the container was done."""

    def stream(
        self, amt: int | None = 2**16, decode_content: bool | None = None
    ) -> Generator[bytes, None, None]:
        if amt == 0:
            return
        while data := self.read1(amt, decode_content=decode_content):
            yield data


class _Pump:
    """Pulls a streamed body's chunks on a thread of its own, one chunk per request of the
    reader (no read-ahead), so that a reader waiting for the next chunk can be woken by a cut
    while the container is still blocked inside its generator: only the thread running a
    generator can leave it. Once started, the pump also owns closing the app iterable."""

    def __init__(self, it: Iterator[bytes], app_iter: Iterable[bytes]) -> None:
        self._it = it
        self._app_iter = app_iter
        self._cond = threading.Condition()
        self._wanted = False
        self._busy = False  # inside the app's next()
        self._stopped = False
        self._result: tuple[str, Any] | None = None
        self._thread: threading.Thread | None = None

    def pull(self, timeout: float | None = None) -> bytes:
        """The next chunk; ``StopIteration`` at the end, what the app raised,
        :class:`StreamCut` once stopped (from another thread too), or :class:`TimedOut` if
        none came within ``timeout`` seconds (a read timeout: the stream is then done with)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="nvcf-emulator-stream", daemon=True
                )
                self._thread.start()
            self._wanted = True
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._result is not None or self._stopped, timeout):
                raise TimedOut(f"Read timed out. (read timeout={timeout})")
            if self._result is None:
                raise StreamCut()
            (kind, value), self._result = self._result, None
        if kind == "chunk":
            return cast(bytes, value)
        if kind == "end":
            raise StopIteration
        raise value

    def stop(self) -> None:
        """Wake a waiting reader with :class:`StreamCut` and end the pump; the app iterable
        is closed on the pump's thread once the app's current ``next()`` (if any) returns."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def close(self) -> None:
        """Stop, and wait for the app iterable to be closed unless the app is still inside
        ``next()`` (a blocked container): then it is closed when it yields."""
        self.stop()
        with self._cond:
            thread, busy = self._thread, self._busy
            if thread is None:
                self._thread = threading.current_thread()  # never started: no pump will run
        if thread is None:
            _close_app_iter(self._app_iter)
        elif not busy and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._wanted and not self._stopped:
                        self._cond.wait()
                    if self._stopped:
                        return
                    self._wanted, self._busy = False, True
                result: tuple[str, Any]
                try:
                    result = ("chunk", next(self._it))
                except StopIteration:
                    result = ("end", None)
                except BaseException as exc:
                    result = ("error", exc)
                with self._cond:
                    self._busy = False
                    if self._stopped:
                        return
                    self._result = result
                    self._cond.notify_all()
                if result[0] != "chunk":
                    return
        finally:
            try:
                _close_app_iter(self._app_iter)
            except Exception:
                log.warning("closing a streamed response failed", exc_info=True)


def _close_app_iter(app_iter: Iterable[bytes]) -> None:
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()


class _AppIterReader(io.RawIOBase):
    """The WSGI response iterable as a stream, so ``requests`` can read it lazily."""

    def __init__(self, app_iter: Iterable[bytes]) -> None:
        self._app_iter = app_iter
        self._it = iter(app_iter)
        self._buf = b""
        self._cut = False
        self._pump: _Pump | None = None
        #: The caller's read timeout: how long a streamed answer's next chunk may take
        #: (:meth:`readinto`, :meth:`chunks`).
        self.read_timeout: float | None = None

    def readable(self) -> bool:
        return True

    def hand_off(self) -> None:
        """Pull the rest on a pump thread (a streamed answer), so :meth:`cut` wakes a reader
        that waits for the app's next chunk."""
        self._pump = _Pump(self._it, self._app_iter)

    def cut(self) -> None:
        """End the stream as a dropped connection would: what was already pulled can still be
        read, the next chunk raises :class:`StreamCut`; a reader waiting for it is woken."""
        self._cut = True
        if self._pump is not None:
            self._pump.stop()

    def _next(self, timeout: float | None = None) -> bytes:
        """The app's next chunk; ``StopIteration`` at the end, :class:`StreamCut` once cut,
        :class:`TimedOut` if a streamed answer's next chunk took more than ``timeout`` s."""
        if not self._cut:
            if self._pump is None:
                return next(self._it)
            try:
                return self._pump.pull(timeout)
            except StreamCut:
                pass
        self.close()
        raise StreamCut()

    def prime(self) -> None:
        """Pull the first chunk (a generator app calls ``start_response`` only then)."""
        for chunk in self._it:
            self._buf = chunk
            if chunk:
                break

    def chunks(self) -> Iterator[bytes]:
        """The response body chunk by chunk, as the app yields it (for httpx's streams); a
        streamed answer whose next chunk takes more than :attr:`read_timeout` raises
        :class:`TimedOut`."""
        if self._buf:
            chunk, self._buf = self._buf, b""
            yield chunk
        while True:
            try:
                chunk = self._next(self.read_timeout)
            except StopIteration:
                return
            if chunk:
                yield chunk

    def readinto(self, b: Any) -> int:
        """Read as a socket does: a streamed answer's next chunk that takes longer than
        :attr:`read_timeout` raises ``TimeoutError`` (urllib3 makes it ``ReadTimeoutError``)."""
        view = memoryview(b).cast("B")
        while not self._buf:
            try:
                self._buf = self._next(self.read_timeout)
            except StopIteration:
                return 0
            except TimedOut as exc:
                raise TimeoutError(str(exc)) from None
        n = min(len(view), len(self._buf))
        view[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            if self._pump is not None:
                self._pump.close()
            else:
                _close_app_iter(self._app_iter)
        super().close()


def _header_text(value: str | bytes) -> str:
    """A header value as http.client sends it: bytes as they are, text in latin-1 (else the
    same ``UnicodeEncodeError`` http.client raises)."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    value.encode("latin-1")
    return value


def read_timeout(timeout: object) -> float | None:
    """The read timeout in a ``requests`` ``timeout=`` (a number, a (connect, read) pair or
    a urllib3 ``Timeout``)."""
    if isinstance(timeout, tuple):
        timeout = timeout[1] if len(timeout) == 2 else None
    elif isinstance(timeout, Timeout):
        timeout = timeout.read_timeout
    return float(timeout) if isinstance(timeout, int | float) else None


class TimedOut(Exception):
    """The app's answer began after the caller's read timeout (each client raises its own
    ``ReadTimeout`` from it)."""


def make_environ(
    method: str, url_text: str, headers: list[tuple[str, str]], body: object
) -> dict[str, Any]:
    """A WSGI environ for any client's request; ``body`` is bytes, a file or an iterable of
    chunks, and becomes a streaming ``wsgi.input``."""
    url = urlsplit(url_text)
    scheme = url.scheme or "http"
    environ = wsgi_environ(
        method,
        url.path or "/",
        url.query,
        [(k, v) for k, v in headers if k.lower() != "host"],
        _BodyReader(body),
        host=url.netloc.rpartition("@")[2],
        server_name=url.hostname or "localhost",
        port=url.port or (443 if scheme == "https" else 80),
        scheme=scheme,
    )
    for name, value in headers:
        if name.lower() == "host":
            environ["HTTP_HOST"] = value
    if "CONTENT_LENGTH" not in environ:
        # A body of unknown length (a generator, sent chunked on the wire): read to its end.
        environ["wsgi.input_terminated"] = True
    return environ


class BodyFailed(Exception):
    """The caller's request body raised while the app read it (``error`` is what it raised)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"request body failed while being sent: {error!r}")
        self.error = error


class Dropped(BodyFailed):
    """An injected fault dropped the connection before any answer."""

    def __init__(self) -> None:
        super().__init__(ConnectionResetError("connection dropped (injected fault)"))


@dataclass
class AppResponse:
    """What the app answered; ``body`` streams the rest of its iterable (close it when done)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: _AppIterReader


def call_app(
    app: WSGIApplication, environ: dict[str, Any], timeout: float | None = None
) -> AppResponse:
    """Call ``app`` up to its status line; raises :class:`BodyFailed` if the body failed, and
    :class:`TimedOut` if the status line came more than ``timeout`` seconds (the read timeout)
    after the app last read the request body. In-process, the app cannot be cut short: the
    timeout is checked once the answer begins, and the caller gets the error a client on a
    socket gets (later than it would)."""
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"] = status
        captured["headers"] = headers
        return lambda data: None

    body = _AppIterReader(app(environ, start_response))
    body.read_timeout = timeout
    streamed = bool(environ.get(STREAMED_KEY))  # a buffered answer went out whole: no cut
    if streamed:
        with _lock:
            bodies = _open_bodies.get(app)
            if bodies is None:
                bodies = _open_bodies[app] = weakref.WeakSet()
            bodies.add(body)
    try:
        if "status" not in captured:  # a generator app calls start_response on first next()
            body.prime()
        if streamed:
            body.hand_off()
        failed = environ["wsgi.input"].error
        if failed is not None:
            raise BodyFailed(failed)
        if environ.get(DROP_KEY):
            # An injected fault dropped the connection: the caller sees what a reset looks like.
            raise Dropped()
        elapsed = perf_counter() - environ["wsgi.input"].last_read
        if timeout is not None and elapsed > timeout:
            raise TimedOut(
                f"Read timed out. (read timeout={timeout}) (in-process: the emulator "
                f"answered {elapsed:.3f} s after the request body; the call is not cut short)"
            )
    except BaseException:
        body.close()
        raise
    code_text, _, reason = captured["status"].partition(" ")
    code = int(code_text)
    return AppResponse(code, reason or HTTPStatus(code).phrase, captured["headers"], body)


class AppPool:
    """What ``HTTPAdapter.send`` takes for a urllib3 connection pool, for one scheme and host:
    its ``urlopen`` calls the app. It applies a urllib3 ``Retry`` policy as urllib3's pool does
    over a socket: statuses in ``status_forcelist``, dropped connections and read timeouts are
    retried (with the policy's backoff) when the body can be sent again (none, bytes, or a
    seekable file).

    It raises what urllib3 raises (``ProtocolError``, ``ReadTimeoutError``, ``MaxRetryError``),
    so a user's ``HTTPAdapter`` subclass, whose ``send`` runs unchanged in front of it, turns
    them into the usual ``requests`` exceptions.
    """

    def __init__(self, app: WSGIApplication, url: str) -> None:
        self.app = app
        parts = urlsplit(url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        # What HTTPAdapter.cert_verify sets on a pool (unused: there is no TLS in-process).
        self.cert_reqs: str | None = None
        self.ca_certs: str | None = None
        self.ca_cert_dir: str | None = None
        self.cert_file: str | None = None
        self.key_file: str | None = None

    def urlopen(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Any = None,
        retries: Retry | bool | int | None = None,
        redirect: bool = True,
        timeout: object = None,
        **_: Any,
    ) -> HTTPResponse:
        if not isinstance(retries, Retry):
            retries = Retry.from_int(retries, redirect=redirect, default=0)
        full_url = url if "://" in url.partition("?")[0] else self._origin + url
        pairs = [(k, _header_text(v)) for k, v in (headers or {}).items()]
        limit = read_timeout(timeout)
        if not _may_retry(retries):
            return self._once(method, full_url, pairs, body, limit)  # requests' default
        replayable = body is None or isinstance(body, bytes | str) or hasattr(body, "seek")
        position = body.tell() if replayable and hasattr(body, "tell") else None
        while True:
            if position is not None:
                body.seek(position)
            try:
                response = self._once(method, full_url, pairs, body, limit)
            except (ProtocolError, ReadTimeoutError) as exc:
                # A drop or a late answer: a read error to urllib3, retried as over a socket
                # when the policy allows it for this method (a POST only with allowed_methods).
                if not replayable:
                    raise
                retries = retries.increment(method, full_url, error=exc)
                retries.sleep()
                continue
            has_retry_after = bool(response.headers.get("Retry-After"))
            if not replayable or not retries.is_retry(method, response.status, has_retry_after):
                return response
            try:
                retries = retries.increment(method, full_url, response=response)
            except MaxRetryError:
                if retries.raise_on_status:
                    response.close()
                    raise
                return response
            response.close()
            retries.sleep(response)

    def _once(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: object,
        limit: float | None,
    ) -> HTTPResponse:
        try:
            answer = call_app(self.app, make_environ(method, url, headers, body), limit)
        except TimedOut as exc:
            raise ReadTimeoutError(cast(Any, self), url, str(exc)) from None
        except BodyFailed as exc:
            if not isinstance(exc.error, OSError):
                raise exc.error from None  # the body's own error, as over a socket
            raise ProtocolError("Connection aborted.", exc.error) from exc.error
        return _AsItComes(
            body=io.BufferedReader(answer.body, 256 * 1024),
            headers=cast(Any, answer.headers),  # a list of pairs, as urllib3 accepts
            status=answer.status,
            version=11,
            version_string="HTTP/1.1",
            reason=answer.reason,
            preload_content=False,
            decode_content=False,
            original_response=_with_cookies(answer.headers),
            request_method=method,
            request_url=url,
            enforce_content_length=False,
        )

    def close(self) -> None:
        pass


class WSGIAdapter(HTTPAdapter):
    """A ``requests`` transport that calls a WSGI app instead of opening a connection.

    ``send`` is its own, not ``HTTPAdapter.send`` (which ``responses`` and moto patch): it hands
    the request to an :class:`AppPool` and maps urllib3's errors as ``HTTPAdapter`` does.
    """

    def __init__(self, app: WSGIApplication, max_retries: Retry | None = None) -> None:
        super().__init__(max_retries=max_retries or 0)
        self.app = app
        self._with_retries: weakref.WeakKeyDictionary[Retry, WSGIAdapter] = (
            weakref.WeakKeyDictionary()
        )

    def with_retries(self, retries: Retry) -> WSGIAdapter:
        """This adapter with a user's retry policy (one per policy object, reused)."""
        adapter = self._with_retries.get(retries)
        if adapter is None:
            adapter = self._with_retries[retries] = WSGIAdapter(self.app, retries)
        return adapter

    def through(self, mounted: HTTPAdapter) -> HTTPAdapter:
        """The user's own adapter (an ``HTTPAdapter`` subclass), working as it would over a
        socket (its ``send``, ``add_headers``, ``request_url``, ... run) but with its
        connection pool replaced by the app."""
        proxy: Any = object.__new__(_through_class(cast(Any, type(mounted))))
        proxy.__dict__.update(_nvcf_adapter=mounted, _nvcf_app=self.app)
        return cast(HTTPAdapter, proxy)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: object = None,
        verify: object = True,
        cert: object = None,
        proxies: object = None,
    ) -> requests.Response:
        url = request.url or ""
        try:
            raw = AppPool(self.app, url).urlopen(
                request.method or "GET",
                url,
                body=request.body,
                headers=request.headers,
                retries=self.max_retries,
                timeout=timeout,
            )
        except ProtocolError as exc:
            raise requests.exceptions.ConnectionError(exc, request=request) from None
        except ReadTimeoutError as exc:
            raise requests.exceptions.ReadTimeout(exc, request=request) from None
        except MaxRetryError as exc:
            if isinstance(exc.reason, ResponseError):
                raise requests.exceptions.RetryError(exc, request=request) from None
            raise requests.exceptions.ConnectionError(exc, request=request) from None
        response = self.build_response(request, raw)
        if not stream:
            _ = response.content
        return response


def _genuine_send() -> Any:
    """``HTTPAdapter.send`` as requests defines it, or ``None`` when it was already patched
    (``responses``, moto) as this module was imported."""
    send = HTTPAdapter.__dict__["send"]
    return send if getattr(send, "__module__", None) == "requests.adapters" else None


#: Noted at package import (emulator.py imports this module), before a mock started later
#: patches it.
_GENUINE_SEND = _genuine_send()


class _GenuineSend(HTTPAdapter):
    """Sits between a user's adapter class and ``HTTPAdapter`` in a proxy's MRO, so that their
    ``super().send(...)`` reaches requests' own ``send`` even while ``responses`` or moto patch
    ``HTTPAdapter.send``: the emulator's hosts never reach their mocks."""

    send = _GENUINE_SEND


@functools.cache
def _through_class(cls: type[HTTPAdapter]) -> type[HTTPAdapter]:
    """A subclass of a user's adapter class whose instances stand for one mounted adapter
    (attributes are read from it, live) and whose connection pool is an :class:`AppPool`."""

    def pool(self: Any, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> AppPool:
        return AppPool(self._nvcf_app, request.url or "")

    def pool_for_url(self: Any, url: str, *args: Any, **kwargs: Any) -> AppPool:
        return AppPool(self._nvcf_app, url)

    def __getattr__(self: Any, name: str) -> Any:
        if name.startswith("_nvcf_"):
            raise AttributeError(name)
        return getattr(self._nvcf_adapter, name)

    def __setattr__(self: Any, name: str, value: Any) -> None:
        setattr(self._nvcf_adapter, name, value)  # a counter in send() counts on the adapter

    def __delattr__(self: Any, name: str) -> None:
        delattr(self._nvcf_adapter, name)

    def close(self: Any) -> None:
        pass  # the mounted adapter's pools are the user's to close

    return type(
        f"{cls.__name__}ToEmulator",
        (cls, _GenuineSend),
        {
            "__getattr__": __getattr__,
            "__setattr__": __setattr__,
            "__delattr__": __delattr__,
            "get_connection_with_tls_context": pool,  # requests >= 2.32.2
            "get_connection": pool_for_url,  # older requests
            "close": close,
            "__module__": __name__,
        },
    )


class _Original:
    """What ``requests`` reads a response's cookies from (``_original_response.msg``)."""

    def __init__(self, msg: http.client.HTTPMessage) -> None:
        self.msg = msg

    def isclosed(self) -> bool:
        return True

    def close(self) -> None:  # urllib3 closes it when a read fails
        pass


def _with_cookies(headers: list[tuple[str, str]]) -> Any:
    """An answer's ``Set-Cookie`` headers where ``requests`` looks for them (``None`` without
    any: then there is nothing for it to extract)."""
    cookies = [(k, v) for k, v in headers if k.lower() == "set-cookie"]
    if not cookies:
        return None
    msg = http.client.HTTPMessage()
    for key, value in cookies:
        msg[key] = value
    return _Original(msg)
