"""encode_ndjson (orjson, stdlib fallback) against json.dumps: same value back, same errors."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.errors import RecordError
from tasks.formats import encode_ndjson


def _stdlib(value: Any) -> tuple[str, Any]:
    """What encode_ndjson wrote before orjson: json.dumps, compact, not ASCII-only."""
    try:
        return "ok", json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        return "error", f"cannot encode as JSON: {exc}"


def _ours(value: Any) -> tuple[str, Any]:
    try:
        return "ok", encode_ndjson(value)
    except RecordError as exc:
        return "error", exc.message


def _reject(token: str) -> Any:
    raise AssertionError(f"not JSON: {token}")


def _canonical(value: Any, *, nan_as_null: bool = False) -> Any:
    """Strictly comparable: 1, 1.0 and True differ, so do key orders and -0.0. With
    `nan_as_null`, NaN and ±Infinity read as null (what orjson writes for them)."""
    if isinstance(value, dict):
        return ("dict", [(k, _canonical(v, nan_as_null=nan_as_null)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_canonical(v, nan_as_null=nan_as_null) for v in value])
    if nan_as_null and isinstance(value, float) and not math.isfinite(value):
        return ("NoneType", "None")
    return (type(value).__name__, repr(value))


def _has_float(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_float(k) or _has_float(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_float(v) for v in value)
    return isinstance(value, float)


scalars = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.integers(-(2**70), 2**70)
           | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
           | st.sampled_from([1e16, 1e-7, 1e-5, 1e22, 5e-324, -0.0, 0.1, 123456789.0])
           | st.text()
           | st.text(alphabet="a\u00e9\u2028\x00\x1f\x7f\"\\\U0001f600\ud800\udfff", max_size=5))
keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats()
values = st.recursive(
    scalars | st.sets(st.integers(), max_size=2),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12)


@given(values)
def test_ndjson_parses_back_to_what_json_dumps_wrote(value: Any) -> None:
    """Valid JSON (no NaN tokens) that reads back as json.dumps's output does (NaN/Infinity as
    null), the very bytes when no float is involved, the same error where json.dumps fails
    (sets, lone surrogates, which fail to encode as UTF-8), and the same bytes every time."""
    expected, ours = _stdlib(value), _ours(value)
    assert ours[0] == expected[0]
    if expected[0] == "error":
        assert ours == expected
        return
    line = ours[1]
    assert b"\n" not in line and line == encode_ndjson(value)
    back = json.loads(line, parse_constant=_reject)
    assert _canonical(back) == _canonical(json.loads(expected[1]), nan_as_null=True)
    if not _has_float(value):
        assert line == expected[1]


@given(st.recursive(st.text(min_size=1), lambda inner: st.lists(inner, min_size=1, max_size=3)
                    | st.dictionaries(st.text(), inner, min_size=1, max_size=3), max_leaves=6),
       st.sampled_from(["\ud800", "\udc00", "a\udfff"]), st.booleans())
def test_lone_surrogates_are_record_errors(value: Any, surrogate: str, as_key: bool) -> None:
    record = {surrogate: value} if as_key else [value, surrogate]
    with pytest.raises(RecordError, match="cannot encode as JSON"):
        encode_ndjson(record)


class _Text(str):
    pass


@pytest.mark.parametrize(("value", "line"), [
    ({"a": "é", "n": None, "b": [True, 1, -0.0]}, '{"a":"é","n":null,"b":[true,1,-0.0]}'),
    ({1: 2, False: 3, None: 4}, '{"1":2,"false":3,"null":4}'),  # keys: the stdlib path
    ({"big": 2**64}, '{"big":18446744073709551616}'),  # beyond 64 bits: the stdlib path
    (_Text("x"), '"x"'),  # a str subclass: the stdlib path, its str value
    ([1e-7, 1e16], "[1e-7,1e+16]"),  # json.dumps: [1e-07,1e+16]
    ([math.nan, math.inf, -math.inf], "[null,null,null]"),  # json.dumps: [NaN,Infinity,-Infinity]
    ({1: math.nan, math.inf: [-math.inf], 2: "NaN"},  # the stdlib path: null too
     '{"1":null,"Infinity":[null],"2":"NaN"}'),
    ("a\u2028\x1f", '"a\u2028\\u001f"'),
])
def test_ndjson_examples(value: Any, line: str) -> None:
    assert encode_ndjson(value) == line.encode()


def test_deep_nesting_takes_the_stdlib_path() -> None:
    value: Any = 1
    for _ in range(300):  # orjson stops at 254 levels
        value = [value]
    assert encode_ndjson(value) == b"[" * 300 + b"1" + b"]" * 300
