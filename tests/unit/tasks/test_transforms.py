"""Parsers, JMESPath closures (checked against jmespath itself), sampling and batch transforms."""

from __future__ import annotations

import json
from typing import Any

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.errors import RecordError
from tasks.spec import Parse, parse_job_spec
from tasks.transforms.batch import Plan, Rows, sample_key, transform_batch
from tasks.transforms.jmes import compile_expression, truthy
from tasks.transforms.parsers import make_parser, parse_json, parse_nginx, regex_parser

NGINX = (b'203.0.113.9 - alice [22/Nov/2026:07:01:02 +0000] "GET /a/b?x=1 HTTP/1.1" 404 512 '
         b'"https://ref.example/" "curl/8.5"')


def test_nginx_combined_line_parses_into_typed_fields() -> None:
    rec = parse_nginx(NGINX)
    assert rec["remote_addr"] == "203.0.113.9" and rec["remote_user"] == "alice"
    assert (rec["method"], rec["path"], rec["protocol"]) == ("GET", "/a/b?x=1", "HTTP/1.1")
    assert rec["status"] == 404 and rec["body_bytes_sent"] == 512
    assert rec["http_user_agent"] == "curl/8.5"


def test_nginx_dash_bytes_and_garbage() -> None:
    line = NGINX.replace(b" 512 ", b" - ")
    assert parse_nginx(line)["body_bytes_sent"] == 0
    with pytest.raises(RecordError, match="nginx"):
        parse_nginx(b"hello")


def test_json_and_regex_parsers_report_reasons() -> None:
    assert parse_json(b'{"a": 1}') == {"a": 1}
    with pytest.raises(RecordError, match="invalid JSON"):
        parse_json(b"{nope")
    with pytest.raises(RecordError):
        parse_json(b"\xff\xfe")
    parse = regex_parser(r"(?P<level>[A-Z]+) (?P<msg>.*)")
    assert parse(b"WARN disk full") == {"level": "WARN", "msg": "disk full"}
    with pytest.raises(RecordError, match="does not match"):
        parse(b"lowercase")


def test_raw_parser_is_bytes_or_an_object_when_fields_are_needed() -> None:
    assert make_parser(Parse(format="raw"), objects=False)(b"x") == b"x"
    assert make_parser(Parse(format="raw"), objects=True)(b"x") == {"value": "x"}


EXPRESSIONS = [
    "a", "a.b", "a == `1`", "a != b", "a > `2`", "a >= b", "a < `2.5`", "a <= 'm'",
    "a && b", "a || b", "!a", "!(a == b)", "{x: a, y: b.c}", "[a, b]", "@", "`true`",
    "a == `true`", "b == `0`", "a > 'a'",
]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "a", "z"]),
                   st.just([]), st.just({}), st.fixed_dictionaries({"c": st.integers(0, 2)}))


@given(st.fixed_dictionaries({"a": VALUES, "b": VALUES}))
def test_closures_agree_with_jmespath(record: dict[str, Any]) -> None:
    for text in EXPRESSIONS:
        try:
            expected = jmespath.search(text, record)
        except TypeError:
            continue  # jmespath itself fails (e.g. 'a' > 1): the record is dead-lettered
        assert compile_expression(text)(record) == expected, text


# The specialised shapes (plain-field multi-selects, field-vs-literal comparisons, field paths)
# against jmespath, on records with missing fields, bools next to 0/1, numeric strings, None,
# nested objects, and on non-object records.
FIELDS = ["a", "b", "c", "a.b", "a.b.c", "b.a"]
LITERALS = ["`0`", "`1`", "`0.0`", "`1.0`", "`2`", "`-1.5`", "`true`", "`false`", "`null`",
            "'a'", "'1'", "'0'", "`\"\"`", "`[]`", "`{}`", "`[1]`", "`{\"b\": 1}`"]
OPS = ["==", "!=", "<", "<=", ">", ">="]
leaf_values: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, 1, 0.0, 1.0, -0.0, 2, -1.5]), st.integers(),
    st.floats(allow_nan=False), st.sampled_from(["", "a", "0", "1", "b"]), st.just([]),
    st.just([1]))
field_values = st.recursive(
    leaf_values,
    lambda inner: st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    max_leaves=6)
names = st.sampled_from(["a", "b", "c", "d"])
records = (st.dictionaries(names, leaf_values, max_size=4)  # flat, the usual record
           | st.dictionaries(names, field_values, max_size=4) | leaf_values)
comparisons = st.builds(lambda f, op, lit, flip: f"{lit} {op} {f}" if flip else f"{f} {op} {lit}",
                        st.sampled_from(FIELDS), st.sampled_from(OPS), st.sampled_from(LITERALS),
                        st.booleans())
selects = st.one_of(
    st.lists(st.tuples(st.sampled_from(["x", "y", "z"]), st.sampled_from(["a", "b", "c", "d"])),
             min_size=1, max_size=4).map(
        lambda pairs: "{" + ", ".join(f"{k}: {f}" for k, f in pairs) + "}"),
    st.lists(st.sampled_from(["a", "b", "d"]), min_size=1, max_size=3).map(
        lambda names: "[" + ", ".join(names) + "]"),
    st.sampled_from(FIELDS),
)
expressions = st.one_of(
    comparisons, selects,
    st.builds(lambda x, op, y: f"{x} {op} {y}", comparisons, st.sampled_from(["&&", "||"]),
              comparisons),
    comparisons.map(lambda c: f"!({c})"),
)


def _outcome(func: Any, *args: Any) -> tuple[str, str]:
    try:
        return "ok", repr(func(*args))  # repr: True and 1, 0 and 0.0 differ
    except TypeError as exc:  # e.g. 'a' < 1: the record is dead-lettered
        return "error", str(exc)


@settings(max_examples=300)
@given(expressions, records)
def test_specialised_closures_agree_with_jmespath(text: str, record: Any) -> None:
    assert _outcome(compile_expression(text), record) == _outcome(jmespath.search, text, record)


# Every comparison shape at once on each record: drawn one by one, the few that matter (say
# `1` < a with a number a) would be too rare.
ALL_COMPARISONS = [
    (text, compile_expression(text), jmespath.compile(text))
    for f in FIELDS for op in OPS for lit in LITERALS
    for text in (f"{f} {op} {lit}", f"{lit} {op} {f}")]


@given(records)
def test_every_field_literal_comparison_agrees_with_jmespath(record: Any) -> None:
    for text, ours, theirs in ALL_COMPARISONS:
        assert _outcome(ours, record) == _outcome(theirs.search, record), text


def test_unsupported_nodes_fall_back_to_jmespath() -> None:
    expr = compile_expression("items[?x > `1`].x | length(@)")
    assert expr({"items": [{"x": 1}, {"x": 2}, {"x": 3}]}) == 2


def test_jmespath_truth() -> None:
    assert truthy(0) and truthy("a") and truthy([0])
    falsy: list[Any] = [None, False, "", [], {}]
    assert not any(truthy(v) for v in falsy)


def plan(**spec: Any) -> Plan:
    job = parse_job_spec({"id": "j", "source": {"topic": "t"},
                          "sink": {"type": "file", "directory": "/tmp"}, **spec})
    return Plan.of(job, 3)


def rows(values: list[bytes | None]) -> Rows:
    return Rows([100 + i for i in range(len(values))], [1_000 + i for i in range(len(values))],
                list(values))


def test_raw_ndjson_is_a_passthrough() -> None:
    batch = rows([b'{"a":1}', b"plain"])
    out = transform_batch(plan(), batch)
    assert out.records is batch  # nothing copied
    assert out.records.values == [b'{"a":1}', b"plain"]
    assert out.in_bytes == 12
    with_tombstone = transform_batch(plan(), rows([b"x", None]))
    assert with_tombstone.records.values == [b"x"] and len(with_tombstone.dead) == 1


def test_filter_project_add_fields_and_dead_letters() -> None:
    p = plan(transform={"parse": {"format": "json"}, "where": "status >= `500`",
                        "select": "{s: status}",
                        "add_fields": {"source": True, "ingest_time": True,
                                       "static": {"env": "prod"}}})
    out = transform_batch(p, rows([b'{"status": 500}', b'{"status": 200}', b"{bad", None]))
    assert out.dropped == 1
    (rec,) = [json.loads(v) for v in out.records.values]  # type: ignore[arg-type]
    assert rec["s"] == 500 and rec["env"] == "prod"
    assert (rec["_topic"], rec["_partition"], rec["_offset"], rec["_timestamp"]) == ("t", 3, 100,
                                                                                     1000)
    assert rec["_ingest_time"].endswith("Z")
    assert [(d.offset, d.reason.split(":")[0]) for d in out.dead] == [
        (102, "invalid JSON"), (103, "null value (tombstone)")]
    assert out.in_bytes == 34


def test_csv_of_a_non_object_is_dead_lettered() -> None:
    p = plan(transform={"parse": {"format": "json"}}, format={"type": "csv", "columns": ["a"]})
    out = transform_batch(p, rows([b'{"a": "x,y"}', b"[1]"]))
    assert out.records.values == [b'"x,y"']
    assert out.dead[0].reason.startswith("csv needs an object")


def test_sampling_is_deterministic_and_about_the_rate() -> None:
    p = plan(transform={"sample": 0.25})
    batch = rows([b"x"] * 4000)
    first, again = transform_batch(p, batch), transform_batch(p, batch)
    assert first.records.offsets == again.records.offsets
    assert 800 < len(first.records) < 1200
    assert all(0 <= sample_key(0, o) < 1 for o in range(1000))


def _canonical(value: Any) -> list[tuple[str, object]]:
    """Strictly comparable (1, 1.0 and True differ, so do key orders and -0.0), and iterative:
    repr or == would hit the recursion limit on the deepest values the tests parse."""
    out: list[tuple[str, object]] = []
    stack: list[tuple[bool, Any]] = [(False, value)]
    while stack:
        is_key, item = stack.pop()
        if is_key:
            out.append(("key", item))
        elif isinstance(item, dict):
            out.append(("dict", len(item)))
            for key, child in reversed(item.items()):
                stack += [(False, child), (True, key)]
        elif isinstance(item, list):
            out.append(("list", len(item)))
            stack += [(False, child) for child in reversed(item)]
        else:
            out.append((type(item).__name__, repr(item)))
    return out


def _loads_outcome(value: bytes) -> tuple[str, Any]:
    try:
        return "ok", _canonical(json.loads(value))
    except (ValueError, TypeError) as exc:
        return "error", f"invalid JSON: {exc}"
    except RecursionError:
        return "recursion", None


def _parse_outcome(value: bytes) -> tuple[str, Any]:
    try:
        return "ok", _canonical(parse_json(value))
    except RecordError as exc:
        return "error", exc.message
    except RecursionError:
        return "recursion", None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10)
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
padding = st.sampled_from(["", " ", "\n", " \t\r\n"])


@given(json_values, encodings, padding, padding, st.booleans())
def test_json_fast_path_agrees_with_json_loads(value: Any, encoding: str, before: str,
                                               after: str, ascii_only: bool) -> None:
    """parse_json returns what json.loads does, and fails where it fails, with its message."""
    raw = (before + json.dumps(value, ensure_ascii=ascii_only) + after).encode(encoding)
    assert _parse_outcome(raw) == _loads_outcome(raw)


@given(st.binary(max_size=30))
def test_json_fast_path_agrees_on_arbitrary_bytes(raw: bytes) -> None:
    assert _parse_outcome(raw) == _loads_outcome(raw)


# Where orjson (the fast path) and json.loads could disagree: integers beyond 64 bits, number
# spellings, duplicate keys, \u escapes of surrogates, control characters, nesting.
BOUNDARY_INTS = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, -(2**64),
                 10**19 - 1, 10**19, -(10**18), -(10**19), 1_795_330_800_000_000_000]
number_texts = st.one_of(
    st.sampled_from([str(i) for i in BOUNDARY_INTS]),
    st.integers(-(2**80), 2**80).map(str),
    st.floats(allow_nan=False).map(repr),
    st.builds(lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
              st.sampled_from(["", "-"]),
              st.sampled_from(["0", "1", "9", "123456789012345678901234"])
              | st.integers(1, 10**25).map(str),
              st.sampled_from(["", ".0", ".5", ".000001", ".99999999999999999999"])
              | st.integers(0, 10**30).map(lambda n: f".{n}"),
              st.sampled_from(["", "e0", "E+2", "e-7", "e308", "e309", "e400", "e-320", "e-400"])
              | st.integers(-400, 400).map(lambda n: f"e{n}")),
    st.sampled_from(["-0", "-0.0", "0e0", "NaN", "Infinity", "-Infinity", "1.", ".1", "01",
                     "+1", "-", "1e", "nan", "1_0"]),
)
escapes = st.lists(
    st.integers(0xD7F0, 0xE010) | st.integers(0, 0xFFFF)
    | st.sampled_from([0, 0x1F, 0x22, 0x5C, 0x7F, 0x2028, 0xFEFF]),
    max_size=4,
).map(lambda codes: "".join(f"\\u{c:04x}" for c in codes))
string_texts = st.one_of(
    st.text(max_size=8).map(lambda t: json.dumps(t, ensure_ascii=False)),
    escapes.map(lambda t: f'"{t}"'),
    st.builds(lambda a, b: f'"{a}{b}"', st.sampled_from(["", "x", "\\ud83d", "\\udc00"]),
              st.sampled_from(["", "\\ude00", "\\ud800", "\t", "\x01", "\x7f", "é"])),
)
tokens = number_texts | string_texts | st.sampled_from(["true", "false", "null", "[]", "{}"])


@given(st.lists(tokens, max_size=6), padding)
def test_json_fast_path_agrees_on_numbers_strings_and_escapes(items: list[str], pad: str) -> None:
    raw = (pad + "[" + ",".join(items) + "]").encode("utf-8", "surrogatepass")
    assert _parse_outcome(raw) == _loads_outcome(raw)
    for item in items:  # each alone, too: a top-level scalar
        one = item.encode("utf-8", "surrogatepass")
        assert _parse_outcome(one) == _loads_outcome(one)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "\\u0061", "é", "\\u00e9", ""]), tokens),
                max_size=6))
def test_json_fast_path_agrees_on_duplicate_keys(pairs: list[tuple[str, str]]) -> None:
    """The last value wins, at the first key's place, as json.loads has it."""
    raw = ("{" + ",".join(f'"{k}":{v}' for k, v in pairs) + "}").encode("utf-8", "surrogatepass")
    assert _parse_outcome(raw) == _loads_outcome(raw)


@given(st.text(alphabet="\ud800\udc00\udbff\udfffa\u00e9\U0001f600", max_size=6))
def test_json_fast_path_agrees_on_encoded_surrogates(text: str) -> None:
    """json.loads decodes UTF-8 with surrogatepass: encoded surrogates become str surrogates."""
    raw = ('{"k":"' + text + '"}').encode("utf-8", "surrogatepass")
    assert _parse_outcome(raw) == _loads_outcome(raw)


# Not hypothesis: it raises the recursion limit while a test runs, which moves json.loads's.
@pytest.mark.parametrize("depth", [1, 100, 511, 512, 513, 700, 1010, 1023, 1024, 1025, 1500])
@pytest.mark.parametrize("opener", ["[", '{"a":', '[{"b":'])
@pytest.mark.parametrize("wide", [False, True])
def test_json_fast_path_agrees_on_nesting(depth: int, opener: str, wide: bool) -> None:
    """orjson nests to 1024, json.loads to its recursion limit (~990 less the caller's stack):
    deep values (or many brackets) are left to json.loads, RecursionError included."""
    closer = "".join("]" if c == "[" else "}" for c in reversed(opener))
    if wide:  # many brackets, shallow: the stdlib path, same value
        text = "[" + ",".join([opener + "1" + closer] * depth) + "]"
    else:
        text = opener * depth + "1" + closer * depth
    raw = text.encode()
    assert _parse_outcome(raw) == _loads_outcome(raw)
