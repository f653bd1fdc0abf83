"""The Go worker's JSON (``nvcf_emulator.worker.gojson``): what ``encoding/json`` (and
goccy/go-json, which NVCF's worker uses) writes for a ``map[string]any`` it decoded."""

from __future__ import annotations

from typing import Any

import pytest

from nvcf_emulator.worker import gojson


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"b": 1, "a": 2}', '{"a":2,"b":1}'),  # map keys sorted
        ('{"n": 1.0}', '{"n":1}'),  # a float64 with no fraction
        ('{"n": 1.5}', '{"n":1.5}'),
        ('{"n": -0.0}', '{"n":-0}'),
        ('{"n": 0.000001}', '{"n":0.000001}'),  # 1e-6 is still fixed notation
        ('{"n": 0.0000001}', '{"n":1e-7}'),  # below it: Go's "e-7", not "e-07"
        ('{"n": 1e20}', '{"n":100000000000000000000}'),
        ('{"n": 1e21}', '{"n":1e+21}'),
        ('{"n": 12345678901234567890}', '{"n":12345678901234567000}'),  # float64 digits
        (
            '{"s": "<a href=\\"x\\">&</a>"}',
            '{"s":"\\u003ca href=\\"x\\"\\u003e\\u0026\\u003c/a\\u003e"}',
        ),
        ('{"s": "tab\\tline\\nbell\\u0007"}', '{"s":"tab\\tline\\nbell\\u0007"}'),
        ('{"s": "猫 \\u2028"}', '{"s":"猫 \\u2028"}'),  # UTF-8 as is; U+2028 escaped
        (
            '{"l": [true, false, null, {"z": [], "y": {}}]}',
            '{"l":[true,false,null,{"y":{},"z":[]}]}',
        ),
    ],
)
def test_dumps_writes_what_go_writes(text: str, expected: str) -> None:
    assert gojson.dumps(gojson.loads(text)) == expected


@pytest.mark.parametrize("text", ['{"n": NaN}', '{"n": Infinity}', '{"n": -Infinity}'])
def test_nan_and_infinity_are_not_json_to_go(text: str) -> None:
    with pytest.raises(ValueError):
        gojson.loads(text)


def test_what_json_cannot_hold_is_refused_by_name() -> None:
    value: Any = {"x": object()}
    with pytest.raises(TypeError, match="object"):
        gojson.dumps(value)
