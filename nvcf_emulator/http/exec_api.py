"""NVCF's legacy envelope API, ``/v2/nvcf/exec/...``: pexec with a JSON envelope each way.

As NVIDIA's invocation service does it (``post_exec.rs``, ``get_exec.rs``), this is a wrapper
around pexec, not a second invocation path: the body ``{"requestHeader": {
"inputAssetReferences": [...], "pollDurationSeconds": n}, "requestBody": <json>}`` becomes a
pexec call whose body is ``requestBody`` serialized again (``Content-Type: application/json``,
no other client header), and pexec's answer becomes ``{reqId, status, responseReference,
percentComplete, errorCode, response}`` (``map_passthrough_response_to_wrapped_response``):

- 200 → 200 ``fulfilled``, ``percentComplete: 100``, the container's JSON as ``response`` (a
  body that is not JSON is a 500 problem: the result is gone, as in NVCF);
- 302 (a large result) → 200 ``fulfilled`` with the zip's URL as ``responseReference``;
- 202 → 202 ``in-progress`` (no progress or partial response: NVCF drops them);
- any other status, the container's errors included → that status, ``errored``, ``errorCode``.

What pexec refuses before there is a request (the key, the function, an asset, the poll
window) comes back as pexec's own answer, unwrapped. ``GET /v2/nvcf/exec/status/{reqId}``
polls as pexec's status does, with NVCF's default window (it reads no request header), and
wraps its answer, a 404 for an unknown request included (``reqId`` then the nil UUID).

JSON is read and written as serde_json reads and writes it: members sorted by key, numbers as
u64/i64/f64 (``1e2`` is ``100.0``, ``-0`` is ``-0.0``), NaN, lone surrogates and more than 128
levels of nesting refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from ..domain.errors import BadRequest, NotFound
from . import pexec
from .bodies import read_upto
from .ids import InvalidUrl, invocation_id, shown
from .responses import STREAMED_KEY, EnvelopeResponse, Route, nvcf_error, problem

if TYPE_CHECKING:
    from ..emulator import Emulator

#: axum's default body limit (``with_limited_body``), which exec applies and pexec does not.
MAX_ENVELOPE_BYTES = 2 * 1024 * 1024
#: serde_json's nesting limit.
MAX_DEPTH = 128
NIL_UUID = "00000000-0000-0000-0000-000000000000"
_U64_MAX = 2**64 - 1
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
#: The envelope's two structs, as serde names them in its messages, and their fields.
_REQUEST = ("InvokeFunctionRequest", ("requestHeader", "requestBody"))
_HEADER = ("RequestHeader", ("inputAssetReferences", "pollDurationSeconds"))
_MISSING = object()
#: The envelope's ``status`` for pexec's answer; any other status is ``errored``.
_STATES = {200: "fulfilled", 302: "fulfilled", 202: "in-progress"}


# -- JSON as serde_json reads and writes it --------------------------------------------------------


class JsonError(ValueError):
    """JSON serde_json refuses, or an envelope its derived ``Deserialize`` refuses."""


class _Object(dict[str, Any]):
    """A JSON object, remembering the keys it held more than once (a struct refuses them)."""

    duplicates: frozenset[str] = frozenset()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)  # the last value of a key wins, as in serde_json's map
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice: set[str] = set()
        for key, _ in pairs:
            (twice if key in seen else seen).add(key)
        obj.duplicates = frozenset(twice)
    return obj


def _integer(text: str) -> int | float:
    """serde_json's integers: u64 or i64; ``-0`` and any other integer are an f64."""
    value = int(text)
    if text.startswith("-") and value == 0:
        return -0.0
    if _I64_MIN <= value <= _U64_MAX:
        return value
    return _finite(text)


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JsonError("number out of range")
    return value


def _constant(name: str) -> Any:
    raise JsonError(f"expected value ({name} is not JSON)")


def parse(data: bytes) -> Any:
    """``data`` as serde_json parses it into a ``Value``, else :class:`JsonError`."""
    try:
        text = data.decode("utf-8")
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_integer,
            parse_float=_finite,
            parse_constant=_constant,
        )
    except JsonError:
        raise
    except RecursionError:
        raise JsonError("recursion limit exceeded") from None
    except UnicodeDecodeError:
        raise JsonError("invalid unicode code point (the body is not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise JsonError(_syntax_error(exc)) from None
    except ValueError as exc:  # int() of thousands of digits
        raise JsonError(str(exc)) from None
    _check(value, 1)
    return value


#: Python's words for a JSON syntax error (how its message starts) and serde_json's
#: (error.rs) for the same mistake.
_SERDE_WORDS = (
    ("Expecting value", "expected value"),
    ("Unexpected UTF-8 BOM", "expected value"),
    ("Extra data", "trailing characters"),
    ("Expecting ':' delimiter", "expected `:`"),
    (
        "Invalid control character",
        "control character (\\u0000-\\u001F) found while parsing a string",
    ),
)
_LITERALS = {"t": "true", "f": "false", "n": "null"}
_DIGITS = frozenset("0123456789")


def _position(doc: str, index: int) -> str:
    """serde_json's position of ``doc[index]``: its line, and its column counted in bytes
    from 1 (``index`` past the end: the end, its column the last line's length)."""
    start = doc.rfind("\n", 0, index) + 1
    line = doc.count("\n", 0, index) + 1
    column = len(doc[start:index].encode("utf-8")) + (index < len(doc))
    return f"line {line} column {column}"


def _scan(doc: str, end: int) -> tuple[list[str], str, bool]:
    """Up to ``end``: the containers still open, the last character outside a string that is
    not white space, and whether ``end`` falls inside a string."""
    stack: list[str] = []
    last = ""
    in_string = escaped = False
    for char in doc[:end]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string, last = False, char
        elif char == '"':
            in_string = True
        elif not char.isspace():
            if char in "[{":
                stack.append(char)
            elif char in "]}" and stack:
                stack.pop()
            last = char
    return stack, last, in_string


def _syntax_error(exc: json.JSONDecodeError) -> str:
    """A syntax error in serde_json's words at serde_json's position (the common mistakes;
    any other keeps Python's words)."""
    doc, pos, msg = exc.doc, exc.pos, exc.msg
    if msg.startswith("Unterminated string") or not doc[pos:].strip():
        # Cut short: serde names what it was reading when the text ended, at the end.
        stack, last, in_string = _scan(doc, len(doc))
        if in_string:
            what = "a string"
        elif not stack or last in ",:":
            what = "a value"
        else:
            what = "an object" if stack[-1] == "{" else "a list"
        return f"EOF while parsing {what} at {_position(doc, len(doc))}"
    stack, last, _ = _scan(doc, pos)
    char = doc[pos]
    if msg == "Expecting value" and char in _LITERALS:
        literal = _LITERALS[char]
        for k in range(1, len(literal)):
            if pos + k >= len(doc):
                return f"EOF while parsing a value at {_position(doc, len(doc))}"
            if doc[pos + k] != literal[k]:
                return f"expected ident at {_position(doc, pos + k)}"
    after = doc[pos - 1] if pos else ""
    if after in _DIGITS and (char in _DIGITS or char in ".eE"):
        # A number Python ended early: a leading zero (01), or no digit after . or e.
        return f"invalid number at {_position(doc, pos if char in _DIGITS else pos + 1)}"
    if msg.startswith("Invalid \\"):
        # serde reports it once it has read the escape: after the letter, or the four digits.
        return f"invalid escape at {_position(doc, pos + (4 if 'uXXXX' in msg else 1))}"
    if char in "]}" and last == "," and msg.startswith(("Expecting value", "Expecting prop")):
        words = "trailing comma"
    elif msg.startswith("Expecting property name"):
        words = "key must be a string"
    elif msg == "Expecting ',' delimiter":
        words = "expected `,` or `}`" if stack and stack[-1] == "{" else "expected `,` or `]`"
    else:
        words = next((serde for py, serde in _SERDE_WORDS if msg.startswith(py)), msg)
    return f"{words} at {_position(doc, pos)}"


def _check(value: Any, depth: int) -> None:
    """What serde_json refuses that Python's parser takes: deep nesting, lone surrogates."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise JsonError("lone leading surrogate in hex escape")
        return
    if isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            raise JsonError("recursion limit exceeded")
        items = [*value, *value.values()] if isinstance(value, dict) else value
        for item in items:
            _check(item, depth + 1)


def _float(value: float) -> str:
    """An f64 as serde_json writes it (ryu): the shortest digits, ``1.0``, ``1e16``,
    ``0.00001``, ``1e-6``, ``1.5e-7``."""
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0.0"
    mantissa, _, exp = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    # value = 0.<digits> x 10^point
    point = len(whole.lstrip("0")) if whole.strip("0") else -(len(frac) - len(frac.lstrip("0")))
    point += int(exp or 0)
    digits = digits.rstrip("0")
    length = len(digits)
    if length <= point <= 16:
        text = digits + "0" * (point - length) + ".0"
    elif 0 < point <= 16:
        text = f"{digits[:point]}.{digits[point:]}"
    elif -5 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        text = (digits if length == 1 else f"{digits[0]}.{digits[1:]}") + f"e{point - 1}"
    return sign + text


def dumps(value: Any) -> str:
    """``value`` (as :func:`parse` makes it) as serde_json writes a ``Value``: compact, keys
    sorted, non-ASCII as it is."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, dict):
        members = (f"{dumps(k)}:{dumps(value[k])}" for k in sorted(value))
        return "{" + ",".join(members) + "}"
    return "[" + ",".join(dumps(item) for item in value) + "]"


# -- the envelope ----------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """A JSON value as serde's ``invalid type`` message names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{json.dumps(value)}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{_float(value)}`"
    if isinstance(value, str):
        return f"string {json.dumps(value, ensure_ascii=False)}"
    return "map" if isinstance(value, dict) else "sequence"


def _fields(value: Any, struct: tuple[str, tuple[str, str]]) -> tuple[Any, Any]:
    """The two fields of ``struct`` from a JSON object, as serde's derived ``Deserialize``
    reads them (unknown members ignored, a known one twice refused); an absent field is
    ``_MISSING``. (serde would also read the struct from an array of its fields, ``[header,
    body]``: the emulator refuses that, which no client sends, and its schema would have to
    admit.)"""
    name, fields = struct
    if not isinstance(value, dict):
        raise JsonError(f"invalid type: {_kind(value)}, expected struct {name}")
    for field in fields:
        if field in getattr(value, "duplicates", ()):
            raise JsonError(f"duplicate field `{field}`")
    return value.get(fields[0], _MISSING), value.get(fields[1], _MISSING)


class Envelope:
    """An exec request's envelope, read as NVCF's ``InvokeFunctionRequest``."""

    def __init__(self, data: bytes) -> None:
        doc = parse(data)
        header, body = _fields(doc, _REQUEST)
        if body is _MISSING:
            raise JsonError("missing field `requestBody`")
        #: What the container gets: ``requestBody`` written again, whatever it is (``null`` too).
        self.body = dumps(body).encode("utf-8")
        self.asset_references: list[str] = []
        self.poll_seconds: int | None = None
        if header is _MISSING or header is None:
            return
        assets, poll = _fields(header, _HEADER)
        if assets is not _MISSING and assets is not None:
            if not isinstance(assets, list):
                raise JsonError(f"invalid type: {_kind(assets)}, expected a sequence")
            for item in assets:
                if not isinstance(item, str):
                    raise JsonError(f"invalid type: {_kind(item)}, expected a string")
            self.asset_references = assets
        if poll is not _MISSING and poll is not None:
            if isinstance(poll, float) and poll.is_integer() and _I64_MIN <= poll <= _I64_MAX:
                # serde refuses ``30.0`` ("invalid type: floating point"); the emulator takes a
                # whole number however it is spelled, as JSON Schema (its OpenAPI document, and
                # the fuzzer reading it) counts ``30.0`` an integer.
                poll = int(poll)
            if isinstance(poll, bool) or not isinstance(poll, int):
                raise JsonError(f"invalid type: {_kind(poll)}, expected i64")
            if poll > _I64_MAX:
                raise JsonError(f"invalid value: integer `{poll}`, expected i64")
            self.poll_seconds = poll


def _asset_ids(references: list[str]) -> list[str]:
    """The envelope's asset ids, each one whole UUID (no trimming, no empty items, unlike the
    header's list). NVCF answers a bad one with a 500 (its ``uuid::Error`` becomes an
    ``AppError``); the emulator answers 400, as for the header: it is the caller's mistake, and a
    500 would send retrying clients round again."""
    ids = []
    for reference in references:
        try:
            ids.append(invocation_id(reference))
        except InvalidUrl as bad:
            raise BadRequest(f"inputAssetReferences: '{shown(reference)}': {bad}") from None
    return ids


def _read_envelope(request: Request) -> Envelope:
    """The body, at most axum's default 2 MiB, as an envelope; NVCF's 400s otherwise."""
    too_large = BadRequest("failed to collect request body: length limit exceeded")
    length = request.content_length
    if length is not None and length > MAX_ENVELOPE_BYTES:
        raise too_large
    data = read_upto(request, MAX_ENVELOPE_BYTES)
    if len(data) > MAX_ENVELOPE_BYTES:
        raise too_large
    try:
        return Envelope(data)
    except JsonError as bad:
        raise BadRequest(str(bad)) from None


# -- the answer ------------------------------------------------------------------------------------


def _body_of(request: Request, answer: Response) -> bytes:
    """pexec's answer's body, whole (a stream is read to its end, as NVCF collects it)."""
    if answer.is_sequence:
        return answer.get_data()
    try:
        return b"".join(answer.iter_encoded())
    finally:
        answer.close()
        request.environ.pop(STREAMED_KEY, None)


def _request_id(answer: Response) -> str:
    """``nvcf-reqid`` of pexec's answer; the nil UUID when it has none (NVCF's default)."""
    try:
        return invocation_id(answer.headers.get("NVCF-REQID", ""))
    except InvalidUrl:
        return NIL_UUID


def wrap(request: Request, answer: Response) -> Response:
    """pexec's answer as exec's envelope (``map_passthrough_response_to_wrapped_response``)."""
    status = answer.status_code
    req_id = _request_id(answer)
    state = _STATES.get(status, "errored")
    members: list[tuple[str, str]] = [("reqId", dumps(req_id)), ("status", dumps(state))]
    if status == 302:
        members.append(("responseReference", dumps(answer.headers.get("Location", ""))))
    if status in (200, 302):
        members.append(("percentComplete", "100"))
    if status not in (200, 202, 302):
        members.append(("errorCode", str(status)))
    if status == 200:
        try:
            response = dumps(parse(_body_of(request, answer)))
        except JsonError as bad:
            return problem(
                request,
                500,
                "Internal Server Error",
                f"invalid json in response body for request_id: {req_id}; cause: {bad}",
                request_id=req_id,  # the call log and the problem name the request
            )
        members.append(("response", response))
    else:
        answer.close()
    body = "{" + ",".join(f'"{name}":{value}' for name, value in members) + "}"
    envelope = EnvelopeResponse(
        body.encode("utf-8"), status=200 if status == 302 else status, mimetype="application/json"
    )
    envelope.request_id = "" if req_id == NIL_UUID else req_id
    return envelope


# -- the routes ------------------------------------------------------------------------------------


def _guarded(handler: Callable[[], Response]) -> Response:
    try:
        return handler()
    except pexec.AuthRefused as refused:
        return refused.response()
    except InvalidUrl as bad:
        return bad.response()


def invoke(
    emu: Emulator, request: Request, function_id: str, version_id: str | None = None
) -> Response:
    """``POST /v2/nvcf/exec/functions/{fid}[/versions/{vid}]``. NVCF's order: auth, the path's
    ids, the envelope, its asset ids, then pexec's (the function, the poll window, the assets)."""

    def run() -> Response:
        account = pexec.invocation_account(emu, request)
        fid = invocation_id(function_id)
        vid = None if version_id is None else invocation_id(version_id)
        envelope = _read_envelope(request)
        asset_ids = _asset_ids(envelope.asset_references)
        poll = envelope.poll_seconds

        def seconds() -> int:
            if poll is None:
                return emu.config.poll_seconds
            return pexec.parse_poll_seconds(emu, str(poll), "pollDurationSeconds")

        answer = pexec.run_invocation(
            emu,
            request,
            account,
            fid,
            vid,
            asset_ids,
            headers=[("Content-Type", "application/json")],
            poll=seconds,
            read_body=lambda: pexec.within_request_limit(emu, envelope.body),
            streaming=False,
        )
        return wrap(request, answer)

    return _guarded(run)


def invoke_version(emu: Emulator, request: Request, function_id: str, version_id: str) -> Response:
    return invoke(emu, request, function_id, version_id)


def status(emu: Emulator, request: Request, request_id: str) -> Response:
    """``GET /v2/nvcf/exec/status/{reqId}``: pexec's status poll, wrapped. NVCF polls with an
    empty header map: the default window (``NVCF-POLL-SECONDS`` is not read), and a container
    asked again gets no client header. An unknown request is pexec's 404, wrapped too."""

    def run() -> Response:
        account = pexec.invocation_account(emu, request)
        rid = invocation_id(request_id)
        try:
            answer = pexec.poll_invocation(emu, request, account, rid, emu.config.poll_seconds, [])
        except NotFound as gone:
            answer = nvcf_error(request, gone)
        return wrap(request, answer)

    return _guarded(run)


ROUTES: list[Route] = [
    ("/v2/nvcf/exec/functions/<function_id>", ["POST"], invoke),
    ("/v2/nvcf/exec/functions/<function_id>/versions/<version_id>", ["POST"], invoke_version),
    ("/v2/nvcf/exec/status/<request_id>", ["GET"], status),
    ("/v2/nvcf/exec/functions/<function_id>", ["OPTIONS"], pexec.preflight_invoke),
    (
        "/v2/nvcf/exec/functions/<function_id>/versions/<version_id>",
        ["OPTIONS"],
        pexec.preflight_invoke,
    ),
    ("/v2/nvcf/exec/status/<request_id>", ["OPTIONS"], pexec.preflight_status),
]
