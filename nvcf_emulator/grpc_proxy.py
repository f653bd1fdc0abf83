"""gRPC invocation, as NVCF's gRPC proxy does it (``grpc.nvcf.nvidia.com:443``).

A client opens a channel to the proxy and calls the *container's own* methods with the metadata
``authorization: Bearer <key>`` and ``function-id`` (``function-version-id`` optional). The
proxy checks both (NVIDIA/nvcf ``grpc-proxy/proxy/director.go``), asks the control plane for
the function (``GrpcProxyService.authStatefulWork``: the key, then the ids, then the function
as a pexec call sees it) and forwards the call as it is -- any service and method, unary or
streaming, raw bytes -- to the container's gRPC server, relaying its messages, initial and
trailing metadata, status and details back.

As NVCF's reverse proxies (``proxy/worker/worker.go``, the worker's ``httputil.ReverseProxy``)
do, every metadata entry the client sent reaches the container (``authorization`` and the
routing keys too), with ``nvcf-reqid`` set to the session's request id; the reply's initial
metadata carries ``nvcf-reqid`` and ``set-cookie: nvcf-request-id=<id>``. As NVCF, the proxy
pins a session to the client's connection: later calls on it to the same ids keep the request
id and the function version. A call on another connection that sends ``nvcf-reqid`` back
(or, without it, the ``nvcf-request-id`` cookie) resumes that session; an id this proxy never
issued is NVCF's NOT_FOUND "no existing session found", with a ``set-cookie`` that deletes the
cookie. (NVCF's sessions also pin a worker and expire; the emulator has one container per
version and keeps the :data:`MAX_SESSIONS` sessions used last.)

Refusals carry the codes NVCF uses: no ``Bearer`` authorization is UNAUTHENTICATED, no
``function-id`` INVALID_ARGUMENT (both "... was passed in the metadata"); errors of the control
plane are wrapped as the Go proxy wraps them ("failed to open stateful work request: rpc
error: code = NotFound desc = ...") with its HTTP-to-gRPC mapping (400 INVALID_ARGUMENT, 401
UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 429/502/503/504 UNAVAILABLE). A
container that does not answer is UNAVAILABLE, as a gRPC client of NVCF sees the worker's 502.

Needs grpcio (``pip install 'nvcf-emulator[grpc]'``); ``import nvcf_emulator`` does not.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

try:
    import grpc
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "nvcf_emulator.grpc_proxy needs grpcio: pip install 'nvcf-emulator[grpc]'"
    ) from exc

from .domain.accounts import Account
from .domain.calls import Call, redact
from .domain.clock import perf_counter
from .domain.errors import NvcfError
from .domain.functions import FunctionVersion
from .domain.ratelimits import TooManyRequests

if TYPE_CHECKING:
    from .emulator import Emulator

__all__ = ["GrpcProxy", "grpc_health_problem"]

log = logging.getLogger("nvcf_emulator.grpc")

Metadata = tuple[tuple[str, str | bytes], ...]

#: The session id header and cookie (``proxy/consts/headers.go``).
REQUEST_ID_HEADER = "nvcf-reqid"
REQUEST_ID_COOKIE = "nvcf-request-id"
#: How the Go proxy prefixes a failure of the control plane's ``AuthStatefulWork``.
OPEN_FAILED = "failed to open stateful work request"
#: Sessions (and connections pinned to one) remembered, the least recently used forgotten first.
MAX_SESSIONS = 10_000

#: Entries the gRPC runtime sets itself on the forwarded call (transport headers, the deadline
#: as ``grpc-timeout``): passing them on as metadata would be refused or doubled.
_TRANSPORT_KEYS = frozenset({"user-agent", "te", "content-type", "host", REQUEST_ID_HEADER})
#: What ``java.util.UUID.fromString`` reads in its canonical form.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
#: The control plane's HTTP statuses as gRPC codes (GrpcConfiguration.java ``toGrpcStatus``).
_FROM_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
#: gRPC codes as HTTP statuses, for the call log (director.go ``GrpcCodeToHttpStatusCode``).
_TO_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
}
#: An injected fault's HTTP status as a gRPC code: the inverse of the mapping above.
_FROM_FAULT = {status: code for code, status in _TO_HTTP.items()} | {500: grpc.StatusCode.INTERNAL}
#: NVCF: "gRPC functions do not have an input request size limit" (gRPC's default is 4 MiB
#: received, on the proxy's server and on its channels to containers alike).
_UNLIMITED = (("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1))
#: Each call dials the container on a channel (and connection) of its own, as NVCF's worker
#: link is per session: a container restarted on its port is reached at once (a shared
#: channel would still be in gRPC's reconnect backoff and fail calls without trying).
_CHANNEL_OPTIONS = (*_UNLIMITED, ("grpc.use_local_subchannel_pool", 1))


def _go_code(code: grpc.StatusCode) -> str:
    """A code as grpc-go spells it in an error text (``NotFound``, ``Unauthenticated``)."""
    return "".join(part.capitalize() for part in code.name.split("_"))


class _Refused(Exception):
    """A call the proxy answers itself, with this status."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Metadata = ()) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing = trailing

    @classmethod
    def from_control_plane(cls, code: grpc.StatusCode, detail: str) -> _Refused:
        return cls(code, f"{OPEN_FAILED}: rpc error: code = {_go_code(code)} desc = {detail}")


@dataclass(frozen=True, slots=True)
class _Session:
    function_id: str
    version_id: str
    nca_id: str


@dataclass(frozen=True, slots=True)
class _Route:
    version: FunctionVersion
    target: str
    secure: bool
    request_id: str


class GrpcProxy:
    """NVCF's gRPC gateway for an :class:`~nvcf_emulator.Emulator`, on a loopback port.

    >>> with GrpcProxy(emulator) as proxy:
    ...     channel = grpc.insecure_channel(proxy.address)

    ``port=0`` takes a free port (see :attr:`port`). Functions serving gRPC are added with
    ``inference_url="/grpc"`` and a container URL ``http://host:port`` of a running gRPC
    server (the URL's port, else the function's ``inferencePort``). Each call is recorded in
    ``emulator.calls`` with ``kind="grpc"``, ``path`` the full method name and ``status`` the
    HTTP status NVCF maps its gRPC code to.

    Each call holds one of the proxy's threads while it runs (a stream: until it ends), so at
    most ``max_workers`` calls run at once; threads are started only as calls need them.
    """

    def __init__(
        self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0, *, max_workers: int = 512
    ) -> None:
        self.emulator = emulator
        self.host = host
        self._wanted_port = port
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._port = 0
        self._lock = threading.Lock()
        #: Held while a call is routed: concurrent first calls on one connection start one
        #: session between them, as NVCF's sync.Once per connection and function ids does.
        self._routing = threading.Lock()
        self._channels: set[grpc.Channel] = set()  # open, one per call in flight
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # request id: session
        self._connections: OrderedDict[tuple[str, str, str], str] = OrderedDict()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the proxy listens on (0 before :meth:`start`)."""
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` for ``grpc.insecure_channel``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._port}"

    def start(self) -> GrpcProxy:
        """Listen and serve on the proxy's own threads; ``OSError`` when the port is taken."""
        if self._server is not None:
            raise RuntimeError("the gRPC proxy is already started")
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="nvcf-grpc"),
            handlers=[_Forwarder(self)],
            # gRPC's default SO_REUSEPORT would let a second server share a busy port (and take
            # half its calls) instead of failing to start.
            options=(*_UNLIMITED, ("grpc.so_reuseport", 0)),
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            port = server.add_insecure_port(f"{host}:{self._wanted_port}")
        except RuntimeError:  # grpcio >= 1.50 raises; older ones return 0
            port = 0
        if not port:
            server.stop(None)
            raise OSError(f"the gRPC proxy cannot listen on {host}:{self._wanted_port}")
        server.start()
        self._server, self._port = server, port
        log.info("gRPC proxy listening on %s", self.address)
        return self

    def forget_sessions(self) -> None:
        """Forget every session (request ids and the connections pinned to them): what
        ``Emulator.reset()`` does for the proxies of :meth:`Emulator.serve_grpc`."""
        with self._lock:
            self._sessions.clear()
            self._connections.clear()

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop listening; calls still running get ``grace`` seconds, then are cancelled."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait()
        with self._lock:
            channels = list(self._channels)
            self._channels.clear()
        for channel in channels:
            channel.close()

    def __enter__(self) -> GrpcProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"on {self.address}" if self._server is not None else "stopped"
        return f"<GrpcProxy {state}>"

    # -- routing -----------------------------------------------------------------------------

    def _route(self, metadata: dict[str, str], peer: str, resumed: str) -> _Route:
        """The version and container a call goes to, checked in NVCF's order: the metadata
        (director.go), the key, the ids, the function (GrpcProxyService.authStatefulWork), the
        session (connections.go, function_invoker.go).

        As NVCF pins a session to the client's TCP connection (``peer``) and the function ids
        it sent, later calls on that connection get the same request id and version. NVCF
        checks the key once per such session; the emulator checks it on every call. ``resumed``
        is the request id the client sent back (:func:`_sent_request_id`)."""
        auth = metadata.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth.removeprefix("Bearer "):
            raise _Refused(
                grpc.StatusCode.UNAUTHENTICATED, "no authorization was passed in the metadata"
            )
        sent_function_id = metadata.get("function-id", "")
        if not sent_function_id:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT, "no function-id was passed in the metadata"
            )
        sent_version_id = metadata.get("function-version-id", "")
        connection = (peer, sent_function_id, sent_version_id)
        emu = self.emulator
        try:
            account = emu.accounts.authenticate(auth)
            for name, value in (
                ("function-id", sent_function_id),
                ("function-version-id", sent_version_id),
            ):
                if value and not _UUID.match(value):
                    # UUID.fromString throws, and no @GrpcExceptionHandler maps that: grpc-spring
                    # answers INTERNAL with this text. The parenthesis is the emulator's.
                    raise _Refused.from_control_plane(
                        grpc.StatusCode.INTERNAL,
                        "There was a server error trying to handle an exception "
                        f"(Invalid UUID string: {value} in {name})",
                    )
            function_id = sent_function_id.lower()
            version_id = sent_version_id.lower() or None
            request_id, session = self._pinned(connection, account)
            if session is None:
                request_id, session = self._resumed(resumed, account, function_id, version_id)
            wanted = session.version_id if session is not None else version_id
            version = emu.functions.resolve_invocation(account, function_id, wanted)
        except NvcfError as err:
            code = _FROM_HTTP.get(err.status, grpc.StatusCode.UNKNOWN)
            raise _Refused.from_control_plane(code, err.detail) from None
        if session is None:
            # function_invoker.go: a new session only, and no caller identity (no user tier).
            try:
                emu.rate_limiter.admit(
                    version.extra.get("rateLimit"), version.version_id, account.nca_id, ""
                )
            except TooManyRequests as limited:
                raise _Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"exceeded rate limit ({limited.detail})"
                ) from None
        from .worker.containers import UrlContainer

        container = emu.functions.container_for(version)
        if not isinstance(container, UrlContainer):
            # NVCF cannot get here (its containers are images); the emulator's in-process
            # containers speak HTTP only.
            raise _Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"function {version.name!r} version {version.version_id} has no gRPC server "
                f"to call: its container is {container!r}; a gRPC function is added with the "
                "URL of a running gRPC server (add_function('http://127.0.0.1:PORT', "
                "inference_url='/grpc'))",
            )
        with self._lock:
            if session is None:
                request_id = str(uuid.uuid4())
                session = _Session(version.function_id, version.version_id, account.nca_id)
            # Last used, last forgotten: a session (and connection) in use is kept, as NVCF
            # keeps a worker connection while it is active.
            self._sessions.pop(request_id, None)
            self._sessions[request_id] = session
            self._connections.pop(connection, None)
            self._connections[connection] = request_id
            for kept in (self._sessions, self._connections):
                while len(kept) > MAX_SESSIONS:
                    kept.popitem(last=False)
        host = f"[{container.host}]" if ":" in container.host else container.host
        return _Route(
            version,
            f"{host}:{container.port or version.inference_port}",
            container.scheme == "https",
            request_id,
        )

    def _pinned(
        self, connection: tuple[str, str, str], account: Account
    ) -> tuple[str, _Session | None]:
        """The session of earlier calls on this connection to these ids, if its version is
        still there to call (else, as NVCF when the worker went away, a new one starts)."""
        with self._lock:
            request_id = self._connections.get(connection, "")
            session = self._sessions.get(request_id)
        if session is None or session.nca_id != account.nca_id:
            return "", None
        try:
            self.emulator.functions.resolve_invocation(
                account, session.function_id, session.version_id
            )
        except NvcfError:
            return "", None
        return request_id, session

    def _resumed(
        self, request_id: str, account: Account, function_id: str, version_id: str | None
    ) -> tuple[str, _Session | None]:
        """The session a call resumes with ``nvcf-reqid`` (``None``: it starts one). NVCF
        reads only a UUID there; anything else starts a new session."""
        try:
            key = str(uuid.UUID(request_id))
        except ValueError:
            return "", None
        with self._lock:
            session = self._sessions.get(key)
        # function_invoker.go's texts; the mismatches are no gRPC status there (INTERNAL).
        if session is None:  # director.go: "ask the client to delete their cookie"
            raise _Refused(
                grpc.StatusCode.NOT_FOUND,
                f"{OPEN_FAILED}: no existing session found for request id {key}",
                (("set-cookie", f"{REQUEST_ID_COOKIE}=; Max-Age=0"),),
            )
        for differs, what in (
            (session.function_id != function_id, "function ID"),
            (version_id is not None and session.version_id != version_id, "function version ID"),
            (session.nca_id != account.nca_id, "invoker NCA ID"),
        ):
            if differs:
                raise _Refused(
                    grpc.StatusCode.INTERNAL,
                    f"{OPEN_FAILED}: existing session {what} mismatch for request id {key}",
                )
        return key, session

    def _open(self, target: str, secure: bool) -> grpc.Channel:
        if secure:
            credentials = grpc.ssl_channel_credentials()
            channel = grpc.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        with self._lock:
            self._channels.add(channel)
        return channel

    def _close(self, channel: grpc.Channel) -> None:
        with self._lock:
            self._channels.discard(channel)
        channel.close()

    # -- forwarding --------------------------------------------------------------------------

    def forward(
        self, method: str, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        """One call: route it, then relay it both ways as raw bytes."""
        started = perf_counter()  # real time: never ticks an auto-ticking freezegun
        received = context.invocation_metadata()
        first: dict[str, str] = {}
        for key, value in received:
            if isinstance(value, str):
                first.setdefault(key, value)  # Go's Header.Get: the first value
        request_id: str | None = None
        code, details = grpc.StatusCode.UNKNOWN, "the proxy failed"  # until known
        try:
            try:
                self._before_routing(context)
                with self._routing:
                    route = self._route(first, context.peer(), _sent_request_id(received))
            except _Refused as refused:
                code, details = refused.code, refused.details
                if refused.trailing:
                    context.set_trailing_metadata(refused.trailing)
                context.set_code(code)
                context.set_details(details)
                return
            request_id = route.request_id
            code, details = grpc.StatusCode.CANCELLED, "the client cancelled the call"
            code, details = yield from self._relay(method, requests, context, received, route)
        finally:
            self._record(method, first.get("authorization"), request_id, code, started)
            if code is not grpc.StatusCode.OK:
                log.info("gRPC %s: %s %s", method, code.name, details)

    def _before_routing(self, context: grpc.ServicerContext) -> None:
        """UNAVAILABLE once the emulator is closed; else an ``invoke`` fault of
        ``emulator.faults`` (as for a pass-through HTTP call), if one fires: a
        ``status`` answers instead of the container, as the gRPC code NVCF's proxy maps to
        that HTTP status (503 UNAVAILABLE, 429 RESOURCE_EXHAUSTED, 500 INTERNAL, ...), with
        ``retry_after`` as trailing ``retry-after`` metadata; a ``drop`` is UNAVAILABLE (the
        client's view of a closed connection); a ``latency`` alone delays the call."""
        if self.emulator.closed:  # its state and containers are gone
            raise _Refused(
                grpc.StatusCode.UNAVAILABLE,
                "the emulator behind this gRPC proxy is closed (stop the proxy with it)",
            )
        faults = self.emulator.faults
        fault = faults.take("invoke") if len(faults) else None
        if fault is None:
            return
        time.sleep(fault.latency)
        if not context.is_active():  # the client gave up meanwhile: nothing left to forward
            raise _Refused(grpc.StatusCode.CANCELLED, "the client cancelled the call")
        if fault.drop:
            raise _Refused(
                grpc.StatusCode.UNAVAILABLE,
                fault.message or f"Injected fault #{fault.id} on invoke: connection dropped",
            )
        if fault.status is not None:
            if fault.retry_after is not None:
                context.set_trailing_metadata((("retry-after", str(fault.retry_after)),))
            raise _Refused(
                _FROM_FAULT.get(fault.status, grpc.StatusCode.UNKNOWN),
                fault.message or f"Injected fault #{fault.id} on invoke",
            )

    def _relay(
        self,
        method: str,
        requests: Iterator[bytes],
        context: grpc.ServicerContext,
        received: Metadata,
        route: _Route,
    ) -> Generator[bytes, None, tuple[grpc.StatusCode, str]]:
        kept = [(k, v) for k, v in received if k not in _TRANSPORT_KEYS and k[:5] != "grpc-"]
        outgoing = (*kept, (REQUEST_ID_HEADER, route.request_id))
        channel = self._open(route.target, route.secure)
        try:
            return (yield from self._call(channel, method, requests, context, outgoing, route))
        finally:
            self._close(channel)

    def _call(
        self,
        channel: grpc.Channel,
        method: str,
        requests: Iterator[bytes],
        context: grpc.ServicerContext,
        outgoing: Metadata,
        route: _Route,
    ) -> Generator[bytes, None, tuple[grpc.StatusCode, str]]:
        remaining = context.time_remaining()
        timeout = remaining if remaining is not None and remaining < 1e8 else None
        multi: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(method)
        upstream: list[Any] = []  # the container's call, once made
        call: Any = multi(
            _client_messages(requests, context, upstream), metadata=outgoing, timeout=timeout
        )
        upstream.append(call)
        # The client went away: so does the container's call (at once if it already went).
        if not context.add_callback(call.cancel):
            call.cancel()
        session = (
            (REQUEST_ID_HEADER, route.request_id),
            ("set-cookie", f"{REQUEST_ID_COOKIE}={route.request_id}"),
        )
        try:
            initial = tuple(m for m in call.initial_metadata() or () if m[0] != REQUEST_ID_HEADER)
            context.send_initial_metadata(initial + session)
            yield from call
        except grpc.RpcError:
            pass  # the container's status, read below
        code: grpc.StatusCode = call.code()
        details: str = call.details() or ""
        trailing = tuple(call.trailing_metadata() or ())
        if trailing:
            context.set_trailing_metadata(trailing)
        if code is not grpc.StatusCode.OK:
            context.set_code(code)
            context.set_details(details)
        return code, details

    def _record(
        self,
        method: str,
        authorization: str | None,
        request_id: str | None,
        code: grpc.StatusCode,
        started: float,
    ) -> None:
        emu = self.emulator
        emu.calls.record(
            Call(
                time=emu.clock.now(),
                method="POST",  # gRPC is a POST over HTTP/2
                path=method,
                status=_TO_HTTP.get(code, 500),
                duration_ms=round((perf_counter() - started) * 1000, 3),
                request_id=request_id,
                authorization=redact(authorization),
                kind="grpc",
            )
        )


def _client_messages(
    requests: Iterator[bytes], context: grpc.ServicerContext, upstream: list[Any]
) -> Iterator[bytes]:
    """The client's messages, for grpcio to send on to the container. Once the client is
    gone, they raise (or, when grpcio learns of it late, just end): the container's call is
    then cancelled, not half-closed, as NVCF's proxy cancels it with the client's context;
    grpcio would log an ERROR "Exception iterating requests!" with a traceback for each
    client that cancels a stream."""
    try:
        yield from requests
    except grpc.RpcError:
        pass
    else:
        if context.is_active():
            return  # the client half-closed: so does the container's call
    for call in upstream:
        call.cancel()


def _sent_request_id(received: Metadata) -> str:
    """The request id a call sends back to resume its session: ``nvcf-reqid``, else the
    ``nvcf-request-id`` cookie (director.go ``getRequestIdFromHeaderOrCookie``; Go's
    ``Request.Cookie`` reads every ``cookie`` entry, first match wins)."""
    cookies: list[str] = []
    for key, value in received:
        if not isinstance(value, str):
            continue
        if key == REQUEST_ID_HEADER and value:
            return value
        if key == "cookie":
            cookies.append(value)
    for line in cookies:
        for pair in line.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name == REQUEST_ID_COOKIE:
                return value.strip('"')
    return ""


class _Forwarder(grpc.GenericRpcHandler):
    """Takes every method as a stream-stream call of raw bytes: on the wire a unary call is a
    stream of one message each way, so this serves unary and streaming calls alike."""

    def __init__(self, proxy: GrpcProxy) -> None:
        self._proxy = proxy

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        behavior = functools.partial(self._proxy.forward, handler_call_details.method)
        return grpc.stream_stream_rpc_method_handler(behavior)


# -- health ------------------------------------------------------------------------------------

#: grpc.health.v1.HealthCheckResponse.ServingStatus.
_SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _serving_status(reply: bytes) -> int:
    """Field 1 (a varint enum) of a HealthCheckResponse, read without protobuf: 0 if absent."""
    status, i = 0, 0
    while i < len(reply):
        tag, i = _varint(reply, i)
        if tag == 0x08:
            status, i = _varint(reply, i)
        elif tag & 7 == 0:
            _, i = _varint(reply, i)
        elif tag & 7 == 2:
            length, i = _varint(reply, i)
            i += length
        else:  # no other wire type in this message
            break
    return status


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while i < len(data):
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return value, i


def grpc_health_problem(target: str, timeout: float = 2.0, *, secure: bool = False) -> str | None:
    """``None`` when the gRPC server at ``target`` answers ``grpc.health.v1.Health/Check`` for
    the server as a whole (service ``""``) with SERVING, else what it got. NVIDIA's worker
    checks a gRPC function this way (worker/health/health.go: "grpc doesn't support path or
    status. we use the native grpc health check instead")."""
    method = "/grpc.health.v1.Health/Check"
    credentials = grpc.ssl_channel_credentials() if secure else None
    with (
        grpc.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        if credentials is not None
        else grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
    ) as channel:
        check: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        # No gRPC deadline: gRPC computes one from time.time(), which freezegun and
        # time-machine move (a frozen past is a deadline already gone). The wait is real time.
        pending = check.future(b"")  # HealthCheckRequest{service: ""}: no bytes
        try:
            reply = pending.result(timeout=timeout)
        except grpc.FutureTimeoutError:
            pending.cancel()
            return f"gRPC health check {method} on {target} answered nothing within {timeout:g} s"
        except grpc.RpcError as err:
            code = err.code()
            hint = (
                ": the server does not serve the gRPC health service (grpcio-health-checking's "
                "HealthServicer, with the status of service '' set to SERVING)"
                if code is grpc.StatusCode.UNIMPLEMENTED
                else ""
            )
            return f"gRPC health check {method} on {target} answered {code.name}{hint}"
    status = _serving_status(reply if isinstance(reply, bytes) else b"")
    if status == 1:
        return None
    shown = _SERVING_STATUS.get(status, str(status))
    return f"gRPC health check {method} on {target} answered {shown} (expected SERVING)"
