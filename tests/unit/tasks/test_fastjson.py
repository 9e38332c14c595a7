"""The JSON fast path against the general path: the same lines, dead letters and drops, byte for
byte, on records built to hit every case where msgspec and json.loads/orjson could part ways."""

from __future__ import annotations

import json
from typing import Any

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.spec import Format, Transform
from tasks.transforms.batch import Compiled, Plan, Rows, TransformOutput
from tasks.transforms.fastjson import DROPPED, FALLBACK, compile_fast_line, struct_predicate

from .test_transforms import json_values, number_texts, string_texts


def _plan(where: str | None, select: str, **extra: Any) -> Plan:
    spec = {"parse": {"format": "json"}, "select": select, **extra}
    if where is not None:
        spec["where"] = where
    return Plan(Transform.model_validate(spec).model_dump_json(),
                Format.model_validate({"type": "ndjson"}).model_dump_json(), "t", 3)


def _both(plan: Plan, values: list[bytes | None]) -> tuple[TransformOutput, TransformOutput]:
    rows = Rows(list(range(len(values))), [1_000 + i for i in range(len(values))], values)
    fast, general = Compiled(plan), Compiled(plan)
    assert fast.fast is not None
    general.fast = None
    return fast.run(rows), general.run(rows)


def _same(a: TransformOutput, b: TransformOutput) -> None:
    assert a.records.offsets == b.records.offsets
    assert a.records.timestamps == b.records.timestamps
    assert a.records.values == b.records.values  # bytes: identical lines
    assert a.dead == b.dead and a.dropped == b.dropped and a.in_bytes == b.in_bytes


KEYS = ["a", "b", "c", "user-agent", ""]
# Value texts where the parsers differ most: number spellings (big ints, 1e16, 1e400, -0),
# string escapes (surrogates, control characters), non-ASCII, NaN tokens, and whole JSON values.
value_texts = (number_texts | string_texts
               | json_values.map(lambda v: json.dumps(v, ensure_ascii=False))
               | json_values.map(json.dumps)
               | st.sampled_from(["NaN", "-Infinity", '"\xff"', '"é"', "[1,", "1e16", "-1e16",
                                  "9999999999999999.0", "1e15", "[" * 600 + "]" * 600]))
key_texts = (st.sampled_from(KEYS).map(json.dumps)
             | st.sampled_from(['"\\u0061"', '"\\u0062"', '"user\\u002dagent"', '"a\\ud800"']))


@st.composite
def records(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return None  # a tombstone
    if kind == 1:
        return draw(st.binary(max_size=20))
    pairs = draw(st.lists(st.tuples(key_texts, value_texts), max_size=6))
    pad = draw(st.sampled_from(["", " ", "\n", "\ufeff"]))
    text = pad + "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
    if kind == 2:
        text = text.replace("{", "[", 1)[:-1] + "]"  # not an object
    return text.encode("utf-8", "surrogatepass")


WHERES = [None, "`true`", "a < `5`", "`5` <= a", "a == 'x'", "a != null", "!b", "a && b || c",
          "a.x == `1`", "b == `true`", "b == `0`", "c > 'm'", "{k: a}", "[a, b]", "a == b",
          '"user-agent" == \'curl\'',
          # and/or/not of comparisons: tested on the struct (fastjson.struct_predicate)
          "a < `5` && c > 'm'", "!(a == 'x') || b != `0`", "!(a >= `1`)", "`true` == b",
          "a < `5` || b == `true` && c != 'x'", "a <= `1.5` && !(c < `-1`)", "a < `[1]`",
          "!(a < `5` || b)"]
SELECTS = ["{x: a, y: b}", "[a, c]", "{x: a, x: b, z: c}", '{ua: "user-agent", e: ""}', "{a: a}",
           "[c]"]


@settings(max_examples=400)
@given(st.sampled_from(WHERES), st.sampled_from(SELECTS), st.lists(records(), max_size=8))
def test_fast_path_equals_the_general_path(where: str | None, select: str,
                                           values: list[bytes | None]) -> None:
    _same(*_both(_plan(where, select), values))


@given(st.sampled_from(SELECTS), st.lists(st.fixed_dictionaries(
    {}, optional={k: json_values for k in KEYS}), max_size=6), st.booleans())
def test_fast_path_equals_the_general_path_on_plain_records(
        select: str, objects: list[dict[str, Any]], ascii_only: bool) -> None:
    values: list[bytes | None] = [json.dumps(o, ensure_ascii=ascii_only).encode()
                                  for o in objects]
    _same(*_both(_plan("a != `3`", select), values))


def test_sampling_and_tombstones_are_the_general_paths() -> None:
    values: list[bytes | None] = [b'{"a": 1, "b": 2}', None] * 50
    _same(*_both(_plan("a < `5`", "{x: a}", sample=0.5), values))


@pytest.mark.parametrize(("where", "on_struct"), [
    ("a < `5`", True), ("`5` <= a", True), ("a < `5` && c > 'm'", True),
    ("!(a == 'x') || b != `0`", True), ("!(a < `5` || b)", False), ("!b", False),
    ("a == b", False), ("a.x == `1`", False), ("`true`", False)])
def test_which_wheres_are_tested_on_the_struct(where: str, on_struct: bool) -> None:
    node = dict(jmespath.compile(where).parsed)
    assert (struct_predicate(node, {"a": "f0", "b": "f1", "c": "f2"}) is not None) is on_struct


def test_the_answers_of_the_fast_line() -> None:
    line = compile_fast_line(Transform.model_validate(
        {"parse": {"format": "json"}, "where": "status < `500`",
         "select": "{s: status, p: path, u: \"user-agent\"}"}), Format())
    assert line is not None
    assert line(b'{"status": 200, "path": "/x", "skipped": [1, {"y": null}]}') == \
        b'{"s":200,"p":"/x","u":null}'
    assert line(b'{"status": 503}') is DROPPED
    assert line(b'{"status": 404, "path": 1e15}') == b'{"s":404,"p":1000000000000000.0,"u":null}'
    for fallback in (b'{"status": "200"}',  # str < int raises: the general path dead-letters
                     b'{"status": 200, "path": "\xc3\xa9"}', b'{"status": 1e16}',
                     b'{"status": NaN}', b"[1]", b"not json", b'{"status": 1e400}'):
        assert line(fallback) is FALLBACK, fallback


@pytest.mark.parametrize(("spec", "fmt"), [
    ({"parse": {"format": "json"}}, {}),  # no select: the whole record
    ({"parse": {"format": "json"}, "select": "{p: request.path}"}, {}),  # not a top-level field
    ({"parse": {"format": "json"}, "select": "@"}, {}),
    ({"parse": {"format": "json"}, "select": "{a: a}", "where": "length(@) > `1`"}, {}),
    ({"parse": {"format": "json"}, "select": "{a: a}", "where": "b[0] == `1`"}, {}),
    ({"parse": {"format": "json"}, "select": "{a: a}",
      "add_fields": {"source": True}}, {}),
    ({"parse": {"format": "raw"}, "select": "{a: a}"}, {}),
    ({"parse": {"format": "json"}, "select": "{a: a}"}, {"type": "csv", "columns": ["a"]}),
])
def test_where_the_fast_path_does_not_apply(spec: dict[str, Any], fmt: dict[str, Any]) -> None:
    assert compile_fast_line(Transform.model_validate(spec), Format.model_validate(fmt)) is None
