"""One HTTP/1.1 connection of server mode: werkzeug's request handler, with keep-alive.

werkzeug's dev server closes every connection after one response, since it cannot tell where a
request body it did not read ends. :class:`Handler` frames every request itself:

- a body is ``Content-Length`` bytes (:class:`LengthBody`) or chunked (:class:`ChunkedBody`,
  with chunk extensions and trailers). A transfer coding that does not end in chunked is a
  ``400``. Doubtful framing (conflicting lengths, a length that is not a plain number, a length
  and chunked together, chunked from an HTTP/1.0 client) is answered (a bad length by the app,
  as S3 does, with no body read), then the connection closes, as RFC 9112 asks, so that no
  bytes of one request can be read as another;
- after the answer, up to :data:`DRAIN_LIMIT` bytes of body the app left unread are read and
  dropped; with more left, or a chunked body not read to its end, the answer says
  ``Connection: close``;
- ``Expect: 100-continue`` is answered when the app first reads the body: a request refused
  before that (a bad signature on a 5 GB upload) is answered at once, and the connection then
  closes, since the client may or may not send the body;
- a response is framed by its ``Content-Length`` (bytes past it are not sent, and the
  connection closes) or chunked, and its head goes out with its first body bytes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import selectors
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import ClientDisconnected, InternalServerError
from werkzeug.serving import WSGIRequestHandler, connection_dropped_errors

from .headers import add_headers

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger("nvcf_emulator.server")

#: Request body an app left unread that is read and dropped after the response, so that the
#: connection can carry the next request; with more left over, the connection is closed.
DRAIN_LIMIT = 1 << 20

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: The first byte of a TLS record carrying a handshake (a ClientHello): no HTTP method starts so.
_TLS_HANDSHAKE = b"\x16"
_DIGITS = re.compile(r"[0-9]{1,19}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
#: Trailer section of a chunked body: at most this many lines of at most 8 KiB.
_MAX_TRAILERS = 100


class _Body(io.RawIOBase):
    """A request body on the connection's reader; sends the ``100 Continue`` a client waits for
    before it is first read."""

    def __init__(self, reader: io.BufferedReader, wfile: Any, expecting: bool) -> None:
        super().__init__()
        self._reader = reader
        self._wfile = wfile
        #: The client waits for "100 Continue" before it sends the body; not sent yet.
        self.expecting = expecting

    def readable(self) -> bool:
        return True

    def _ask(self) -> None:
        if self.expecting:
            self.expecting = False
            self._wfile.write(_CONTINUE)
            self._wfile.flush()


class LengthBody(_Body):
    """A body of ``length`` bytes, counted, so that what the app leaves unread can be skipped
    before the next request. The upload splicer moves bytes from the socket under it
    (``socket_reader``) and reports them (``consumed``)."""

    def __init__(self, reader: io.BufferedReader, wfile: Any, expecting: bool, length: int) -> None:
        super().__init__(reader, wfile, expecting and length > 0)
        self.remaining = length

    @property
    def socket_reader(self) -> io.BufferedReader:
        """The connection's reader (the client is asked for the body first, if it waits)."""
        self._ask()
        return self._reader

    def readinto(self, b: Any) -> int:
        if self.remaining <= 0:
            return 0
        self._ask()
        n = self._reader.readinto(memoryview(b).cast("B")[: self.remaining]) or 0
        self.remaining -= n
        return n

    def consumed(self, n: int) -> None:
        self.remaining -= n


class ChunkedBody(_Body):
    """A chunked body (RFC 9112 §7.1): chunk extensions are ignored, trailers are read and
    dropped; ``done`` once the whole body, trailers included, has been read. Bad framing, or a
    body cut short, raises werkzeug's ``ClientDisconnected`` (a 400, as for a body shorter than
    its Content-Length), and the connection closes."""

    def __init__(self, reader: io.BufferedReader, wfile: Any, expecting: bool) -> None:
        super().__init__(reader, wfile, expecting)
        self._left = 0
        self.done = False

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        filled = 0
        while filled < len(view) and not self.done:  # fill the buffer, as read(n) expects
            self._ask()
            if not self._left:
                self._left = self._size()
                if not self._left:
                    self._trailers()
                    self.done = True
                    break
            n = self._reader.readinto(view[filled : filled + min(len(view) - filled, self._left)])
            if not n:
                raise _bad("the chunked body ended inside a chunk")
            filled += n
            self._left -= n
            if not self._left and self._reader.readline(3) not in (b"\r\n", b"\n"):
                raise _bad("a chunk is not followed by CRLF")
        return filled

    def _size(self) -> int:
        line = self._reader.readline(4096)
        size = line.split(b";", 1)[0].strip(b" \t\r\n")
        if not line.endswith(b"\n") or not _HEX.fullmatch(size):
            raise _bad(f"invalid chunk size line {line[:40]!r}")
        return int(size, 16)

    def _trailers(self) -> None:
        for _ in range(_MAX_TRAILERS):
            line = self._reader.readline(8192)
            if line in (b"\r\n", b"\n"):
                return
            if not line.endswith(b"\n"):
                raise _bad("the chunked body's trailers are cut off or too long")
        raise _bad(f"more than {_MAX_TRAILERS} trailer lines")


def _bad(why: str) -> ClientDisconnected:
    return ClientDisconnected(f"The request body could not be read: {why}")


def unread(body: object) -> int | None:
    """Request body bytes not read yet; ``None`` when not known (a chunked body not read to its
    end, or a body the client was never asked for after its ``Expect: 100-continue``)."""
    if isinstance(body, LengthBody):
        if body.remaining <= 0:
            return 0
        return None if body.expecting else body.remaining
    if isinstance(body, ChunkedBody):
        return 0 if body.done else None
    return 0


def _tokens(values: list[str]) -> list[str]:
    return [t.strip().lower() for v in values for t in v.split(",") if t.strip()]


class Handler(WSGIRequestHandler):
    """werkzeug's handler with the emulator's header rule, an idle timeout per connection and
    HTTP/1.1 keep-alive (see the module's docstring)."""

    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY: on a kept-alive connection, a small write waiting for the client's delayed
    #: ACK (Nagle) costs 40 ms per request.
    disable_nagle_algorithm = True
    _headers_buffer: list[bytes]  # http.server's, written here with the body's first bytes
    #: False when the request's Content-Length cannot be trusted (its body is not read).
    _length_ok = True

    def setup(self) -> None:
        # A client that sends nothing for this long loses its connection (frees the thread):
        # slow-header and stalled-body clients cannot hold the server's threads forever.
        self.timeout = self.server.idle_timeout  # type: ignore[attr-defined,misc]
        self.served = 0
        super().setup()

    def handle_expect_100(self) -> bool:
        return True  # sent when the body is first read (see _Body)

    def parse_request(self) -> bool:
        # The request line has arrived: from here until its response is written, this
        # connection is busy, and a graceful stop waits for it (idle keep-alives it closes).
        self._busy = True
        self.server.idle.discard(self.connection)  # type: ignore[attr-defined]
        self.server.busy.begin()  # type: ignore[attr-defined]
        if not super().parse_request():
            return False
        # CPython collapses a leading "//" of the target (gh-87389, for its file server); the
        # emulator hands a pass-through container the path as the client sent it, as NVCF does.
        words = self.requestline.split()
        if len(words) >= 2 and words[1].startswith("//"):
            self.path = words[1]
        connection = _tokens(self.headers.get_all("Connection") or [])
        if "close" in connection or (
            self.request_version < "HTTP/1.1" and "keep-alive" not in connection
        ):
            self.close_connection = True
        problem = self._framing_problem()
        if problem is not None:
            self.send_error(400, problem)  # says Connection: close
            return False
        return True

    def _framing_problem(self) -> str | None:
        """RFC 9112 §6: why this request's body cannot be read at all (a 400), or ``None``.
        A request whose framing is doubtful is answered, then its connection closes: no byte
        of it can be taken for the next request."""
        self._length_ok = True
        codings = _tokens(self.headers.get_all("Transfer-Encoding") or [])
        lengths = [v.strip(" \t") for v in self.headers.get_all("Content-Length") or []]
        if codings:
            if codings[-1] != "chunked":
                return "Transfer-Encoding must end in chunked"
            if lengths or self.request_version < "HTTP/1.1":
                self.close_connection = True  # read as chunked (§6.3), then close
            return None
        values = {t.strip(" \t") for v in lengths for t in v.split(",")}
        if len(values) > 1 or (values and not _DIGITS.fullmatch(next(iter(values)))):
            # The app answers it (S3's InvalidArgument for an upload), with no body read.
            self._length_ok = False
            self.close_connection = True
        return None

    def handle_one_request(self) -> None:
        self._busy = False
        if self.served:  # only a connection that was answered before is idle, not a new one
            self.server.idle.add(self.connection)  # type: ignore[attr-defined]
        elif self._closed_at_once():
            self.close_connection = True
            return
        try:
            super().handle_one_request()
        finally:
            self.server.idle.discard(self.connection)  # type: ignore[attr-defined]
            if self._busy:
                self.served += 1
                self.server.busy.end()  # type: ignore[attr-defined]

    def _closed_at_once(self) -> bool:
        """A new connection that sends nothing for the idle timeout (a browser's spare
        connection) is closed quietly, as an idle kept-alive one is: reading on after the
        timeout would only raise "cannot read from timed out object", which socketserver
        prints with a traceback. One that opens with a TLS handshake (an ``https://`` URL) is
        closed at once, with a log line saying why, instead of leaving the client waiting for
        the idle timeout to end its handshake."""
        try:
            first = self.rfile.peek(1)[:1]  # type: ignore[attr-defined]
        except TimeoutError:
            log.debug("closing a connection from %s that sent nothing", self.address_string())
            return True
        except (OSError, ValueError):  # reset: the usual request path says so
            return False
        if first != _TLS_HANDSHAKE:
            return False
        log.warning(
            "a TLS (https://) client connected from %s; nvcf-emulate serves plain http: "
            "use http:// URLs",
            self.address_string(),
        )
        return True

    def make_environ(self) -> Any:
        environ = super().make_environ()
        # werkzeug drops headers with "_" in their names; apply the emulator's one rule instead.
        underscored = [(k, v) for k, v in self.headers.items() if "_" in k]
        add_headers(environ, underscored)
        expecting = (self.headers.get("Expect") or "").strip(" \t").lower() == "100-continue"
        expecting = expecting and self.request_version >= "HTTP/1.1"
        if "wsgi.input_terminated" in environ:  # chunked (framing checked in parse_request)
            environ.pop("CONTENT_LENGTH", None)  # chunked wins over a length (RFC 9112 §6.3)
            body: _Body = ChunkedBody(self.rfile, self.wfile, expecting)  # type: ignore[arg-type]
        else:
            length = 0
            if self._length_ok and "CONTENT_LENGTH" in environ:  # maybe repeated: "5, 5"
                length = int(environ["CONTENT_LENGTH"].split(",")[0].strip(" \t"))
                environ["CONTENT_LENGTH"] = str(length)
            body = LengthBody(self.rfile, self.wfile, expecting, length)  # type: ignore[arg-type]
        environ["wsgi.input"] = body
        return environ

    def run_wsgi(self) -> None:
        """werkzeug's ``run_wsgi``, keeping the connection when the next request can follow."""
        self.environ = environ = self.make_environ()
        body = environ["wsgi.input"]
        chunks_allowed = self.request_version >= "HTTP/1.1"
        status_set: str | None = None
        headers_set: list[tuple[str, str]] | None = None
        status_sent: str | None = None
        chunked = bodyless = False
        declared: int | None = None  # the response's Content-Length
        written = 0

        def write(data: bytes) -> None:
            nonlocal status_sent, chunked, bodyless, declared, written
            assert status_set is not None and headers_set is not None, "write() before start"
            head = b""
            if status_sent is None:
                status_sent = status_set
                code_text, _, reason = status_sent.partition(" ")
                code = int(code_text)
                self.send_response(code, reason)
                for key, value in headers_set:
                    self.send_header(key, value)
                    if key.lower() == "content-length":
                        if _DIGITS.fullmatch(value.strip()):
                            declared = int(value)
                        else:
                            self.close_connection = True
                bodyless = (
                    environ["REQUEST_METHOD"] == "HEAD" or 100 <= code < 200 or code in (204, 304)
                )
                if not bodyless and declared is None:
                    if chunks_allowed:
                        chunked = True
                        self.send_header("Transfer-Encoding", "chunked")
                    else:  # an HTTP/1.0 client: the body ends where the connection does
                        self.close_connection = True
                left = unread(body)
                if left is None or left > DRAIN_LIMIT:
                    self.close_connection = True
                if self.close_connection:
                    self.send_header("Connection", "close")
                elif self.request_version < "HTTP/1.1":  # it asked to keep it (RFC 9112 §9.3)
                    self.send_header("Connection", "keep-alive")
                # The head goes out with the first bytes of the body: one send, not two.
                self._headers_buffer.append(b"\r\n")
                head = b"".join(self._headers_buffer)
                self._headers_buffer = []
            if data and not bodyless:
                if declared is not None and written + len(data) > declared:
                    # More than the app declared: the extra bytes would be read as the next
                    # response. They are not sent, and the connection closes.
                    data = data[: max(0, declared - written)]
                    self.close_connection = True
                if chunked:
                    head += b"%x\r\n%b\r\n" % (len(data), data)
                else:
                    head += data
                written += len(data)
            if head:
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
                if declared is not None and not bodyless and written != declared:
                    self.close_connection = True  # the client cannot tell where this one ended
                if not self.close_connection:
                    self._skip_unread(body)
            finally:
                if self.close_connection and unread(body) != 0:
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

    def _skip_unread(self, body: Any) -> None:
        """Read and drop what the app left of the request body (at most DRAIN_LIMIT bytes, as
        checked before the response went out), so that the next request starts clean."""
        left = unread(body)
        if not left:
            return
        if left > DRAIN_LIMIT:
            self.close_connection = True
            return
        try:
            while left and (chunk := body.read(min(left, 64 * 1024))):
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

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header: the emulator's clock (the server's ``clock``), moved as every
        TTL is, so that it agrees with ``ServerTime`` in an S3 error and with
        ``/_emulator/clock``, as a real service's Date agrees with its own clock."""
        clock = getattr(self.server, "clock", None)
        if timestamp is None and clock is not None:
            timestamp = clock.now()
        return super().date_time_string(timestamp)

    def log_error(self, format: str, *args: Any) -> None:
        if format.startswith("Request timed out"):  # an idle keep-alive connection: normal
            log.debug("closing an idle connection from %s", self.address_string())
            return
        super().log_error(format, *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The app writes the access line itself (with the NVCF request id), in both modes.
        pass
