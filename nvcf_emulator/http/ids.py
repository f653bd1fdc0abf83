"""Ids in request paths, read as NVCF's two planes read them: as UUIDs, in any case.

The control plane (Spring MVC, ``@PathVariable UUID``) answers a value that is not a UUID with
400 problem JSON before anything is looked up; the invocation service (axum,
``Path<Uuid>``) with a 400 ``text/plain`` "Invalid URL: ..." line. Both parse upper case too,
and name the record by its lower-case id.
"""

from __future__ import annotations

import re

from werkzeug.wrappers import Response

from ..domain.errors import BadRequest

_HEX = "[0-9a-fA-F]"
_HYPHENATED = rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
#: A hyphenated UUID (36 characters), the only form a pass-through call's Host names.
HYPHENATED_UUID_PATTERN = _HYPHENATED
#: What ``java.util.UUID.fromString`` reads in its canonical form (Spring's converter).
_SPRING_UUID = re.compile(rf"{_HYPHENATED}\Z")
#: One id in the forms Rust's ``Uuid::parse_str`` reads (the invocation service's paths and
#: its ``NVCF-INPUT-ASSET-REFERENCES``): hyphenated, simple (32 hex digits), braced or
#: ``urn:uuid:``.
RUST_UUID_PATTERN = rf"(?:{_HYPHENATED}|{_HEX}{{32}}|\{{{_HYPHENATED}\}}|urn:uuid:{_HYPHENATED})"
_RUST_UUID = re.compile(rf"{RUST_UUID_PATTERN}\Z")
_SHOWN = 256


def shown(value: str) -> str:
    """``value`` as an error message quotes it: its first 256 characters, then "..."."""
    return value if len(value) <= _SHOWN else value[:_SHOWN] + "..."


def canonical(value: str) -> str:
    """A UUID matched by :data:`RUST_UUID_PATTERN` as NVCF prints it: hyphenated, lower case."""
    digits = re.sub(r"[^0-9a-fA-F]", "", value.removeprefix("urn:uuid:")).lower()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def control_id(name: str, value: str) -> str:
    """A control-plane path id (``assetId``, ``functionId``, ...) in its lower-case form;
    :class:`BadRequest` with Spring's conversion message when it is not a UUID."""
    if _SPRING_UUID.match(value):
        return value.lower()
    raise BadRequest(f"Failed to convert '{name}' with value: '{shown(value)}' (it must be a UUID)")


class InvalidUrl(Exception):
    """A path id the invocation service cannot parse: its 400 ``text/plain`` answer."""

    def response(self) -> Response:
        return Response(f"Invalid URL: {self}", status=400, content_type="text/plain")


def invocation_id(value: str) -> str:
    """An invocation-plane path id (function, version or request id) in its canonical
    lower-case form; :class:`InvalidUrl` when Rust's UUID parser would refuse it."""
    if _RUST_UUID.match(value):
        return canonical(value)
    bad = next((c for c in value if not (c.isascii() and (c.isalnum() or c in "-:{}"))), None)
    if bad is not None:
        reason = f"invalid character: found `{bad}` at {value.index(bad) + 1}"
    else:
        reason = f"invalid length or format: found {len(value)} characters"
    raise InvalidUrl(
        f"UUID parsing failed: {reason}; expected 32 hex digits, optionally hyphenated as "
        "8-4-4-4-12, braced or prefixed with `urn:uuid:`"
    )
