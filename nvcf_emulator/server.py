"""Server mode: the emulator's WSGI app on a real socket (werkzeug's threaded server, with
HTTP/1.1 keep-alive)."""

from __future__ import annotations

import contextlib
import io
import logging
import selectors
import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from werkzeug.exceptions import InternalServerError
from werkzeug.serving import (
    DechunkedInput,
    ThreadedWSGIServer,
    WSGIRequestHandler,
    connection_dropped_errors,
)

from .headers import add_headers

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from .domain.clock import Clock
    from .emulator import Emulator

log = logging.getLogger("nvcf_emulator.server")

#: Request body an app left unread that is read and dropped after the response, so that the
#: connection can carry the next request; with more left over, the connection is closed.
DRAIN_LIMIT = 1 << 20


class _SocketInput(io.RawIOBase):
    """A request body of known length on a kept-alive connection: at most ``length`` bytes of
    the connection's reader, counted, so that what the app leaves unread can be skipped before
    the next request. The upload splicer moves bytes from the socket under it
    (``socket_reader``) and reports them (``consumed``)."""

    def __init__(self, reader: io.BufferedReader, length: int) -> None:
        super().__init__()
        self.socket_reader = reader
        self.remaining = length

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.remaining <= 0:
            return 0
        n = self.socket_reader.readinto(memoryview(b).cast("B")[: self.remaining]) or 0
        self.remaining -= n
        return n

    def consumed(self, n: int) -> None:
        self.remaining -= n


def _unread(body: object) -> int | None:
    """Request body bytes not read yet (``None``: not known, a chunked body not read to its
    end)."""
    if isinstance(body, _SocketInput):
        return max(0, body.remaining)
    if isinstance(body, DechunkedInput):
        return 0 if getattr(body, "_done", False) else None
    return 0


class _Handler(WSGIRequestHandler):
    """werkzeug's handler with the emulator's header rule, an idle timeout per connection and
    HTTP/1.1 keep-alive.

    werkzeug's dev server closes every connection after one response, since it cannot tell
    where a request body it did not read ends. This handler counts the body: a connection is
    kept when the app read its body (or at most :data:`DRAIN_LIMIT` bytes of it are left, which
    are read and dropped), the response had a length or was chunked and was written whole, and
    the client did not ask to close. Otherwise the response says ``Connection: close``."""

    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY: on a kept-alive connection, a small write waiting for the client's delayed
    #: ACK (Nagle) costs 40 ms per request.
    disable_nagle_algorithm = True
    _headers_buffer: list[bytes]  # http.server's, written here with the body's first bytes

    def setup(self) -> None:
        # A client that sends nothing for this long loses its connection (frees the thread):
        # slow-header and stalled-body clients cannot hold the server's threads forever.
        self.timeout = self.server.idle_timeout  # type: ignore[attr-defined,misc]
        super().setup()

    def make_environ(self) -> Any:
        environ = super().make_environ()
        # werkzeug drops headers with "_" in their names; apply the emulator's one rule instead.
        underscored = [(k, v) for k, v in self.headers.items() if "_" in k]
        add_headers(environ, underscored)
        if "wsgi.input_terminated" not in environ:  # not chunked: Content-Length bytes, or none
            try:
                length = max(0, int(environ.get("CONTENT_LENGTH") or 0))
            except ValueError:
                length = 0
                self.close_connection = True  # where this body ends is anybody's guess
            environ["wsgi.input"] = _SocketInput(self.rfile, length)  # type: ignore[arg-type]
        return environ

    def parse_request(self) -> bool:
        # The request line has arrived: from here until its response is written, this
        # connection is busy, and a graceful stop waits for it (idle keep-alives it closes).
        self._busy = True
        self.server.idle.discard(self.connection)  # type: ignore[attr-defined]
        self.server.busy.begin()  # type: ignore[attr-defined]
        return bool(super().parse_request())

    def handle_one_request(self) -> None:
        self._busy = False
        self.server.idle.add(self.connection)  # type: ignore[attr-defined]
        try:
            super().handle_one_request()
        finally:
            self.server.idle.discard(self.connection)  # type: ignore[attr-defined]
            if self._busy:
                self.server.busy.end()  # type: ignore[attr-defined]

    def run_wsgi(self) -> None:
        """werkzeug's ``run_wsgi``, keeping the connection when the next request can follow."""
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.environ = environ = self.make_environ()
        chunks_allowed = self.request_version >= "HTTP/1.1"
        status_set: str | None = None
        headers_set: list[tuple[str, str]] | None = None
        status_sent: str | None = None
        chunked = False
        declared: int | None = None  # the response's Content-Length (None: none, or no body)
        written = 0

        def write(data: bytes) -> None:
            nonlocal status_sent, chunked, declared, written
            assert status_set is not None and headers_set is not None, "write() before start"
            if status_sent is None:
                status_sent = status_set
                code_text, _, reason = status_sent.partition(" ")
                code = int(code_text)
                self.send_response(code, reason)
                for key, value in headers_set:
                    self.send_header(key, value)
                    if key.lower() == "content-length":
                        try:
                            declared = int(value)
                        except ValueError:
                            self.close_connection = True
                bodyless = (
                    environ["REQUEST_METHOD"] == "HEAD" or 100 <= code < 200 or code in (204, 304)
                )
                if bodyless:
                    declared = None
                elif declared is None:
                    if chunks_allowed:
                        chunked = True
                        self.send_header("Transfer-Encoding", "chunked")
                    else:  # an HTTP/1.0 client: the body ends where the connection does
                        self.close_connection = True
                left = _unread(environ["wsgi.input"])
                if left is None or left > DRAIN_LIMIT:
                    self.close_connection = True
                if self.close_connection:
                    self.send_header("Connection", "close")
                # The head goes out with the first bytes of the body: one send, not two.
                self._headers_buffer.append(b"\r\n")
                head = b"".join(self._headers_buffer)
                self._headers_buffer = []
            else:
                head = b""
            if data:
                if chunked:
                    self.wfile.write(b"%b%x\r\n%b\r\n" % (head, len(data), data))
                else:
                    self.wfile.write(head + data if head else data)
                written += len(data)
            elif head:
                self.wfile.write(head)
            self.wfile.flush()

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status_set, headers_set
            if exc_info:
                try:
                    if status_sent is not None:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif headers_set:
                raise AssertionError("Headers already set")
            status_set, headers_set = status, headers
            return write

        def execute(app: WSGIApplication) -> None:
            application_iter = app(environ, start_response)
            try:
                for data in application_iter:
                    write(data)
                if status_sent is None:
                    write(b"")
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                if declared is not None and written != declared:
                    self.close_connection = True  # the client cannot tell where this one ended
            finally:
                body = environ["wsgi.input"]
                if not self.close_connection:
                    self._skip_unread(body)
                if self.close_connection and _unread(body) != 0:
                    self._drain_before_close()
                close = getattr(application_iter, "close", None)
                if close is not None:
                    close()

        try:
            execute(self.server.app)
        except connection_dropped_errors as e:
            self.close_connection = True
            self.connection_dropped(e, environ)
        except Exception:
            if self.server.passthrough_errors:
                raise
            self.close_connection = True
            log.exception("error on request %s %s", self.command, self.path)
            with contextlib.suppress(Exception):
                if status_sent is None:  # nothing sent yet: answer a 500 instead
                    status_set = headers_set = None
                    execute(InternalServerError())

    def _skip_unread(self, body: object) -> None:
        """Read and drop what the app left of the request body (at most DRAIN_LIMIT bytes, as
        checked before the response went out), so that the next request starts clean."""
        left = _unread(body)
        if not left:
            return
        try:
            while left and (chunk := body.read(min(left, 64 * 1024))):  # type: ignore[attr-defined]
                left -= len(chunk)
        except (OSError, ValueError):
            pass
        if left:
            self.close_connection = True  # the client stopped sending mid-body

    def _drain_before_close(self) -> None:
        # As werkzeug does before closing: read what the client is still sending (briefly), so
        # that it sees the response (a 413, say) instead of a connection reset.
        with selectors.DefaultSelector() as selector:
            selector.register(self.connection, selectors.EVENT_READ)
            total = reads = 0
            while selector.select(timeout=0.01):
                try:
                    data = self.rfile.read1(10_000_000)
                except OSError:
                    break
                total += len(data)
                reads += 1
                if not data or total >= 10_000_000_000 or reads > 1000:
                    break

    def log_error(self, format: str, *args: Any) -> None:
        if format.startswith("Request timed out"):  # an idle keep-alive connection: normal
            log.debug("closing an idle connection from %s", self.address_string())
            return
        super().log_error(format, *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The app writes the access line itself (with the NVCF request id), in both modes.
        pass


class _Busy:
    """Counts requests being served: from their request line to the end of their response."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = threading.Condition()

    def begin(self) -> None:
        with self.idle:
            self.count += 1

    def end(self) -> None:
        with self.idle:
            self.count -= 1
            self.idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self.idle:
            return self.idle.wait_for(lambda: self.count <= 0, timeout)


class _Server(ThreadedWSGIServer):
    """Tracks open connections so that stopping closes them and joins their threads, and
    serves at most ``max_connections`` at once (further ones wait in the listen backlog)."""

    daemon_threads = True

    def __init__(self, *args: Any, max_connections: int = 64, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._conns: dict[socket.socket, threading.Thread | None] = {}
        self._conns_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self.busy = _Busy()
        #: Kept-alive connections waiting for their next request.
        self.idle: set[socket.socket] = set()
        #: Seconds a connection may send nothing before it is closed.
        self.idle_timeout: float = 30.0
        self.closing = False

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Every slot is taken: idle keep-alive connections give theirs up (their clients
            # reconnect), so that a new client is not kept waiting for an idle one's timeout.
            for sock in list(self.idle):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            while not self._slots.acquire(timeout=0.05):
                if self.closing:
                    with contextlib.suppress(OSError):
                        request.close()
                    return
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self._conns_lock:
            self._conns[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            tracked = self._conns.pop(request, None) is not None
        super().shutdown_request(request)
        if tracked:
            self._slots.release()

    def close_connections(self, timeout: float = 5.0) -> None:
        with self._conns_lock:
            conns = list(self._conns.items())
        for sock, _ in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for _, thread in conns:
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)


class EmulatorServer:
    """An :class:`Emulator` served on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        emulator: Emulator,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        own_storage_urls: bool = True,
        max_connections: int = 64,
    ) -> None:
        """``own_storage_urls=False`` leaves upload URLs pointing where they did (the dashboard
        of an in-process emulator); otherwise they point at this server, unless the emulator's
        ``storage_base_url`` is set. At most ``max_connections`` connections are served at
        once (one thread each); when all are taken, idle keep-alive ones are closed for a new
        client, and further clients wait in the listen backlog."""
        self.emulator = emulator
        # Bind ourselves: werkzeug's own bind prints and calls sys.exit() when the port is taken,
        # which a library must not do. A plain OSError reaches the caller instead.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family, backlog=128)
        try:
            self._server = _Server(
                host,
                port,
                emulator.app,
                handler=_Handler,
                fd=listener.fileno(),
                max_connections=max_connections,
            )
        finally:
            listener.close()  # werkzeug holds its own duplicate of the socket
        self.host = host
        self.port = int(self._server.server_address[1])
        bracketed = f"[{host}]" if ":" in host else host
        self.url = f"http://{bracketed}:{self.port}"
        if own_storage_urls and emulator.config.storage_base_url is None:
            emulator.storage_url = f"{self.url}/{emulator.config.bucket}"
        self._thread: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None
        self._stopping = threading.Event()

    # The same inspection surface as the emulator, so fixtures look alike in both modes.
    @property
    def base_url(self) -> str:
        return self.url

    @property
    def api_key(self) -> str:
        return self.emulator.api_key

    @property
    def headers(self) -> dict[str, str]:
        return self.emulator.headers

    @property
    def clock(self) -> Clock:
        return self.emulator.clock

    @property
    def idle_timeout(self) -> float:
        """Seconds a connection may stay silent (mid-request or idle) before it is closed."""
        return self._server.idle_timeout

    @idle_timeout.setter
    def idle_timeout(self, seconds: float) -> None:
        self._server.idle_timeout = seconds

    @property
    def busy_connections(self) -> int:
        """Requests being served right now (from their request line to their response)."""
        return self._server.busy.count

    def __getattr__(self, name: str) -> Any:
        return getattr(self.emulator, name)

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name=f"nvcf-emulate:{self.port}", daemon=True
            )
            self._thread.start()
            self._stopping.clear()
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name=f"nvcf-emulate-sweep:{self.port}", daemon=True
            )
            self._sweeper.start()
        return self

    def _sweep_loop(self) -> None:
        # Expired assets lose their bytes even when no request comes in to trigger the sweep.
        while not self._stopping.wait(1.0):
            try:
                self.emulator.maybe_sweep()
            except Exception:  # pragma: no cover - a sweep failure must not kill the server
                log.exception("sweep failed")

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace`` seconds), close
        idle keep-alive connections and join every thread. Takes milliseconds when idle."""
        server = self._server
        server.closing = True
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.join(5)
            self._sweeper = None
        if self._thread is None:
            server.server_close()
            return
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        # serve_forever only looks at the shutdown flag between polls (0.5 s apart): wake it
        # with a connection so stopping costs milliseconds.
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.port), timeout=0.05).close()
            stopper.join(0.01)
        if not server.busy.wait_idle(grace):
            log.warning("stopping with requests still in flight after %.1f s", grace)
        server.close_connections()
        server.server_close()
        if self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
