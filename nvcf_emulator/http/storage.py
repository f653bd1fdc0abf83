"""The pre-signed S3 storage endpoint: ``PUT`` to an upload URL, checked as S3 would."""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import io
import logging
import os
import select
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from werkzeug.exceptions import ClientDisconnected, HTTPException
from werkzeug.wrappers import Request, Response

from ..domain.assets import MAX_METADATA_BYTES, Asset, incomplete_body, is_asset_id
from ..domain.errors import StorageError
from ..headers import UNDERSCORED
from ..storage.kernel import write_all
from ..storage.presign import (
    DESCRIPTION_HEADER,
    HeaderMismatch,
    PresignedRequest,
    decode_query,
    new_request_id,
)
from .responses import s3_error

if TYPE_CHECKING:
    from ..emulator import Emulator

log = logging.getLogger("nvcf_emulator")


def is_storage_request(emu: Emulator, request: Request) -> bool:
    host = request.host.lower().partition(":")[0]
    return host in emu.storage_hosts or request.path.startswith(f"/{emu.config.bucket}/")


def object_key(emu: Emulator, request: Request) -> str:
    """The object key addressed: virtual-hosted (``bucket.s3...``) or path-style (``/bucket/``)."""
    path = request.path
    prefix = f"/{emu.config.bucket}/"
    host = request.host.lower().partition(":")[0]
    if host not in emu.storage_hosts and path.startswith(prefix):
        return path[len(prefix) :]
    return path.lstrip("/")


def too_large_headers(request: Request) -> Response:
    request_id = new_request_id()
    error = StorageError(
        400,
        "RequestHeaderSectionTooLarge",
        "Your request header section exceeds the maximum allowed size.",
    )
    return s3_error(error, request_id, request.path)


#: x-amz-* headers a pre-signed PUT may carry unsigned (SigV4 query auth: every other x-amz-*
#: header must be signed, or S3 answers 403 AccessDenied / HeadersNotSigned).
_UNSIGNED_OK = frozenset({"x-amz-content-sha256", "x-amz-date"})


def handle(emu: Emulator, request: Request) -> Response:
    request_id = new_request_id()
    try:
        if request.method != "PUT":
            # S3 signs the method into the canonical request: an upload URL used to GET,
            # DELETE or POST fails its signature (403) before the method is considered.
            emu.signer.verify(_presigned(request))
            raise StorageError(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                Method=request.method,
                ResourceType="OBJECT",
            )
        return _put(emu, request, request_id)
    except StorageError as error:
        return s3_error(error, request_id, request.path)
    except ClientDisconnected:
        return s3_error(incomplete_body(), request_id, request.path)
    except HTTPException as exc:
        invalid = StorageError(exc.code or 400, "InvalidRequest", exc.description or exc.name)
        return s3_error(invalid, request_id, request.path)
    except Exception:
        log.exception("unhandled storage error on %s %s", request.method, request.path)
        internal = StorageError(500, "InternalError", "We encountered an internal error.")
        return s3_error(internal, request_id, request.path)


def _presigned(request: Request) -> PresignedRequest:
    """What the signature is checked over: the method, URL and headers as S3 receives them."""
    # Headers spelled with underscores count as hyphenated ones for NVCF's API (the emulator's
    # kindness for ngcsdk), never for S3: "x_amz_meta_..." is another header there.
    foreign = {key[5:].lower().replace("_", "-") for key in request.environ.get(UNDERSCORED, ())}
    return PresignedRequest(
        method=request.method,
        scheme=request.scheme,
        host=request.host,
        path=request.path,
        query=decode_query(request.query_string.decode("latin-1")),
        headers={k.lower(): v for k, v in request.headers.items() if k.lower() not in foreign},
    )


def _put(emu: Emulator, request: Request, request_id: str) -> Response:
    key = object_key(emu, request)
    nca_id, _, asset_id = key.rpartition("/")  # an NCA id may hold "/"; an asset id not
    asset = emu.assets.find(asset_id) if is_asset_id(asset_id) else None
    expected = None
    if asset is not None and asset.nca_id == nca_id:
        expected = {"content-type": asset.content_type, DESCRIPTION_HEADER: asset.description}
    presigned = _presigned(request)
    try:
        verified = emu.signer.verify(presigned, expected)
    except HeaderMismatch as mismatch:
        raise StorageError(
            emu.config.header_mismatch_status,
            "SignatureDoesNotMatch",
            f"Upload headers do not match the asset: {mismatch}",
        ) from None
    unsigned = sorted(
        name
        for name in presigned.headers
        if name.startswith("x-amz-")
        and name not in _UNSIGNED_OK
        and name not in verified.signed_headers
    )
    if unsigned:
        raise StorageError(
            403,
            "AccessDenied",
            "There were headers present in the request which were not signed",
            HeadersNotSigned=", ".join(unsigned),
        )
    metadata = sum(  # S3 counts the UTF-8 bytes of each key and value (the signed ones)
        len(name) - len("x-amz-meta-") + len(_signed_value(name, value, asset).encode("utf-8"))
        for name, value in presigned.headers.items()
        if name.startswith("x-amz-meta-")
    )
    if metadata > MAX_METADATA_BYTES:
        raise StorageError(
            400,
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size.",
            Size=metadata,
            MaxSizeAllowed=MAX_METADATA_BYTES,
        )
    if asset is None or asset.nca_id != nca_id:
        raise StorageError(404, "NoSuchUpload", "The asset this URL was made for is gone")
    raw_length = request.headers.get("Content-Length")
    if raw_length is not None and not raw_length.strip().isdigit():
        raise StorageError(
            400, "InvalidArgument", f"Content-Length '{raw_length}' is not a valid number"
        )
    length = request.content_length
    content_md5 = _content_md5(request.headers.get("Content-MD5"))
    with _body(request) as body:
        stored = emu.assets.upload(nca_id, asset_id, body, length, content_md5)
    return Response(
        b"",
        status=200,
        headers={
            "ETag": f'"{stored.etag}"',
            "x-amz-request-id": request_id,
            "x-amz-id-2": request_id,
        },
    )


def _signed_value(name: str, value: str, asset: Asset | None) -> str:
    """A metadata value as it was signed: the asset's description as text (the header holds
    its bytes as latin-1, which is how WSGI reads them)."""
    return asset.description if asset is not None and name == DESCRIPTION_HEADER else value


def _content_md5(value: str | None) -> bytes | None:
    """The 16 bytes of a ``Content-MD5`` header (base64), or S3's ``InvalidDigest``."""
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (ValueError, binascii.Error):
        digest = b""
    if len(digest) != 16:
        raise StorageError(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
    return digest


# -- the body ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _body(request: Request) -> Iterator[_Reader]:
    """The upload's body: werkzeug's stream, or, for a body of known length that can move its
    bytes in the kernel (a file given in-process, the socket in server mode), a
    :class:`_SizedBody` over the same input that can also do that (see ``transfer_to``)."""
    environ = request.environ
    length = request.content_length
    source = environ["wsgi.input"]
    if length is None or "wsgi.input_terminated" in environ:
        yield request.stream
        return
    kernel = getattr(source, "transfer_to", None)  # the in-process body
    splicer = None
    if kernel is None:
        splicer = _SocketSplicer.for_environ(environ)
        kernel = splicer
    if kernel is None:
        yield request.stream
        return
    try:
        yield _SizedBody(source, length, kernel)
    finally:
        if splicer is not None:
            splicer.close()


_splice = getattr(os, "splice", None)
_MOVE = getattr(os, "SPLICE_F_MOVE", 0)
#: The pipe between socket and file: 1 MiB (Linux's default cap for unprivileged users) when
#: allowed, else the default 64 KiB.
_PIPE_SIZE = 1 << 20
#: Bytes the socket should hold before a splice is tried again (SO_RCVLOWAT).
_LOWAT = 256 * 1024


def _new_pipe() -> tuple[int, int, int]:
    """A pipe (read end, write end, capacity in bytes). Linux only, as splice (so ``fcntl``,
    which Windows lacks, is imported here)."""
    import fcntl

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        capacity = fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:  # over the user's pipe quota: keep the default size
        capacity = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
    return read_end, write_end, capacity


def _wait_readable(sock: socket.socket, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _SizedBody:
    """A body of ``length`` bytes read from the server's input with werkzeug's
    ``LimitedStream`` rules (never past the length; a body that ends early or fails to read is
    a client that went away: ``ClientDisconnected``), which can also move its bytes into a file
    in the kernel: :meth:`transfer_to`."""

    def __init__(self, source: Any, length: int, kernel: Callable[[int, int], int | None]) -> None:
        self._source = source
        self._remaining = length
        self._kernel = kernel

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")[: self._remaining]
        if not view:
            return 0
        try:
            n = self._source.readinto(view)
        except (OSError, ValueError) as exc:
            raise ClientDisconnected() from exc
        if not n:
            raise ClientDisconnected()
        self._remaining -= n
        return int(n)

    def read(self, size: int = -1, /) -> bytes:
        buf = bytearray(self._remaining if size < 0 else min(size, self._remaining))
        return bytes(buf[: self.readinto(buf)]) if buf else b""

    def transfer_to(self, fd: int, count: int) -> int | None:
        """Move up to ``count`` bytes into the file ``fd`` in the kernel; the bytes moved, or
        ``None`` when that cannot be done (then :meth:`readinto` reads on from where it is)."""
        count = min(count, self._remaining)
        if count <= 0:
            return 0
        n = self._kernel(fd, count)
        if n is None:
            return None
        if not n:
            raise ClientDisconnected()
        self._remaining -= n
        return n


class _SocketSplicer:
    """Server mode: body bytes go socket -> pipe -> file with ``splice`` (Linux), without a copy
    through Python. Bytes werkzeug's reader already buffered are taken from it first; after
    that the reader's buffer is empty and the socket is read for exactly the body's bytes, so
    the next request on the connection is untouched. The socket's timeout (the server's idle
    timeout) applies as it does to reads."""

    def __init__(
        self,
        sock: socket.socket,
        rfile: io.BufferedReader,
        consumed: Callable[[int], None] | None = None,
    ) -> None:
        self._sock = sock
        self._rfile = rfile
        self._consumed = consumed
        self._drained = False
        self._fresh = True
        self._lowat = 1
        self._pipe: tuple[int, int, int] | None = None

    @classmethod
    def for_environ(cls, environ: dict[str, Any]) -> _SocketSplicer | None:
        sock = environ.get("werkzeug.socket")
        body = environ.get("wsgi.input")
        # The server's counted body (keep-alive) has the connection's reader under it, and is
        # told what the splice took.
        rfile = getattr(body, "socket_reader", body)
        if (
            _splice is None
            or not isinstance(sock, socket.socket)
            or isinstance(sock, ssl.SSLSocket)
            or sock.type != socket.SOCK_STREAM
            or type(rfile) is not io.BufferedReader
        ):
            return None
        return cls(sock, rfile, getattr(body, "consumed", None))

    def _set_lowat(self, nbytes: int) -> None:
        if nbytes != self._lowat:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
            self._lowat = nbytes

    def close(self) -> None:
        # The connection may carry further requests: werkzeug's reads must wake on any byte.
        with contextlib.suppress(OSError):
            self._set_lowat(1)
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            os.close(pipe[0])
            os.close(pipe[1])

    def __call__(self, fd: int, count: int) -> int | None:
        if not self._drained:
            # What the reader holds (a raw read of up to its buffer size if it holds nothing:
            # any bytes past the body stay in its buffer for the next request).
            try:
                head = self._rfile.peek(1)[:count]
            except (OSError, ValueError) as exc:
                raise ClientDisconnected() from exc
            if not head:
                return 0
            self._rfile.read(len(head))  # from the buffer: no socket read
            if self._consumed is not None:
                self._consumed(len(head))
            write_all(fd, head)
            self._drained = True
            return len(head)
        assert _splice is not None
        if self._pipe is None:
            try:
                self._pipe = _new_pipe()
            except OSError:
                return None
        read_end, write_end, capacity = self._pipe
        sock_fd = self._sock.fileno()
        timeout = self._sock.gettimeout()
        moved = 0
        while moved < count:
            try:
                n = _splice(sock_fd, write_end, min(count - moved, capacity), flags=_MOVE)
            except BlockingIOError:
                # Wake up only once a good amount has come in (or the client closed): far
                # fewer wake-ups and GIL hand-offs than one per TCP segment. Never more than
                # the body has left, so the last bytes are not waited for in vain.
                self._set_lowat(min(_LOWAT, count - moved))
                if not _wait_readable(self._sock, timeout):
                    raise ClientDisconnected() from TimeoutError("body read timed out")
                continue
            except OSError as exc:
                if not moved and self._fresh and exc.errno in (errno.EINVAL, errno.ENOSYS):
                    return None  # this socket cannot be spliced: read it instead
                raise ClientDisconnected() from exc
            self._fresh = False
            if not n:
                break
            if self._consumed is not None:
                self._consumed(n)
            left = n
            while left:  # pipe -> file; errors here are the disk's (ENOSPC): raised as they are
                left -= _splice(read_end, fd, left, flags=_MOVE)
            moved += n
        return moved
