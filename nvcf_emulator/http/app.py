"""The WSGI application: the single source of truth for every HTTP behaviour of the emulator."""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ..domain.accounts import offers_bearer, token_matches
from ..domain.calls import Call, redact
from ..domain.clock import perf_counter
from ..domain.errors import NvcfError, StorageError
from ..domain.faults import Fault
from ..headers import MAX_HEADER_BYTES
from ..storage.presign import new_request_id
from . import admin, authorizations, control, exec_api, functions, pexec, storage
from .responses import EnvelopeResponse, ProblemResponse, Route, nvcf_error, problem, s3_error

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from ..emulator import Emulator

log = logging.getLogger("nvcf_emulator")
access = logging.getLogger("nvcf_emulator.access")


def _header_bytes(environ: WSGIEnvironment) -> int:
    return sum(
        len(k) + len(v)
        for k, v in environ.items()
        if isinstance(v, str) and (k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH"))
    )


#: Set in the environ when an injected fault drops the connection (the in-process transports
#: raise a connection error; the server closes the socket without an answer).
DROP_KEY = "nvcf_emulator.drop"

_ASSETS = "/v2/nvcf/assets"
#: Invocations and status polls, pexec's and the legacy envelope API's (exec wraps pexec).
_INVOKE = ("/v2/nvcf/pexec/functions/", "/v2/nvcf/exec/functions/")
_STATUS = ("/v2/nvcf/pexec/status/", "/v2/nvcf/exec/status/")


def logged_path(path: str) -> str:
    """``path`` as the call log and the access log keep it: a large result's download link
    works without a key for 24 h, so the token in its path is a secret (as an upload URL's
    signature, which is in the query, never logged) and is left out."""
    if path.startswith(pexec.RESULTS_PREFIX + "/"):
        rest = path[len(pexec.RESULTS_PREFIX) + 1 :]
        _token, slash, tail = rest.partition("/")
        return f"{pexec.RESULTS_PREFIX}/\N{HORIZONTAL ELLIPSIS}{slash}{tail}"
    return path


def operation_of(request: Request, is_storage: bool) -> str:
    """The fault-injection name of a request's operation ("" when it has none)."""
    method, path = request.method, request.path.rstrip("/")
    if is_storage:
        return "upload" if method == "PUT" else ""
    if path == _ASSETS:
        return {"POST": "create", "GET": "list"}.get(method, "")
    if path.startswith(_ASSETS + "/"):
        return {"GET": "get", "DELETE": "delete"}.get(method, "")
    if method == "POST" and path.startswith(_INVOKE):
        return "invoke"
    if method == "GET" and path.startswith(_STATUS):
        return "status"
    if method == "GET" and path.startswith(pexec.RESULTS_PREFIX + "/"):
        return "download"
    return ""


def _drop(environ: WSGIEnvironment) -> Response:
    environ[DROP_KEY] = True
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    return Response(b"", status=500)


#: S3's error codes for the statuses a client may branch on (an expired pre-signed URL is a 403
#: ``AccessDenied``; a throttled one a 503 ``SlowDown``); any other status is ``InjectedFault``.
_S3_CODES = {
    400: "InvalidRequest",
    403: "AccessDenied",
    500: "InternalError",
    501: "NotImplemented",
    503: "SlowDown",
}


def _injected(request: Request, fault: Fault, is_storage: bool) -> Response:
    """A status fault's answer: S3 XML on the storage host and for a large result's download
    (an S3 URL in NVCF), NVCF problem JSON elsewhere."""
    detail = fault.message or f"Injected fault #{fault.id} on {fault.operation}"
    status = int(fault.status or 500)
    response: Response
    if is_storage or fault.operation == "download":
        if status == 404:
            code = "NoSuchKey" if fault.operation == "download" else "NoSuchBucket"
        else:
            code = _S3_CODES.get(status, "InjectedFault")
        response = s3_error(StorageError(status, code, detail), new_request_id(), request.path)
    else:
        try:
            title = HTTPStatus(status).phrase
        except ValueError:  # a status http.HTTPStatus does not name (420, 499, 599)
            title = "Unknown Error"
        response = problem(request, status, title, detail)
    if fault.retry_after is not None:
        response.headers["Retry-After"] = str(fault.retry_after)
    return response


Handler = Callable[..., Response]


#: Every route of the app (the OpenAPI document describes each of them).
ROUTES: list[Route] = [
    *control.ROUTES,
    *admin.ROUTES,
    *functions.ROUTES,
    *authorizations.ROUTES,
    *pexec.ROUTES,
    *exec_api.ROUTES,
]


@functools.cache
def _routing() -> tuple[dict[str, Handler], Map]:
    """The URL map and its handlers, built once per process: compiling ~60 werkzeug rules is
    most of what creating an emulator costs, and the map is read-only once built."""
    handlers: dict[str, Handler] = {}
    url_rules = []
    for i, (path, methods, handler) in enumerate(ROUTES):
        endpoint = f"{handler.__name__}:{i}"
        handlers[endpoint] = handler
        url_rules.append(Rule(path, methods=methods, endpoint=endpoint))
    return handlers, Map(url_rules, strict_slashes=False, merge_slashes=False)


def _challenge(request: Request, response: Response) -> None:
    """The control plane's 401s name the scheme (Spring Security's bearer-token entry point,
    RFC 6750 §3): ``Bearer``, with ``error="invalid_token"`` when a bearer token was sent
    (its resolver takes a header that starts with "bearer" as one, malformed or not; any other
    header, ``Basic ...`` or a bare key, is no token at all)."""
    sent = offers_bearer(request.headers.get("Authorization"))
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if sent else "Bearer"


class EmulatorApp:
    """Routes a request to the pre-signed storage, the control plane or the admin API."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._handlers, self._map = _routing()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = perf_counter()
        request = Request(environ)
        try:
            self.emulator.maybe_sweep()
        except Exception:  # the store failed (S3 away): not this request's business
            log.exception("sweep failed; it runs again on a later request")
        by_host = pexec.host_target(request)
        is_storage = self._is_storage(request, by_host)
        target = None if is_storage else self._passthrough_target(request, by_host)
        kind = (
            "storage"
            if is_storage
            # (/_emulator/... on a function's host is the function's path, not the admin API)
            else (
                "admin" if target is None and request.path.startswith("/_emulator") else "control"
            )
        )
        fault = (
            self.emulator.faults.take(
                "invoke" if target is not None else operation_of(request, is_storage)
            )
            if len(self.emulator.faults)
            else None
        )
        if fault is not None and (fault.drop or fault.status is not None):
            # Instead of the operation: nothing is created, stored, invoked or delivered.
            time.sleep(fault.latency)
            response = _drop(environ) if fault.drop else _injected(request, fault, is_storage)
        else:
            response = self._respond(request, is_storage, target)
            if fault is not None:
                # A slow answer: the operation ran (it read the request body, so in-process the
                # client's read timeout runs from here, as over a socket).
                time.sleep(fault.latency)
        dropped = bool(environ.get(DROP_KEY))
        if target is None and not is_storage and pexec.is_invocation_path(request.path):
            # (A pass-through call's answer is the container's: NVCF adds no CORS to it.)
            pexec.add_cors(request, response)
        request_id = response.headers.get("NVCF-REQID") or response.headers.get("x-amz-request-id")
        if not request_id and isinstance(response, ProblemResponse | EnvelopeResponse):
            request_id = response.request_id or None
        path = logged_path(request.path)
        duration_ms = (perf_counter() - started) * 1000
        self.emulator.calls.record(
            Call(
                time=self.emulator.clock.now(),
                method=request.method,
                path=path,
                status=0 if dropped else response.status_code,  # 0: no answer was sent
                duration_ms=round(duration_ms, 3),
                request_id=request_id,
                authorization=redact(request.headers.get("Authorization")),
                kind=kind,
            )
        )
        access.info(
            "%s %s %s reqid=%s %.1fms",
            request.method,
            path,
            "dropped" if dropped else response.status_code,
            request_id or "-",
            duration_ms,
        )
        return response(environ, start_response)

    def _is_storage(self, request: Request, by_host: pexec.Target | None) -> bool:
        """Whether the request is for the pre-signed storage: its host, or the path-style
        ``/<bucket>/...`` prefix on any host but a function's (``by_host``: every path there
        is the function's, as in NVCF). A bucket named by a UUID has a virtual host that
        starts with one: that host stays the storage host."""
        emu = self.emulator
        if not storage.is_storage_request(emu, request):
            return False
        host = request.host.lower().partition(":")[0]
        return host in emu.storage_hosts or by_host is None

    def _passthrough_target(
        self, request: Request, by_host: pexec.Target | None
    ) -> pexec.Target | None:
        """The function a pass-through call names, as NVCF's invocation service routes it
        (``pexec.passthrough_target``: a ``function-id`` header wins, else ``by_host``, the
        function its host names). On a function's host every path is the function's; a
        header is read on any path but the control plane's and the admin API's, which share
        this host here (NVCF's gateway sends those to other services, whatever the
        headers)."""
        by_header = pexec.header_target(request)
        if by_header is None or by_host is not None:
            return by_header or by_host
        path = request.path
        if path.startswith("/_emulator"):
            return None
        if pexec.is_invocation_path(path):
            return by_header
        try:
            self._map.bind_to_environ(request.environ).match()
        except MethodNotAllowed:
            return None
        except HTTPException:  # no route of the emulator's: the function's path
            return by_header
        return None

    def _respond(
        self, request: Request, is_storage: bool, target: pexec.Target | None = None
    ) -> Response:
        """The emulator's own answer to a request no fault replaced."""
        if _header_bytes(request.environ) > MAX_HEADER_BYTES:
            if is_storage:
                return storage.too_large_headers(request)
            return problem(
                request,
                431,
                "Request Header Fields Too Large",
                f"Request headers total more than {MAX_HEADER_BYTES} bytes",
            )
        if is_storage:
            return storage.handle(self.emulator, request)
        if target is not None or not request.path.startswith("/_emulator"):
            rebound = admin.rebound_api_host(self.emulator, request)
            if rebound is not None:
                return problem(
                    request,
                    403,
                    "Forbidden",
                    f"A browser's call to the NVCF API of a server on loopback that takes any "
                    f"key is answered only for this machine's names (localhost, 127.0.0.1) and "
                    f"the emulator's hosts, not Host: {rebound} (what a DNS rebinding page "
                    "sends); give --api-key (api_keys) to allow any Host",
                )
        if target is not None:
            try:
                return pexec.passthrough(self.emulator, request, *target)
            except NvcfError as error:
                return nvcf_error(request, error)
            except Exception:
                log.exception("unhandled error on pass-through %s %s", request.method, request.path)
                return problem(
                    request,
                    500,
                    "Internal Server Error",
                    "The emulator failed to handle the request",
                )
        return self._control(request)

    def _admin_refusal(self, request: Request) -> Response | None:
        config = self.emulator.config
        if not config.admin_enabled:
            return problem(request, 404, "Not Found", "The admin API is disabled")
        if (
            config.admin_token
            and request.path.rstrip("/") not in admin.TOKENLESS_PATHS
            and not token_matches(request.headers.get("Authorization"), config.admin_token)
        ):
            response = problem(
                request, 401, "Unauthorized", "The admin API needs its token (Bearer)"
            )
            _challenge(request, response)
            return response
        rebound = admin.rebound_host(self.emulator, request)
        if rebound is not None:
            return problem(
                request,
                403,
                "Forbidden",
                f"The admin API of a server on loopback answers only for this machine's "
                f"names (localhost, 127.0.0.1) and the emulator's hosts, not Host: {rebound} "
                "(what a DNS rebinding page sends); set --admin-token (admin_token) to "
                "allow any Host",
            )
        cross_site = admin.cross_site_write(request)
        if cross_site is not None:
            return problem(
                request,
                403,
                "Forbidden",
                f"A cross-site browser request may not change the emulator ({cross_site}); "
                "the admin API takes writes from scripts and from its own dashboard",
            )
        return None

    def _control(self, request: Request) -> Response:
        if request.path.startswith("/_emulator"):
            refusal = self._admin_refusal(request)
            if refusal is not None:
                return refusal
        adapter = self._map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
            return self._handlers[endpoint](self.emulator, request, **args)
        except NvcfError as error:
            response = nvcf_error(request, error)
            if error.status == 401 and not pexec.is_invocation_path(request.path):
                _challenge(request, response)
            return response
        except NotFound:
            return problem(request, 404, "Not Found", f"No route for {request.path}")
        except MethodNotAllowed as exc:
            if pexec.is_invocation_path(request.path):
                try:
                    return pexec.method_not_allowed(self.emulator, request, exc.valid_methods or [])
                except NvcfError as error:
                    return nvcf_error(request, error)
            allowed = ", ".join(exc.valid_methods or [])
            return problem(
                request,
                405,
                "Method Not Allowed",
                f"{request.method} is not allowed on {request.path} (allowed: {allowed})",
                headers={"Allow": allowed},
            )
        except HTTPException as exc:
            code = exc.code or 400
            return problem(request, code, exc.name, exc.description or exc.name)
        except StorageError as error:  # pragma: no cover - storage errors stay in storage routes
            return problem(request, error.status, error.code, error.message)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return problem(
                request, 500, "Internal Server Error", "The emulator failed to handle the request"
            )
