"""``config.pbtxt``: a small protobuf text-format reader for Triton model configurations.

It reads the text format (``key: value``, ``key { ... }``, ``key: [a, b]``, ``key [ {...} ]``,
``# comments``, quoted strings with escapes, enums, numbers, booleans) into the dict Triton hands
a Python model as ``json.loads(args["model_config"])``: field names as in ``model_config.proto``,
repeated fields as lists, ``parameters`` as ``{key: {"string_value": ...}}``, integers as ints.

Which fields are repeated comes from the list :data:`REPEATED` (text format does not say); a
field given twice is a list either way. Defaults Triton fills in that models commonly read are
added by :func:`model_config`: ``max_batch_size`` 0, ``input``/``output`` lists, each tensor's
``optional``/``is_shape_tensor`` false, one ``instance_group`` of ``KIND_CPU``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

#: Fields of ``ModelConfig`` (and nested messages) that are ``repeated`` in model_config.proto.
REPEATED = frozenset(
    {
        "input",
        "output",
        "dims",
        "shape",
        "instance_group",
        "gpus",
        "preferred_batch_size",
        "batch_input",
        "batch_output",
        "model_warmup",
        "source_input",
        "label_filename",
        "control_input",
        "control",
        "state",
        "step",
        "secondary_devices",
        "versions",
        "int32_false_true",
        "fp32_false_true",
        "bool_false_true",
        "host_policy",
    }
)

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}\[\]:,;<>])
    """,
    re.VERBOSE,
)

_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}


class ConfigError(ValueError):
    """``config.pbtxt`` could not be read; the message names the file and line."""


class _Tokens:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.items: list[tuple[str, str, int]] = []
        pos, line = 0, 1
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ConfigError(f"{source}:{line}: unexpected character {text[pos]!r}")
            kind = m.lastgroup or ""
            value = m.group()
            if kind != "ws":
                self.items.append((kind, value, line))
            line += value.count("\n")
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def next(self) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise ConfigError(f"{self.source}: unexpected end of file")
        self.i += 1
        return tok

    def error(self, message: str) -> ConfigError:
        tok = self.peek()
        line = tok[2] if tok else (self.items[-1][2] if self.items else 1)
        return ConfigError(f"{self.source}:{line}: {message}")

    def accept(self, punct: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "punct" and tok[1] == punct:
            self.i += 1
            return True
        return False


def _unquote(token: str) -> str:
    body = token[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt in "01234567":
                digits = re.match(r"[0-7]{1,3}", body[i + 1 :])
                assert digits is not None
                out.append(chr(int(digits.group(), 8)))
                i += 1 + len(digits.group())
                continue
            if nxt == "x":
                digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2 :])
                if digits:
                    out.append(chr(int(digits.group(), 16)))
                    i += 2 + len(digits.group())
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def _scalar(tokens: _Tokens) -> Any:
    kind, value, _ = tokens.next()
    if kind == "string":
        text = _unquote(value)
        while (tok := tokens.peek()) is not None and tok[0] == "string":  # "a" "b" concatenates
            text += _unquote(tokens.next()[1])
        return text
    if kind == "number":
        number = value.rstrip("fF") if not value.lower().startswith(("0x", "-0x", "+0x")) else value
        if re.fullmatch(r"[-+]?\d+", number):
            return int(number)
        if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", number):
            return int(number, 16)
        return float(number)
    if kind == "ident":
        if value in ("true", "True", "t"):
            return True
        if value in ("false", "False", "f"):
            return False
        return value  # an enum value, e.g. TYPE_FP32 or KIND_GPU
    tokens.i -= 1
    raise tokens.error(f"expected a value, got {value!r}")


def _message(tokens: _Tokens, close: str | None) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = []
    while True:
        tok = tokens.peek()
        if tok is None:
            if close is not None:
                raise tokens.error(f"missing {close!r}")
            return fields
        if close is not None and tok[0] == "punct" and tok[1] == close:
            tokens.next()
            return fields
        kind, name, _ = tokens.next()
        if kind != "ident":
            tokens.i -= 1
            raise tokens.error(f"expected a field name, got {name!r}")
        colon = tokens.accept(":")
        if tokens.accept("["):
            items: list[Any] = []
            if not tokens.accept("]"):
                while True:
                    items.append(_value(tokens))
                    if tokens.accept("]"):
                        break
                    if not tokens.accept(","):
                        raise tokens.error("expected ',' or ']'")
            fields.append((name, items))
        elif (t := tokens.peek()) is not None and t[0] == "punct" and t[1] in "{<":
            fields.append((name, _value(tokens)))
        elif colon:
            fields.append((name, _scalar(tokens)))
        else:
            raise tokens.error(f"expected ':' after {name!r}")
        if not tokens.accept(","):
            tokens.accept(";")


def _value(tokens: _Tokens) -> Any:
    if tokens.accept("{"):
        return _to_dict(_message(tokens, "}"))
    if tokens.accept("<"):
        return _to_dict(_message(tokens, ">"))
    return _scalar(tokens)


def _to_dict(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in fields:
        if name == "parameters" and isinstance(value, dict) and "key" in value:
            # map<string, ModelParameter>: entries are {key: "...", value: {string_value: ...}}
            params = out.setdefault("parameters", {})
            params[str(value["key"])] = value.get("value", {})
            continue
        if name == "parameters" and isinstance(value, list):
            params = out.setdefault("parameters", {})
            for entry in value:
                params[str(entry["key"])] = entry.get("value", {})
            continue
        repeated = name in REPEATED
        if isinstance(value, list):
            out.setdefault(name, []).extend(value)
        elif repeated:
            out.setdefault(name, []).append(value)
        elif name in out:  # a singular field given twice: keep both, as a list
            prev = out[name]
            out[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[name] = value
    return out


def parse_pbtxt(text: str, source: str = "config.pbtxt") -> dict[str, Any]:
    """Parse protobuf text format into a dict (see the module docstring)."""
    return _to_dict(_message(_Tokens(text, source), None))


def _tensor_defaults(tensor: dict[str, Any]) -> dict[str, Any]:
    tensor.setdefault("data_type", "TYPE_INVALID")
    tensor.setdefault("dims", [])
    tensor.setdefault("optional", False)
    tensor.setdefault("is_shape_tensor", False)
    return tensor


def model_config(model_dir: Path) -> dict[str, Any]:
    """``<model_dir>/config.pbtxt`` as Triton's JSON model config, with the common defaults.

    Raises :class:`ConfigError` for a missing or unreadable file, or a ``name`` that is not the
    directory's (Triton refuses to load such a model).
    """
    path = model_dir / "config.pbtxt"
    if not path.is_file():
        raise ConfigError(f"{path}: no config.pbtxt (the emulator does not auto-complete configs)")
    config = parse_pbtxt(path.read_text(encoding="utf-8"), str(path))
    name = config.setdefault("name", model_dir.name)
    if name != model_dir.name:
        raise ConfigError(
            f"{path}: unexpected directory name '{model_dir.name}' for model '{name}', "
            "directory name must equal model name"
        )
    config.setdefault("max_batch_size", 0)
    config["input"] = [_tensor_defaults(t) for t in config.get("input", [])]
    config["output"] = [_tensor_defaults(t) for t in config.get("output", [])]
    config.setdefault("parameters", {})
    config.setdefault(
        "instance_group",
        [{"name": f"{name}_0", "kind": "KIND_CPU", "count": 1, "gpus": []}],
    )
    return config
