"""Invocation routes: ``/v2/nvcf/pexec/...``, ``/v2/nvcf/queues/...`` and large-result downloads."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from ..domain.accounts import Account
from ..domain.clock import isoformat
from ..domain.errors import BadRequest, NotFound, PayloadTooLarge, StorageError
from ..domain.functions import FunctionStatus, FunctionVersion
from ..domain.invocations import (
    COMPAT_OFF_HEADER,
    Event,
    Invocation,
    Outcome,
    ProgressUpdate,
    StillWorking,
    token_expiry,
)
from ..storage.presign import new_request_id
from ..worker import gojson
from .bodies import read_upto
from .control import authenticate, control_account
from .ids import (
    HYPHENATED_UUID_PATTERN,
    RUST_UUID_PATTERN,
    InvalidUrl,
    canonical,
    control_id,
    invocation_id,
)
from .responses import STREAMED_KEY, Route, json_response, problem, s3_error

if TYPE_CHECKING:
    from ..emulator import Emulator

#: The invocation service's answer when ``Authorization`` is missing (text/plain, not JSON).
MISSING_AUTHORIZATION = "Header of type `authorization` was missing"
POLL_HEADER = "NVCF-POLL-SECONDS"
ASSETS_HEADER = "NVCF-INPUT-ASSET-REFERENCES"
_ASSETS_KEY = "HTTP_" + ASSETS_HEADER.replace("-", "_")
#: Problem detail for a bad ``NVCF-POLL-SECONDS`` (NVCF's text, then the reason).
POLL_DETAIL = "failed to parse poll duration"
#: NVCF's (axum's typed-header) text/plain 400 for an asset header that is not UUIDs.
INVALID_ASSET_HEADER = "invalid HTTP header (nvcf-input-asset-references)"
_UNSIGNED = re.compile(r"^\+?[0-9]+$")
_ITEM = rf"\s*(?:{RUST_UUID_PATTERN})?\s*"  # one asset id, in the forms NVCF's parser reads
#: A whole ``NVCF-INPUT-ASSET-REFERENCES`` value: comma-separated ids, each trimmed; empty
#: items are skipped.
ASSET_REFERENCES_PATTERN = rf"^{_ITEM}(?:,{_ITEM})*$"
_ASSET_REFERENCES = re.compile(ASSET_REFERENCES_PATTERN)
#: Outside /_emulator/: a result download needs no admin token, only the URL's secret token.
RESULTS_PREFIX = "/_nvcf/results"
_EXPOSE = ("Access-Control-Expose-Headers", "nvcf-reqid")
#: The versions ``GET /v2/nvcf/queues/functions/...`` reports (QueueFacade.java).
QUEUED_STATUSES = frozenset({FunctionStatus.ACTIVE, FunctionStatus.DEPLOYING})


#: Its answer to an ``Authorization`` that is not visible ASCII (``HeaderValue::to_str`` fails).
UNREADABLE_AUTHORIZATION = "Unauthorized access"
_VISIBLE_ASCII = re.compile(r"[\t\x20-\x7e]*")


class AuthRefused(Exception):
    """The invocation service's auth middleware answers before any route: text/plain 401."""

    def response(self) -> Response:
        return Response(str(self), status=401, content_type="text/plain")


def invocation_account(emu: Emulator, request: Request) -> Account:
    value = request.headers.get("Authorization")
    if not value:
        raise AuthRefused(MISSING_AUTHORIZATION)
    if not _VISIBLE_ASCII.fullmatch(value):
        raise AuthRefused(UNREADABLE_AUTHORIZATION)
    return authenticate(emu, request)


def wants_stream(request: Request) -> bool:
    """Streaming mode: ``Accept`` is the one media type ``text/event-stream`` (parameters
    allowed), as NVCF's worker parses it; a list of types does not count."""
    accept = request.headers.get("Accept", "")
    return "," not in accept and accept.split(";")[0].strip().lower() == "text/event-stream"


def poll_seconds(
    emu: Emulator, request: Request, streaming: bool, *, passthrough: bool = False
) -> int:
    """``NVCF-POLL-SECONDS`` (``NVCF-POLL_SECONDS`` counts too), as NVCF's invocation service
    reads it: an unsigned integer (``0`` counts as 1; negative, fractional or other text is a
    400), at most ``max_poll_seconds``. A pass-through call has no long default for streams
    (post_pexec.rs keeps that for the pexec paths only)."""
    cfg = emu.config
    raw = request.headers.get(POLL_HEADER)
    if raw is None:
        # The long default needs Accept to be exactly text/event-stream (NVCF compares the
        # value as it is); a stream asked for with parameters or in capitals gets the short one.
        exact = request.headers.get("Accept") == "text/event-stream"
        long = streaming and exact and not passthrough
        return cfg.sse_poll_seconds if long else cfg.poll_seconds
    return parse_poll_seconds(emu, raw)


def parse_poll_seconds(emu: Emulator, raw: str, name: str = POLL_HEADER) -> int:
    """A poll window given as text (NVCF's exec turns its envelope's number into this header
    too, so both read it alike): an unsigned integer, at most ``max_poll_seconds``, ``0``
    counting as 1; anything else is a 400 that names ``name``."""
    if not _UNSIGNED.match(raw.strip()):
        raise BadRequest(f"{POLL_DETAIL}: {name} '{raw}' is not an unsigned integer")
    value = int(raw.strip())
    if value > emu.config.max_poll_seconds:
        raise BadRequest(f"{POLL_DETAIL}: {name} must be <= {emu.config.max_poll_seconds}")
    return max(1, value)


class InvalidAssetHeader(Exception):
    """NVCF answers a malformed ``NVCF-INPUT-ASSET-REFERENCES`` as its header extractor does."""


def asset_references(request: Request) -> list[str]:
    """The ids in ``NVCF-INPUT-ASSET-REFERENCES``: comma-separated, trimmed, empties skipped."""
    # The environ holds one value per header name (repeats are joined): read it directly, as
    # request.headers.getlist would, without walking every key of the environ.
    value = request.environ.get(_ASSETS_KEY)
    if value is None:
        return []
    if not _ASSET_REFERENCES.search(value):
        raise InvalidAssetHeader(value)
    return [canonical(item.strip()) for item in value.split(",") if item.strip()]


def _read_body(emu: Emulator, request: Request) -> bytes:
    limit = emu.config.max_request_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(_too_large(limit))
    return within_request_limit(emu, read_upto(request, limit))


def _too_large(limit: int) -> str:
    return f"Request body is larger than the limit of {limit} bytes"


def within_request_limit(emu: Emulator, data: bytes) -> bytes:
    """``data``, or 413 when it passes ``max_request_bytes``."""
    if len(data) > emu.config.max_request_bytes:
        raise PayloadTooLarge(_too_large(emu.config.max_request_bytes))
    return data


class AsSent(Response):
    """An answer NVCF passes on with the headers it has (the container's, or none for the
    worker's empty 202 and 504): no ``Content-Type`` of werkzeug's own when it has none."""

    default_mimetype = None


def _base_headers(inv: Invocation, nvcf_status: str) -> list[tuple[str, str]]:
    return [("NVCF-REQID", inv.request_id), ("NVCF-STATUS", nvcf_status), _EXPOSE]


def _in_progress(emu: Emulator, inv: Invocation, event: Event | None, seconds: int) -> Response:
    headers = _base_headers(inv, "in-progress")
    emu.invocation_service.answered_202(inv, seconds)
    if isinstance(event, ProgressUpdate):
        headers.append(("NVCF-PERCENT-COMPLETE", str(event.progress)))
        body = gojson.dumps(event.partial_response)  # re-encoded, as NVCF's worker does
        return Response(body, status=202, headers=headers, content_type="application/json")
    if isinstance(event, StillWorking):  # the container's own 202, as it sent it
        return AsSent(event.body, status=202, headers=_beside(event.headers, headers))
    return AsSent(b"", status=202, headers=headers)


def _beside(container: list[tuple[str, str]], ours: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The container's headers with NVCF's: ours replace the container's of the same name,
    except ``Access-Control-Expose-Headers``, which NVCF appends ``nvcf-reqid`` to."""
    names = {n.lower() for n, _ in ours} - {"access-control-expose-headers"}
    return [*((n, v) for n, v in container if n.lower() not in names), *ours]


def _outcome(emu: Emulator, request: Request, inv: Invocation, outcome: Outcome) -> Response:
    emu.invocation_service.answered(inv, outcome.status)
    headers = _base_headers(inv, outcome.nvcf_status)
    if outcome.kind == "problem":
        return problem(
            request,
            outcome.status,
            outcome.title,
            outcome.detail,
            type_prefix=outcome.problem_prefix,
            type_=outcome.problem_type,
            request_id=inv.request_id,
            headers=dict(headers),
        )
    if outcome.kind == "redirect":
        url = f"{request.host_url.rstrip('/')}{RESULTS_PREFIX}/{outcome.token}/{inv.request_id}.zip"
        return AsSent(b"", status=302, headers=[*headers, ("Location", url)])
    if outcome.kind == "stream":
        assert outcome.chunks is not None
        request.environ[STREAMED_KEY] = True
        return AsSent(
            outcome.chunks,
            status=outcome.status,
            headers=_beside(outcome.headers, headers),
            direct_passthrough=True,
        )
    return AsSent(outcome.body, status=outcome.status, headers=_beside(outcome.headers, headers))


def _answer(
    emu: Emulator, request: Request, inv: Invocation, event: Event | None, seconds: int
) -> Response:
    """The answer to the POST or to a status poll whose poll window was ``seconds``."""
    if isinstance(event, Outcome):
        return _outcome(emu, request, inv, event)
    return _in_progress(emu, inv, event, seconds)


def invoke(
    emu: Emulator, request: Request, function_id: str, version_id: str | None = None
) -> Response:
    try:
        account = invocation_account(emu, request)
    except AuthRefused as refused:
        return refused.response()
    # NVCF's order: auth, the path's ids, the asset header, the function, the poll header, the
    # body, the assets.
    try:
        function_id = invocation_id(function_id)
        version_id = None if version_id is None else invocation_id(version_id)
    except InvalidUrl as bad:
        return bad.response()
    try:
        asset_ids = asset_references(request)
    except InvalidAssetHeader:
        return Response(INVALID_ASSET_HEADER, status=400, content_type="text/plain")
    streaming = wants_stream(request)
    return run_invocation(
        emu,
        request,
        account,
        function_id,
        version_id,
        asset_ids,
        headers=list(request.headers.items()),
        poll=lambda: poll_seconds(emu, request, streaming),
        read_body=lambda: _read_body(emu, request),
        streaming=streaming,
    )


def caller_identity(authorization: str | None) -> str:
    """The caller a per-user rate limit counts (NVCF's ``clientAuthSubject``): here, the
    credential itself, as a digest."""
    if not authorization:
        return ""
    return hashlib.sha256(authorization.encode("utf-8", "replace")).hexdigest()[:32]


def admit(emu: Emulator, request: Request, account: Account, version: FunctionVersion) -> None:
    """The version's rate limit (post_pexec.rs checks it once the assets are known): a 429
    when this call is refused."""
    policy = version.extra.get("rateLimit")
    if policy:
        subject = caller_identity(request.headers.get("Authorization"))
        emu.rate_limiter.admit(policy, version.version_id, account.nca_id, subject)


def run_invocation(
    emu: Emulator,
    request: Request,
    account: Account,
    function_id: str,
    version_id: str | None,
    asset_ids: list[str],
    *,
    headers: list[tuple[str, str]],
    poll: Callable[[], int],
    read_body: Callable[[], bytes],
    streaming: bool,
) -> Response:
    """pexec once the caller, the path's ids and the asset ids are read: the function, the
    poll window (``poll``), the body (``read_body``), the assets, in NVCF's order, then the
    call and its first answer. exec (``exec_api``) runs its envelope's request through here,
    as NVCF's ``post_exec.rs`` calls ``pexec``."""
    version = emu.functions.resolve_invocation(account, function_id, version_id)
    seconds = poll()
    body = read_body()
    assets = emu.assets.live_assets(account, asset_ids)
    admit(emu, request, account, version)
    inv = emu.invocation_service.submit(
        account,
        version,
        assets,
        method=request.method,
        path=request.path,
        headers=headers,
        body=body,
        poll_seconds=seconds,
        streaming=streaming,
    )
    if emu.config.always_async:
        return _answer(emu, request, inv, None, seconds)
    event = emu.invocation_service.next_event(inv, seconds)
    return _answer(emu, request, inv, event, seconds)


def invoke_version(emu: Emulator, request: Request, function_id: str, version_id: str) -> Response:
    return invoke(emu, request, function_id, version_id)


# -- pass-through invocation ("TLB"): https://<functionId>.invocation.<host>/<any path> --------

#: Headers that name the function of a pass-through call when the Host does not (NVCF's
#: ``function_id_headers``, for gateways without wildcard DNS).
FUNCTION_ID_HEADER = "function-id"
FUNCTION_VERSION_ID_HEADER = "function-version-id"
_WHOLE_UUID = re.compile(rf"(?:{RUST_UUID_PATTERN})\Z")
_HYPHENATED_LEN = 36


def _uuid_or_none(value: str | None) -> str | None:
    return canonical(value) if value is not None and _WHOLE_UUID.match(value) else None


Target = tuple[str, str | None]  # (function id, version id or None)


def passthrough_target(request: Request) -> Target | None:
    """The ``(function id, version id or None)`` a request names for pass-through invocation,
    or ``None`` for a request on the API's own paths. As NVCF's invocation service routes
    (routes/tlb.rs): a ``function-id`` header (with ``function-version-id``) wins, else a
    host (:func:`routing_host`) that starts with a hyphenated UUID:
    ``<functionId>.invocation.<domain>`` or ``<versionId>.<functionId>.invocation.<domain>``."""
    return header_target(request) or host_target(request)


def header_target(request: Request) -> Target | None:
    """The function a ``function-id`` header (with ``function-version-id``) names."""
    function_id = _uuid_or_none(request.headers.get(FUNCTION_ID_HEADER))
    if function_id is None:
        return None
    return function_id, _uuid_or_none(request.headers.get(FUNCTION_VERSION_ID_HEADER))


def host_target(request: Request) -> Target | None:
    """The function the request's host names (not a header): every path on such a host is
    the function's."""
    return _host_target(routing_host(request))


def routing_host(request: Request) -> str:
    """The host NVCF's invocation service routes by, as axum-extra's ``Host`` extractor reads
    it (app.rs): the first ``Forwarded`` element's ``host=``, else ``X-Forwarded-Host``, else
    ``Host``. A proxy in front of the emulator that keeps the client's host in one of those
    still reaches the function that host names."""
    forwarded = request.headers.get("Forwarded")
    if forwarded is not None:
        for pair in forwarded.split(",")[0].split(";"):
            key, eq, value = pair.partition("=")
            if eq and key.strip().lower() == "host":
                return value.strip().strip('"')
    forwarded_host = request.headers.get("X-Forwarded-Host")
    if forwarded_host is not None:
        return forwarded_host
    return request.headers.get("Host", "")


def _host_target(host: str) -> Target | None:
    first = _uuid_or_none(host[:_HYPHENATED_LEN])  # 36 characters: only the hyphenated form
    if first is None:
        return None
    # The 36 characters after the one that follows the first id (a dot): a second id makes
    # the first the version.
    second = host[_HYPHENATED_LEN + 1 : 2 * _HYPHENATED_LEN + 1]
    if len(second) == _HYPHENATED_LEN and _uuid_or_none(second) is not None:
        return canonical(second), first
    return first, None


_INVOCATION_HOST = re.compile(
    rf"(?:{HYPHENATED_UUID_PATTERN}\.){{1,2}}invocation\.(?P<domain>.+)\Z", re.I
)


def invocation_domain(host: str) -> str | None:
    """``api.nvcf.nvidia.com`` for ``<functionId>.invocation.api.nvcf.nvidia.com`` (or
    ``<versionId>.<functionId>.invocation...``): how in-process routing knows a pass-through
    URL of one of the emulator's API hosts. ``None`` for any other host."""
    match = _INVOCATION_HOST.match(host)
    return match.group("domain") if match else None


def _raw_target(request: Request) -> str:
    """The client's path and query as it sent them (NVCF forwards ``path_and_query``)."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
    if isinstance(raw, str) and raw.startswith("/"):
        return raw
    query = request.query_string.decode("latin-1")
    return quote(request.path, safe="/:@!$&'()*+,;=-._~%") + (f"?{query}" if query else "")


def passthrough(
    emu: Emulator, request: Request, function_id: str, version_id: str | None = None
) -> Response:
    """A pass-through call: the client's method, path, query, headers and body go to the
    container as they are, and its answer comes back as it is (NVCF sets
    ``nvcf-feature-disable-worker-compatibility: true``: no problem mapping, no 302 zip, no
    progress). ``NVCF-INPUT-ASSET-REFERENCES`` is not read; a 202 and
    ``/v2/nvcf/pexec/status/{reqId}`` work as for pexec."""
    try:
        account = invocation_account(emu, request)
    except AuthRefused as refused:
        return refused.response()
    version = emu.functions.resolve_invocation(account, function_id, version_id)
    streaming = wants_stream(request)
    seconds = poll_seconds(emu, request, streaming, passthrough=True)
    body = _read_body(emu, request)
    admit(emu, request, account, version)
    headers = [(k, v) for k, v in request.headers.items() if k.lower() != COMPAT_OFF_HEADER]
    inv = emu.invocation_service.submit(
        account,
        version,
        [],
        method=request.method,
        path=request.path,
        headers=[*headers, (COMPAT_OFF_HEADER, "true")],
        body=body,
        poll_seconds=seconds,
        streaming=streaming,
        container_path=_raw_target(request),
    )
    if emu.config.always_async:
        return _answer(emu, request, inv, None, seconds)
    event = emu.invocation_service.next_event(inv, seconds)
    return _answer(emu, request, inv, event, seconds)


def status(emu: Emulator, request: Request, request_id: str) -> Response:
    try:
        account = invocation_account(emu, request)
    except AuthRefused as refused:
        return refused.response()
    try:
        request_id = invocation_id(request_id)
    except InvalidUrl as bad:
        return bad.response()
    seconds = poll_seconds(emu, request, wants_stream(request))
    return poll_invocation(
        emu, request, account, request_id, seconds, list(request.headers.items())
    )


def poll_invocation(
    emu: Emulator,
    request: Request,
    account: Account,
    request_id: str,
    seconds: int,
    headers: list[tuple[str, str]],
) -> Response:
    """A status poll once the caller, the id and the window are read: waits up to ``seconds``
    for the request's next event; ``headers`` go to a container asked again. exec's status
    (``exec_api``) polls through here too, as NVCF's ``get_exec.rs`` calls ``pexec_status``."""
    inv = emu.invocation_service.lookup(account, request_id)
    event = emu.invocation_service.next_event(inv, seconds, poll_headers=headers)
    return _answer(emu, request, inv, event, seconds)


def queue_position(emu: Emulator, request: Request, request_id: str) -> Response:
    account = control_account(emu, request)
    inv = emu.invocation_service.lookup(account, control_id("requestId", request_id))
    return json_response(
        {
            "functionId": inv.function_id,
            "functionVersionId": inv.version_id,
            "positionInQueue": min(1000, emu.invocation_service.position(inv)),
        }
    )


def queue_details(
    emu: Emulator, request: Request, function_id: str, version_id: str | None = None
) -> Response:
    account = control_account(emu, request)
    function_id = control_id("functionId", function_id)
    version_id = None if version_id is None else control_id("versionId", version_id)
    if version_id is None:
        versions = emu.functions.versions(account, function_id)
    else:
        versions = [emu.functions.get(account, function_id, version_id)]
    # NVCF (QueueFacade.java) has queues only for ACTIVE or DEPLOYING versions.
    versions = [v for v in versions if v.status in QUEUED_STATUSES]
    if not versions:
        raise NotFound(
            f"Function id '{function_id}': Queue not found - Function is likely not deployed"
        )
    service = emu.invocation_service
    return json_response(
        {
            "functionId": function_id,
            "queues": [
                {
                    "functionName": v.name,
                    "functionStatus": v.status.value,
                    "functionVersionId": v.version_id,
                    "queueDepth": service.queue_depth(function_id, v.version_id),
                }
                for v in versions
            ],
        }
    )


def queue_details_version(
    emu: Emulator, request: Request, function_id: str, version_id: str
) -> Response:
    return queue_details(emu, request, function_id, version_id)


def download_result(emu: Emulator, request: Request, token: str, name: str) -> Response:
    """A large result's zip; no ``Authorization`` needed (the token is the credential). In
    NVCF the link is a pre-signed S3 GET, so its errors are S3's: 403 ``AccessDenied`` past
    its expiry, else 404 ``NoSuchKey``."""
    result = emu.invocation_service.large_result(token)
    if result is None or name != result.filename:
        now, expires = emu.clock.now(), token_expiry(token)
        error = (
            StorageError(
                403,
                "AccessDenied",
                "Request has expired",
                Expires=isoformat(expires, millis=False),
                ServerTime=isoformat(now, millis=False),
            )
            if expires is not None and now >= expires
            else StorageError(404, "NoSuchKey", "The specified key does not exist.", Key=name)
        )
        return s3_error(error, new_request_id(), request.path)
    return send_file(
        result.path,
        request.environ,
        mimetype="application/zip",
        as_attachment=True,
        download_name=result.filename,
        conditional=False,
        etag=False,
        max_age=None,
    )


def invocation_summary(inv: Invocation) -> dict[str, object]:
    """What every admin view of an invocation shows: ids, status, times, assets, the headers
    the container got, its answer's status. No bodies, no credentials."""
    return {
        "requestId": inv.request_id,
        "functionId": inv.function_id,
        "functionVersionId": inv.version_id,
        "functionName": inv.function_name,
        "ncaId": inv.nca_id,
        "status": inv.status.value,
        "createdAt": isoformat(inv.created_at),
        "assetIds": list(inv.asset_ids),
        "containerHeaders": inv.container_headers,
        "stagedFiles": [str(p) for p in inv.staged_files],
        "responseStatus": inv.response_status,
        "delivered": list(inv.delivered),
        "durationSeconds": inv.duration,
    }


def _record(inv: Invocation) -> dict[str, object]:
    """An invocation for ``GET /_emulator/invocations``."""
    return {
        **invocation_summary(inv),
        "pollSeconds": inv.poll_seconds,
        "streaming": inv.streaming,
        "requestBytes": len(inv.request_body),
        "containerCalls": inv.container_calls,
        "outputFiles": inv.output_files,
        "progress": [u.progress for u in inv.progress],
        "error": inv.error,
    }


def list_invocations(emu: Emulator, request: Request) -> Response:
    """Every invocation since the last reset, oldest first (server-mode ``emu.invocations``)."""
    return json_response({"invocations": [_record(inv) for inv in emu.invocations]})


#: The invocation service's paths: behind its CORS layer and its own auth and 405 answers.
INVOCATION_PREFIXES = ("/v2/nvcf/pexec/", "/v2/nvcf/exec/")
_VARY = "origin, access-control-request-method, access-control-request-headers"


def is_invocation_path(path: str) -> bool:
    return path.startswith(INVOCATION_PREFIXES)


def add_cors(request: Request, response: Response) -> None:
    """What tower-http's ``CorsLayer::very_permissive()`` adds to every answer of the
    invocation service: the caller's ``Origin`` mirrored, credentials allowed, ``Vary``."""
    response.headers["Vary"] = _VARY
    response.headers["Access-Control-Allow-Credentials"] = "true"
    origin = request.headers.get("Origin")
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin


def _allowed(methods: Iterable[str]) -> str:
    """An ``Allow`` header as axum writes it (``GET,HEAD``; OPTIONS is the CORS layer's)."""
    return ",".join(m for m in methods if m != "OPTIONS")


def preflight(emu: Emulator, request: Request, allow: str | None = None, **_: str) -> Response:
    """CORS preflight (any OPTIONS), as the invocation service's CORS layer answers it: 200,
    the requested method and headers mirrored, cached for a day; ``Allow`` on its routes."""
    headers = {"Access-Control-Max-Age": "86400"}
    for asked, allowed in (
        ("Access-Control-Request-Method", "Access-Control-Allow-Methods"),
        ("Access-Control-Request-Headers", "Access-Control-Allow-Headers"),
    ):
        value = request.headers.get(asked)
        if value is not None:
            headers[allowed] = value
    if allow is not None:
        headers["Allow"] = allow
    return Response(b"", status=200, headers=headers)


def preflight_invoke(emu: Emulator, request: Request, **_: str) -> Response:
    return preflight(emu, request, "POST")


def preflight_status(emu: Emulator, request: Request, **_: str) -> Response:
    return preflight(emu, request, "GET,HEAD")


def method_not_allowed(emu: Emulator, request: Request, valid: Iterable[str]) -> Response:
    """A wrong method on an invocation route: the auth layer answers first (401), then axum's
    405, with no body."""
    try:
        invocation_account(emu, request)
    except AuthRefused as refused:
        return refused.response()
    return Response(b"", status=405, headers={"Allow": _allowed(valid)})


ROUTES: list[Route] = [
    ("/v2/nvcf/pexec/functions/<function_id>", ["POST"], invoke),
    ("/v2/nvcf/pexec/functions/<function_id>/versions/<version_id>", ["POST"], invoke_version),
    ("/v2/nvcf/pexec/status/<request_id>", ["GET"], status),
    # <path:rest> does not match a path holding a newline (%0A): name the three paths too.
    ("/v2/nvcf/pexec/functions/<function_id>", ["OPTIONS"], preflight_invoke),
    (
        "/v2/nvcf/pexec/functions/<function_id>/versions/<version_id>",
        ["OPTIONS"],
        preflight_invoke,
    ),
    ("/v2/nvcf/pexec/status/<request_id>", ["OPTIONS"], preflight_status),
    ("/v2/nvcf/pexec/<path:rest>", ["OPTIONS"], preflight),
    ("/v2/nvcf/queues/<request_id>/position", ["GET"], queue_position),
    ("/v2/nvcf/queues/functions/<function_id>", ["GET"], queue_details),
    (
        "/v2/nvcf/queues/functions/<function_id>/versions/<version_id>",
        ["GET"],
        queue_details_version,
    ),
    (f"{RESULTS_PREFIX}/<token>/<name>", ["GET"], download_result),
    ("/_emulator/invocations", ["GET"], list_invocations),
]
