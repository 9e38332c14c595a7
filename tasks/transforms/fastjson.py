"""The JSON fast path of a transform: decode only the fields its `where` and `select` read.

The general path parses every record whole (orjson), builds the projection as a dict and encodes
it: ~2 µs of CPython a record, most of it creating objects for fields nobody reads. When the
transform is `parse: json` with a `select` that is a multi-select of top-level fields
(`{t: time, s: status}` or `[time, status]`) and a `where` (if any) that reads only named fields
(fields, sub-expressions, comparisons, literals, and/or/not, multi-selects), msgspec decodes each
record into a struct of just those fields, skipping the rest in C, and encodes the projection
from a second struct: ~0.8 µs a record. A `where` of and/or/not over `field <op> literal`
comparisons (the usual filter) is tested on the struct's attributes (`struct_predicate`); any
other `where` runs compiled on a dict of the fields it reads.

Its results are the general path's, byte for byte (property-tested), because it only answers
where the two cannot differ and hands every other record back (`line` returns FALLBACK):
- msgspec rejects it: not JSON, NaN/Infinity, a BOM, a top-level value that is not an object,
  lone surrogates, 1e400 (json.loads has the last word on all of these);
- it is not ASCII: msgspec does not check the UTF-8 of the strings it skips;
- it has floats of magnitude ≥ 1e16 in the fields read (msgspec writes 1e16 where the general
  encoder writes 1e+16);
- it may nest deep enough to reach json.loads's recursion limit;
- its `where` raises (e.g. a string compared with a number: a dead letter with the reason).
Missing fields and nulls are both None in the struct, as both are null to JMESPath.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import jmespath
import msgspec

from tasks.spec import Format, Transform
from tasks.transforms.jmes import Expression, compile_expression, field_test, truthy
from tasks.transforms.parsers import DEEP_NESTING

FastLine = Callable[[bytes], Any]
"""value -> its encoded line (bytes), DROPPED (filtered out by `where`) or FALLBACK."""

DROPPED = object()
FALLBACK = object()

# Node types whose result depends only on the top-level fields they name (no `@`, no functions,
# no projections: those can see the whole record).
_FIELD_ONLY = frozenset(("field", "subexpression", "comparator", "literal", "and_expression",
                         "or_expression", "not_expression", "multi_select_dict",
                         "multi_select_list", "key_val_pair"))
_LARGEST_PLAIN_FLOAT = 1e16   # from here on, msgspec and the general encoder spell floats apart


def _top_level_fields(node: dict[str, Any]) -> list[str] | None:
    """The top-level field names `node` reads when evaluated on a record, or None when its result
    may depend on more than those."""
    kind, children = node["type"], node.get("children", [])
    if kind not in _FIELD_ONLY:
        return None
    if kind == "field":
        return [node["value"]]
    if kind == "subexpression":
        # Only the first step sees the record; the later ones see what it returned, which is
        # decoded whole, so they may be anything.
        return _top_level_fields(children[0])
    names: list[str] = []
    for child in children:
        found = _top_level_fields(child)
        if found is None:
            return None
        names += found
    return names


def _plain_projection(node: dict[str, Any]) -> tuple[list[str], list[str], bool] | None:
    """(output keys, field names, as an array) for `{k: field, ...}` or `[field, ...]`; a
    repeated key keeps its first place and its last field, as jmespath's dict does."""
    children = node.get("children", [])
    if node["type"] == "multi_select_list" and all(c["type"] == "field" for c in children):
        names = [c["value"] for c in children]
        return [f"f{i}" for i in range(len(names))], names, True
    if node["type"] == "multi_select_dict" and all(
            c["children"][0]["type"] == "field" for c in children):
        chosen: dict[str, str] = {}
        for pair in children:
            chosen[pair["value"]] = pair["children"][0]["value"]
        return list(chosen), list(chosen.values()), False
    return None


def _float(text: str) -> float:
    number = float(text)
    if not -_LARGEST_PLAIN_FLOAT < number < _LARGEST_PLAIN_FLOAT:
        raise ValueError("a float the general path writes differently")
    return number


def _getter(attrs: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    if len(attrs) == 1:
        one = operator.attrgetter(attrs[0])
        return lambda record: (one(record),)
    return operator.attrgetter(*attrs)  # a tuple for 2+


def _as_dict(names: list[str], attrs: list[str]) -> Callable[[Any], dict[str, Any]]:
    """The fields `where` reads as the dict it is compiled for (one field, the usual case, is a
    dict display: ~3x faster than dict(zip()))."""
    if not names:  # a `where` of literals
        return lambda record: {}
    if len(names) == 1:
        name, one = names[0], operator.attrgetter(attrs[0])
        return lambda record: {name: one(record)}
    values = operator.attrgetter(*attrs)
    return lambda record: dict(zip(names, values(record)))  # noqa: B905  # same length


Predicate = Callable[[Any], Any]
"""A decoded struct -> a value whose Python truth is the `where`'s JMESPath truth."""


def struct_predicate(node: dict[str, Any], attr: dict[str, str]) -> Predicate | None:
    """The `where` as a test of the struct's attributes, for and/or/not of `field <op> literal`
    (the usual filters): no dict built for it, no truthy() call. None for any other shape.

    A comparison's value is True, False or None, whose Python truth is its JMESPath truth; and
    JMESPath's `a && b` is a falsy `a` or else `b`, so its truth is truth(a) and truth(b); `||`
    likewise; `!x` is true exactly when x is falsy."""
    kind, children = node["type"], node.get("children", [])
    if kind == "comparator":
        left, right = children
        if left["type"] == "field" and right["type"] == "literal":
            name, constant, field_first = left["value"], right["value"], True
        elif left["type"] == "literal" and right["type"] == "field":
            name, constant, field_first = right["value"], left["value"], False
        else:
            return None
        test, get = field_test(node["value"], constant, field_first), \
            operator.attrgetter(attr[name])
        return lambda record: test(get(record))
    parts = [struct_predicate(child, attr) for child in children]
    if not parts or any(part is None for part in parts):
        return None
    if kind == "not_expression":
        inner = parts[0]
        assert inner is not None
        return lambda record: not inner(record)
    if kind in ("and_expression", "or_expression"):
        first, second = parts
        assert first is not None and second is not None
        if kind == "and_expression":
            return lambda record: first(record) and second(record)
        return lambda record: first(record) or second(record)
    return None


def _where_test(text: str, node: dict[str, Any], names: list[str],
                attr: dict[str, str]) -> Predicate:
    """The struct-level test where it applies, else the compiled `where` on a dict of the
    fields it reads."""
    keep = struct_predicate(node, attr)
    if keep is not None:
        return keep
    where: Expression = compile_expression(text)
    as_dict = _as_dict(names, [attr[n] for n in names])
    return lambda record: truthy(where(as_dict(record)))


def compile_fast_line(spec: Transform, fmt: Format) -> FastLine | None:
    """The fast path for this transform, or None when it does not apply."""
    if (spec.parse.format != "json" or not spec.select or fmt.type != "ndjson"
            or spec.add_fields.static or spec.add_fields.source or spec.add_fields.ingest_time):
        return None
    projection = _plain_projection(dict(jmespath.compile(spec.select).parsed))
    if projection is None:
        return None
    keys, out_names, as_array = projection
    where_names: list[str] = []
    where_node = dict(jmespath.compile(spec.where).parsed) if spec.where else None
    if where_node is not None:
        found = _top_level_fields(where_node)
        if found is None:
            return None
        where_names = list(dict.fromkeys(found))

    # Struct attributes are f0, f1, ...: JSON keys need not be identifiers. gc=False: two structs
    # a record would otherwise be tracked by the cyclic GC; decoded JSON cannot point back at
    # its struct, so they cannot be part of a cycle.
    read = list(dict.fromkeys(out_names + where_names))
    attr = {name: f"f{i}" for i, name in enumerate(read)}
    record_type = msgspec.defstruct("Fields", [(attr[n], Any, None) for n in read],
                                    rename={attr[n]: n for n in read}, gc=False)
    out_fields = [f"f{i}" for i in range(len(keys))]
    out_type = msgspec.defstruct("Projection", [(f, Any) for f in out_fields],
                                 rename=None if as_array else dict(zip(out_fields, keys,
                                                                       strict=True)),
                                 array_like=as_array, gc=False)
    decode = msgspec.json.Decoder(record_type, float_hook=_float).decode
    encode = msgspec.json.Encoder().encode
    project = _getter([attr[n] for n in out_names])
    keep = (_where_test(spec.where, where_node, where_names, attr)
            if spec.where and where_node is not None else None)

    def line(value: bytes) -> Any:
        if not value.isascii() or (len(value) >= 2 * DEEP_NESTING and value.count(b"[")
                                   + value.count(b"{") >= DEEP_NESTING):
            return FALLBACK
        try:
            record = decode(value)
            if keep is not None and not keep(record):
                return DROPPED
            return encode(out_type(*project(record)))
        except Exception:  # msgspec's errors, _float's, a `where` that fails (str < int):
            return FALLBACK  # the general path decides, and words the dead letter
    return line
