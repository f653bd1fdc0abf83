"""The dashboard at ``GET /_emulator/`` (and ``/_emulator/ui``): one HTML page, no build step.

The page is rendered here from :func:`~nvcf_emulator.http.admin.state_document` (when the request
may see the admin API), and its script (``dashboard.js``, inlined with ``dashboard.css``, so it
works offline) then polls ``GET /_emulator/state`` every second and renders the same tables
again, so everything it shows can also be scripted. The page itself is served without the admin
token: it holds no data then, and the script asks for the token (``?token=`` or a form; kept in
``sessionStorage``) and sends it as ``Authorization: Bearer``.

Everything from users (descriptions, headers, answers) is escaped here with :func:`html.escape`
and set with ``textContent`` by the script; the Content-Security-Policy allows only this page's
own inline script and style (by nonce) and requests to its own origin.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from html import escape
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from ...domain.accounts import token_matches
from ..admin import state_document

if TYPE_CHECKING:
    from ...emulator import Emulator

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
#: A lone surrogate (a traceback of bytes decoded with ``surrogateescape``) cannot be encoded.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Seconds between two polls of the state by the page.
POLL_SECONDS = 1.0


@cache
def _resource(name: str) -> str:
    return (files(__package__) / name).read_text(encoding="utf-8")


def _e(value: object) -> str:
    """``value`` as HTML text, a lone surrogate as U+FFFD (else the page is not UTF-8)."""
    return escape(_SURROGATE.sub("\ufffd", str(value)), quote=True)


def fmt_seconds(seconds: float) -> str:
    """``1 d 1 h``, ``23 h 59 min``, ``4 min 10 s``, ``12 s`` (the script has the same rule)."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def fmt_bytes(size: int | None) -> str:
    if size is None:
        return "—"
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_offset(offset: float) -> str:
    if abs(offset) < 0.5:
        return "in step with real time"
    ahead = "ahead of" if offset > 0 else "behind"
    return f"{fmt_seconds(abs(offset))} {ahead} real time"


def _code(value: object) -> str:
    return f"<code>{_e(value)}</code>"


def fmt_time(iso: str) -> str:
    """``2026-01-02T03:04:05.678Z`` → ``2026-01-02 03:04:05 UTC`` (the full value stays in
    the ``datetime`` attribute)."""
    return f"{iso[:10]} {iso[11:19]} UTC" if len(iso) >= 19 else iso


def _time(iso: str) -> str:
    day, _, clock = fmt_time(iso).partition(" ")
    return f'<time datetime="{_e(iso)}"><span>{_e(day)}</span> <span>{_e(clock)}</span></time>'


def _list(items: Sequence[str]) -> str:
    if not items:
        return "—"
    return '<ul class="plain">' + "".join(f"<li>{_code(i)}</li>" for i in items) + "</ul>"


def _details(key: str, summary: str, body: str) -> str:
    return f'<details data-key="{_e(key)}"><summary>{_e(summary)}</summary>{body}</details>'


def _empty(columns: int, text: str) -> str:
    return f'<tr class="empty"><td colspan="{columns}">{_e(text)}</td></tr>'


def _status(value: str) -> str:
    return f'<span class="badge badge-{_e(value.lower())}">{_e(value)}</span>'


def asset_rows(assets: Iterable[Mapping[str, Any]]) -> str:
    rows = []
    for a in assets:
        uploaded = "yes" if a["uploaded"] else "no (waiting for its upload)"
        rows.append(
            f'<tr data-asset-id="{_e(a["assetId"])}">'
            f'<th scope="row">{_code(a["assetId"])}</th>'
            f'<td class="wraps">{_e(a["contentType"])}</td>'
            f'<td class="text">{_e(a["description"])}</td>'
            f"<td>{_e(fmt_bytes(a['size']))}</td>"
            f"<td>{_e(uploaded)}</td>"
            f"<td>{_e(fmt_seconds(a['ageSeconds']))}</td>"
            f"<td>{_e(fmt_seconds(a['secondsLeft']))}</td>"
            f"<td>{_time(a['expiresAt'])}</td>"
            f"<td>{_code(a['ncaId'])}</td>"
            "</tr>"
        )
    return "".join(rows) or _empty(9, "No assets.")


def function_rows(functions: Iterable[Mapping[str, Any]]) -> str:
    rows = []
    for f in functions:
        for v in f["versions"]:
            image = v["containerImage"]
            rows.append(
                f'<tr data-version-id="{_e(v["versionId"])}">'
                f'<th scope="row">{_e(v["name"])}<br>{_code(f["functionId"])}</th>'
                f"<td>{_code(v['versionId'])}</td>"
                f"<td>{_status(v['status'])}</td>"
                f'<td class="wraps">{_code(v["inferenceUrl"])} port {_e(v["inferencePort"])}</td>'
                f'<td class="wraps">{_code(image) if image is not None else "—"}</td>'
                f"<td>{_time(v['createdAt'])}</td>"
                f"<td>{_code(f['ncaId'])}</td>"
                "</tr>"
            )
    return "".join(rows) or _empty(7, "No functions.")


def _files(request_id: str, paths: Sequence[str]) -> str:
    if not paths:
        return "—"
    summary = f"{len(paths)} file" + ("" if len(paths) == 1 else "s")
    return _details(f"files:{request_id}", summary, _list(paths))


def _headers(request_id: str, headers: Mapping[str, str]) -> str:
    if not headers:
        return "—"
    body = (
        '<dl class="headers">'
        + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in headers.items())
        + "</dl>"
    )
    return _details(f"headers:{request_id}", f"{len(headers)} headers", body)


def _response(inv: Mapping[str, Any]) -> str:
    status = inv["responseStatus"]
    if status is None:
        return "—"
    summary = f"HTTP {status} · {fmt_bytes(inv['responseBytes'])}"
    preview = inv["responsePreview"] or ""
    return _details(f"response:{inv['requestId']}", summary, f"<pre>{_e(preview)}</pre>")


def invocation_rows(invocations: Iterable[Mapping[str, Any]]) -> str:
    rows = []
    for i in invocations:
        error = _details(f"error:{i['requestId']}", "error", f"<pre>{_e(i['error'])}</pre>")
        rows.append(
            f'<tr data-request-id="{_e(i["requestId"])}">'
            f'<th scope="row">{_code(i["requestId"])}</th>'
            f"<td>{_e(i['functionName'])}<br>{_code(i['functionId'])}"
            f"<br>version {_code(i['functionVersionId'])}</td>"
            f"<td>{_status(i['status'])}</td>"
            f"<td>{_time(i['createdAt'])}</td>"
            f"<td>{_e(fmt_duration(i['durationSeconds']))}</td>"
            f"<td>{_list(i['assetIds'])}</td>"
            f'<td class="paths">{_files(i["requestId"], i["stagedFiles"])}</td>'
            f"<td>{_headers(i['requestId'], i['containerHeaders'])}</td>"
            f"<td>{_response(i)}</td>"
            f"<td>{error if i['error'] else '—'}</td>"
            "</tr>"
        )
    return "".join(rows) or _empty(10, "No invocations.")


def _authorized(emu: Emulator, request: Request) -> bool:
    token = emu.config.admin_token
    if not token:
        return True
    return token_matches(request.headers.get("Authorization"), token)


def render(emu: Emulator, request: Request, nonce: str) -> str:
    state: dict[str, Any] | None = state_document(emu) if _authorized(emu, request) else None
    loading = "Waiting for the admin token (see above)." if state is None else ""
    clock_now = state["clock"]["now"] if state else "—"
    offset = fmt_offset(state["clock"]["offsetSeconds"]) if state else ""
    count = state["invocationCount"] if state else 0
    shown = len(state["invocations"]) if state else 0
    api = request.script_root + "/_emulator"
    values = {
        "nonce": nonce,
        "css": _resource("dashboard.css"),
        "js": _resource("dashboard.js"),
        "api": _e(api),
        "poll_ms": str(int(POLL_SECONDS * 1000)),
        "clock_now": _e(fmt_time(clock_now)),
        "clock_iso": _e(clock_now),
        "clock_offset": _e(offset),
        "invocation_note": _e(invocation_note(shown, count)),
        "asset_note": _e(asset_note(len(state["assets"]), state["assetCount"]) if state else ""),
        "asset_rows": asset_rows(state["assets"]) if state else _empty(9, loading),
        "function_rows": function_rows(state["functions"]) if state else _empty(7, loading),
        "invocation_rows": (
            invocation_rows(state["invocations"]) if state else _empty(10, loading)
        ),
    }
    # One pass: text put in (user data included) is never searched for placeholders again.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], _resource("page.html"))


def asset_note(shown: int, total: int) -> str:
    return f"The newest {shown} of {total} assets." if total > shown else ""


def invocation_note(shown: int, total: int) -> str:
    if total > shown:
        return f"The last {shown} of {total} invocations, newest first."
    return "Newest first."


def page(emu: Emulator, request: Request) -> Response:
    nonce = secrets.token_urlsafe(16)
    csp = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return Response(
        render(emu, request, nonce),
        content_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": csp,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            # frame-ancestors for browsers that read only this (the page resets the emulator).
            "X-Frame-Options": "DENY",
        },
    )
