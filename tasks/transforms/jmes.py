"""JMESPath expressions compiled once into Python closures.

jmespath's interpreter walks the AST for every record, which dominates the cost of a simple
`where`/`select`. The common node types (fields, sub-expressions, comparisons, literals, and/or/
not, multi-select hash/list, `@`) are turned into nested closures with exactly jmespath's
semantics; an expression using anything else is evaluated by jmespath itself. The unit tests
check both paths agree.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from numbers import Number
from typing import Any

import jmespath

Expression = Callable[[Any], Any]


class _Unsupported(Exception):
    """A node type the closure compiler leaves to jmespath."""


def _is_number(x: Any) -> bool:
    return isinstance(x, Number) and not isinstance(x, bool)


def truthy(value: Any) -> bool:
    """JMESPath truth: null, false, "", [] and {} are false; 0 is true."""
    return not (value is None or value is False or value == "" or value == [] or value == {})


def _equals(x: Any, y: Any) -> bool:
    # jmespath: 0/1 never equal false/true, although Python says they do.
    if (_is_number(x) and x in (0, 1) and isinstance(y, bool)) or \
            (_is_number(y) and y in (0, 1) and isinstance(x, bool)):
        return False
    return bool(x == y)


_ORDER = {"lt": operator.lt, "gt": operator.gt, "lte": operator.le, "gte": operator.ge}


def _field(name: str) -> Expression:
    def get(value: Any) -> Any:
        return value.get(name) if isinstance(value, dict) else None
    return get


def _subexpression(parts: list[Expression]) -> Expression:
    def run(value: Any) -> Any:
        for part in parts:
            value = part(value)
        return value
    return run


def _comparator(op: str, left: Expression, right: Expression) -> Expression:
    if op == "eq":
        return lambda v: _equals(left(v), right(v))
    if op == "ne":
        return lambda v: not _equals(left(v), right(v))
    func = _ORDER[op]

    def compare(value: Any) -> Any:
        a, b = left(value), right(value)
        if not ((_is_number(a) or isinstance(a, str)) and (_is_number(b) or isinstance(b, str))):
            return None
        return func(a, b)
    return compare


def _and(left: Expression, right: Expression) -> Expression:
    def run(value: Any) -> Any:
        first = left(value)
        return right(value) if truthy(first) else first
    return run


def _or(left: Expression, right: Expression) -> Expression:
    def run(value: Any) -> Any:
        first = left(value)
        return first if truthy(first) else right(value)
    return run


def _not(inner: Expression) -> Expression:
    def run(value: Any) -> Any:
        result = inner(value)
        if _is_number(result) and result == 0:
            return False
        return not result
    return run


def _multi_dict(pairs: list[tuple[str, Expression]]) -> Expression:
    def run(value: Any) -> Any:
        if value is None:
            return None
        return {key: expr(value) for key, expr in pairs}
    return run


def _multi_list(items: list[Expression]) -> Expression:
    def run(value: Any) -> Any:
        if value is None:
            return None
        return [expr(value) for expr in items]
    return run


def _literal(constant: Any) -> Expression:
    return lambda _value: constant


def _identity(value: Any) -> Any:
    return value


def _build(node: dict[str, Any]) -> Expression:
    kind, children = node["type"], node.get("children", [])
    if kind == "field":
        return _field(node["value"])
    if kind == "subexpression":
        return _subexpression([_build(c) for c in children])
    if kind == "comparator":
        return _comparator(node["value"], _build(children[0]), _build(children[1]))
    if kind == "literal":
        return _literal(node["value"])
    if kind in ("current", "identity"):
        return _identity
    if kind == "and_expression":
        return _and(_build(children[0]), _build(children[1]))
    if kind == "or_expression":
        return _or(_build(children[0]), _build(children[1]))
    if kind == "not_expression":
        return _not(_build(children[0]))
    if kind == "multi_select_dict":
        return _multi_dict([(c["value"], _build(c["children"][0])) for c in children])
    if kind == "multi_select_list":
        return _multi_list([_build(c) for c in children])
    raise _Unsupported(kind)


def compile_expression(text: str) -> Expression:
    """A callable record -> result, equal to `jmespath.search(text, record)`."""
    parsed = jmespath.compile(text)
    try:
        return _build(dict(parsed.parsed))
    except _Unsupported:
        return parsed.search
