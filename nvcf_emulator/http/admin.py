"""The admin API under ``/_emulator/``: health, reset, clock, state (what the dashboard shows)."""

from __future__ import annotations

import ipaddress
import math
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from werkzeug.wrappers import Request, Response

from ..domain.clock import isoformat, parse_rfc3339
from ..domain.errors import BadRequest
from ..domain.faults import OPERATIONS
from .bodies import read_json_object
from .pexec import invocation_domain, invocation_summary
from .responses import Route, json_response

if TYPE_CHECKING:
    from ..domain.assets import Asset
    from ..domain.invocations import Invocation
    from ..emulator import Emulator


#: On every admin answer: what it holds (the headers a container got, its answers, tracebacks)
#: is for whoever asked, not for a browser's or a proxy's cache (an admin-token-protected
#: answer included), and is never sniffed as anything but JSON.
ADMIN_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def admin_json(data: object) -> Response:
    """A JSON answer of the admin API, with :data:`ADMIN_HEADERS` (no charset: ``json.dumps``
    escapes every non-ASCII character, so the body is ASCII)."""
    return json_response(data, headers=ADMIN_HEADERS)


def health(emu: Emulator, request: Request) -> Response:
    return admin_json({"status": "ok"})


def reset(emu: Emulator, request: Request) -> Response:
    emu.reset()
    return admin_json({"status": "reset"})


def _clock_state(emu: Emulator) -> dict[str, object]:
    now = emu.clock.now()
    return {"now": isoformat(now), "epoch": now, "offsetSeconds": emu.clock.offset}


def get_clock(emu: Emulator, request: Request) -> Response:
    return admin_json(_clock_state(emu))


def set_clock(emu: Emulator, request: Request) -> Response:
    body = read_json_object(request)
    if ("advance" in body) == ("set" in body):
        raise BadRequest('Send exactly one of {"advance": <seconds>} or {"set": "<ISO 8601>"}')
    if "advance" in body:
        seconds = body["advance"]
        try:
            finite = math.isfinite(seconds)
        except (TypeError, OverflowError):  # not a number, or an int past any float
            finite = False
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not finite:
            raise BadRequest("advance must be a finite number of seconds")
        emu.clock.advance(seconds)
    else:
        emu.clock.set(parse_date_time(body["set"]))
    emu.sweep()
    return admin_json(_clock_state(emu))


def parse_date_time(value: object) -> datetime:
    """An RFC 3339 date-time (the OpenAPI ``date-time`` format), leap seconds included."""
    if not isinstance(value, str):
        raise BadRequest(
            f"set must be an RFC 3339 date-time like 2026-01-01T00:00:00Z, got {value!r}"
        )
    try:
        return parse_rfc3339(value, strict=True)
    except ValueError as bad:
        raise BadRequest(f"set: {bad}") from None


#: Invocations ``GET /_emulator/state`` lists (the newest ones); ``invocationCount`` has them all.
STATE_INVOCATIONS = 100
#: Assets ``GET /_emulator/state`` lists (the newest ones; the dashboard reads it every
#: second, so a long session's every asset would cost it MBs and the emulator CPU);
#: ``assetCount`` has them all.
STATE_ASSETS = 1000
#: Characters of a container's answer, an error, an asset's description or media type shown
#: in the state's previews.
PREVIEW_CHARS = 500
#: 10000-01-01T00:00:00Z: ``datetime`` prints no time from here on.
_YEAR_10000 = 253402300800.0


def _printable(ts: float) -> str:
    """``ts`` as :func:`isoformat`, or its last millisecond for a time past the year 9999: the
    clock stops at 9999-12-30, but an asset made then expires ``asset_ttl`` later, and the
    state (and the dashboard) should not fail for it."""
    return isoformat(min(ts, math.nextafter(_YEAR_10000, 0.0)))


def _preview(text: str | None, *, tail: bool = False) -> str | None:
    """At most ``PREVIEW_CHARS`` of a long text: its start, or with ``tail`` its end (a
    traceback says what went wrong on its last line)."""
    if text is None or len(text) <= PREVIEW_CHARS:
        return text
    return "…" + text[-PREVIEW_CHARS:] if tail else text[:PREVIEW_CHARS] + "…"


def _asset_entries(emu: Emulator, assets: list[Asset], now: float) -> list[dict[str, object]]:
    ttl = emu.config.asset_ttl
    return [
        {
            "assetId": a.asset_id,
            "ncaId": a.nca_id,
            # Previews too: NVCF takes a description (or a media type) of any length.
            "contentType": _preview(a.content_type),
            "description": _preview(a.description),
            "createdAt": isoformat(a.created_at),
            "uploaded": a.uploaded_at is not None,
            "uploadedAt": isoformat(a.uploaded_at) if a.uploaded_at is not None else None,
            "size": a.size,
            "ageSeconds": max(0.0, now - a.created_at),
            "expiresAt": _printable(a.expires_at(ttl)),
            "secondsLeft": max(0.0, a.expires_at(ttl) - now),
        }
        for a in assets
    ]


def _function_entries(emu: Emulator) -> list[dict[str, object]]:
    functions: dict[str, dict[str, object]] = {}
    for v in emu.functions.all():
        entry = functions.setdefault(
            v.function_id,
            {"functionId": v.function_id, "name": v.name, "ncaId": v.nca_id, "versions": []},
        )
        versions = entry["versions"]
        assert isinstance(versions, list)
        versions.append(
            {
                "versionId": v.version_id,
                "name": v.name,
                "status": v.status.value,
                "createdAt": isoformat(v.created_at),
                "inferenceUrl": v.inference_url,
                "inferencePort": v.inference_port,
                "containerImage": v.container_image,
                # Where its container reads its secrets (None when it has none).
                "secretsFile": (
                    str(emu.secret_files.path(v.version_id)) if v.secret_values() else None
                ),
            }
        )
    return list(functions.values())


def _time(value: float | None) -> str | None:
    return isoformat(value) if value is not None else None


def _invocation_entry(inv: Invocation) -> dict[str, object]:
    body = inv.response_body
    return {
        **invocation_summary(inv),
        "startedAt": _time(inv.started_at),
        "finishedAt": _time(inv.finished_at),
        "responseBytes": len(body) if body is not None else None,
        "responsePreview": _preview(body.decode("utf-8", "replace")) if body is not None else None,
        "error": _preview(inv.error, tail=True),
    }


def state_document(emu: Emulator) -> dict[str, object]:
    """What ``GET /_emulator/state`` answers (and what the dashboard shows)."""
    now = emu.clock.now()
    invocations = emu.invocations
    assets = emu.assets.all()
    return {
        "clock": _clock_state(emu),
        "assetTtlSeconds": emu.config.asset_ttl,
        "assetCount": len(assets),
        "assets": _asset_entries(emu, assets[-STATE_ASSETS:], now),
        "functions": _function_entries(emu),
        "invocationCount": len(invocations),
        "invocations": [_invocation_entry(i) for i in reversed(invocations[-STATE_INVOCATIONS:])],
    }


def state(emu: Emulator, request: Request) -> Response:
    return admin_json(state_document(emu))


def openapi(emu: Emulator, request: Request) -> Response:
    from .openapi import document

    return admin_json(document(emu.config))


def dashboard(emu: Emulator, request: Request) -> Response:
    from .dashboard import page

    return page(emu, request)


#: The dashboard's paths: served without the admin token (the page's script sends it).
DASHBOARD_PATHS = frozenset({"/_emulator", "/_emulator/ui"})
#: Served without the admin token: the dashboard (it holds no data then) and the health check
#: (a compose or Kubernetes probe need not know the token).
HEALTH_PATH = "/_emulator/health"
TOKENLESS_PATHS = DASHBOARD_PATHS | {HEALTH_PATH}

#: Methods that only read: a cross-site link to the dashboard or the state is fine.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})
#: Set in the environ by a server bound to a loopback address (never in-process).
LOOPBACK_SERVER_KEY = "nvcf_emulator.loopback_server"


def is_loopback_host(host: str) -> bool:
    """``host`` (a name or an address, bracketed or not) is this machine's loopback."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _foreign_host(emu: Emulator, request: Request) -> str | None:
    """The ``Host`` of a request to a server bound to loopback that names neither this machine
    (``localhost``, ``*.localhost``, a loopback address, also behind a function's
    ``<id>.invocation.``) nor one of the emulator's own hosts: what a DNS rebinding page
    sends. ``None`` otherwise, and always in-process."""
    if not request.environ.get(LOOPBACK_SERVER_KEY):
        return None
    host = request.host.lower()
    name = host.rpartition(":")[0] if not host.endswith("]") and ":" in host else host
    for candidate in (name, invocation_domain(name)):
        if candidate is not None and (
            is_loopback_host(candidate) or candidate.strip("[]") in emu.routed_hosts
        ):
            return None
    return request.host


def rebound_host(emu: Emulator, request: Request) -> str | None:
    """The ``Host`` of an admin call that looks like DNS rebinding, or ``None``.

    A page on another site whose name the attacker then points at 127.0.0.1 is same-origin
    to the browser, so neither ``Sec-Fetch-Site`` nor ``Origin`` gives it away; its ``Host``
    does. A server bound to loopback, without an admin token (which such a page lacks),
    answers admin calls only for this machine's names and the emulator's own hosts."""
    if emu.config.admin_token or request.path.rstrip("/") == HEALTH_PATH:
        return None  # (the health check tells nothing, changes nothing)
    return _foreign_host(emu, request)


def rebound_api_host(emu: Emulator, request: Request) -> str | None:
    """The ``Host`` of a browser's NVCF API call that looks like DNS rebinding, or ``None``.

    While no API keys are configured any ``nvapi-`` key is accepted, so a rebound page could
    list assets and invoke functions. A browser's call says so (``Sec-Fetch-Site``, or
    ``Origin`` in older browsers; scripts and SDKs send neither): on a loopback server it is
    answered only for this machine's names and the emulator's hosts. With API keys a page
    has no key to send, so any ``Host`` is fine (as ``admin_token`` for the admin API)."""
    if not emu.accounts.open:
        return None
    if "Sec-Fetch-Site" not in request.headers and "Origin" not in request.headers:
        return None
    return _foreign_host(emu, request)


def cross_site_write(request: Request) -> str | None:
    """Why a browser request from another site that would change the emulator (a plain form
    POSTed to ``/_emulator/reset`` by any page the developer visits) is refused, or ``None``.

    Browsers say where a request comes from: ``Sec-Fetch-Site`` (``same-origin`` for the
    dashboard's own script, ``none`` for a typed address) or, in older ones, ``Origin``.
    Scripts (curl, requests, :class:`~nvcf_emulator.RemoteEmulator`) send neither."""
    if request.method in _SAFE_METHODS:
        return None
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        if site.strip().lower() in ("same-origin", "none"):
            return None
        return f"Sec-Fetch-Site: {site}"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    try:
        netloc = urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        netloc = ""
    return None if netloc and netloc == request.host.lower() else f"Origin: {origin}"


def list_faults(emu: Emulator, request: Request) -> Response:
    return admin_json({"faults": [f.as_json() for f in emu.faults]})


def add_fault(emu: Emulator, request: Request) -> Response:
    body = read_json_object(request)
    fields = {
        "operation",
        "status",
        "latency",
        "drop",
        "times",
        "probability",
        "seed",
        "message",
        "retry_after",
    }
    unknown = sorted(set(body) - fields)
    if unknown:
        raise BadRequest(f"unknown fault field(s): {', '.join(unknown)}")
    if not isinstance(body.get("operation"), str):
        raise BadRequest("operation is required: one of " + ", ".join(OPERATIONS))
    types: dict[str, tuple[type, ...]] = {
        "status": (int,),
        "latency": (int, float),
        "drop": (bool,),
        "times": (int,),
        "probability": (int, float),
        "seed": (int,),
        "message": (str,),
        "retry_after": (int,),
    }
    for name, allowed in types.items():
        value = body.get(name)
        if value is None:
            if name in ("latency", "drop", "probability"):  # null: the default, as if left out
                body.pop(name, None)
            continue
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise BadRequest(f"{name} has the wrong type")
    try:
        fault = emu.faults.add(**body)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return admin_json(fault.as_json())


def clear_faults(emu: Emulator, request: Request) -> Response:
    emu.faults.clear()
    return admin_json({"faults": []})


def requests_log(emu: Emulator, request: Request) -> Response:
    return admin_json({"requests": [c.as_json() for c in emu.calls]})


def seed(emu: Emulator, request: Request) -> Response:
    body = read_json_object(request)
    value = body.get("seed")
    if "seed" not in body or not (
        value is None or (isinstance(value, int) and not isinstance(value, bool))
    ):
        raise BadRequest('Send {"seed": <integer>} for repeatable ids, or {"seed": null}')
    emu.ids.seed(value)
    return admin_json({"seed": value})


ROUTES: list[Route] = [
    ("/_emulator/requests", ["GET"], requests_log),
    ("/_emulator/faults", ["GET"], list_faults),
    ("/_emulator/faults", ["POST"], add_fault),
    ("/_emulator/faults", ["DELETE"], clear_faults),
    ("/_emulator/openapi.json", ["GET"], openapi),
    ("/_emulator/seed", ["POST"], seed),
    ("/_emulator/health", ["GET"], health),
    ("/_emulator/reset", ["POST"], reset),
    ("/_emulator/clock", ["GET"], get_clock),
    ("/_emulator/clock", ["POST"], set_clock),
    ("/_emulator/state", ["GET"], state),
    ("/_emulator/", ["GET"], dashboard),
    ("/_emulator/ui", ["GET"], dashboard),
]
