"""Reading request bodies the way NVCF's control plane does."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Request

from ..domain.errors import BadRequest, NvcfError

#: Largest JSON body the control plane reads for its own (non-invocation) calls.
MAX_JSON_BODY = 1024 * 1024


def read_upto(request: Request, limit: int) -> bytes:
    """The body, up to ``limit + 1`` bytes (one past the limit tells it is too large), read
    until it ends, whatever the server's reads return. A body that cannot be read (chunked
    framing gone wrong) is a 400 that says why; a client gone mid-body is werkzeug's 400."""
    stream = request.stream
    parts: list[bytes] = []
    size = 0
    try:
        while size <= limit and (chunk := stream.read(limit + 1 - size)):
            parts.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise BadRequest(f"The request body could not be read: {exc}") from exc
    return b"".join(parts)


def require_json(request: Request) -> None:
    """NVCF's control plane (Spring, ``consumes = application/json``) takes exactly
    ``application/json`` (parameters allowed): another type, or none (read as
    ``application/octet-stream``), is 415 before the body is read."""
    mimetype = request.mimetype
    if mimetype != "application/json":
        shown = request.headers.get("Content-Type") or "application/octet-stream"
        raise NvcfError(
            415,
            f"Content-Type '{shown}' is not supported; send application/json"
            + ("" if mimetype else " (the request has no Content-Type)"),
            headers={"Accept": "application/json"},
        )


def _no_constant(name: str) -> object:
    """``NaN`` and ``Infinity`` are no JSON: Jackson (NVCF's control plane) refuses them, and
    kept, they would reach a container's strict JSON parser (a secrets.json)."""
    raise ValueError(f"{name} is not a JSON value")


def read_json_object(request: Request, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    """The request body as a JSON object, or the 4xx NVCF would answer."""
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise NvcfError(415, f"Content-Type '{mimetype}' is not supported; send application/json")
    length = request.content_length
    if length is not None and length > limit:
        raise NvcfError(413, f"Request body is {length} bytes; the limit is {limit}")
    raw = read_upto(request, limit)
    if len(raw) > limit:
        raise NvcfError(413, f"Request body is larger than {limit} bytes")
    if not raw.strip():
        raise BadRequest("Request body is missing: send a JSON object")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest("Request body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"Request body must be a JSON object, got {type(data).__name__}")
    return data
