"""JSON as NVCF's Go worker reads and writes it (``encoding/json`` rules, which the
``goccy/go-json`` library it uses follows): every number is a float64, a map's keys are
written sorted, ``<``, ``>`` and ``&`` are escaped, and floats are written Go's way.

Used for the progress file: the worker decodes its ``partialResponse`` into a
``map[string]any`` and encodes it again as the 202's body.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

#: Characters Go escapes in strings besides ``"`` and ``\\`` (HTML-safe output).
_ESCAPES = {
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
    '"': '\\"',
    "\\": "\\\\",
}


def _reject(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON")


def loads(data: bytes | str) -> Any:
    """``data`` decoded as Go decodes into ``any``: numbers become floats (a large integer
    loses what a float64 cannot hold); ``NaN`` and ``Infinity`` are not JSON (ValueError)."""
    return json.loads(data, parse_int=float, parse_float=float, parse_constant=_reject)


def _number(value: float) -> str:
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if 1e-6 <= abs(value) < 1e21:
        text = format(Decimal(repr(value)), "f")  # the shortest digits, in fixed notation
        return text.rstrip("0").rstrip(".") if "." in text else text
    text = repr(value)  # "1e+21", "1.5e-07": Go writes "e-7" for "e-07"
    mantissa, _, exponent = text.partition("e")
    sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
    return f"{mantissa}e{sign}{digits.zfill(2) if sign == '+' else digits}"


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        escaped = _ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        elif "\ud800" <= ch <= "\udfff":  # a lone surrogate: Go holds U+FFFD instead
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def dumps(value: Any) -> str:
    """``value`` (from :func:`loads`) encoded as Go's ``json.Marshal`` encodes it."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return _number(float(value))
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict):
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(f"{_string(k)}:{dumps(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")
