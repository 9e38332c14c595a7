"""JMESPath `where`/`select` are bounded in size and depth: a hostile expression is a
ValidationError with the reason (a 400 at the API), never a RecursionError."""

from __future__ import annotations

from typing import Any

import jmespath
import pytest

from tasks.errors import ValidationError
from tasks.expressions import MAX_DEPTH, ast_depth, bracket_depth
from tasks.spec import parse_job_spec
from tasks.transforms.jmes import compile_expression


def _job(**transform: Any) -> dict[str, Any]:
    return {"id": "logs", "source": {"topic": "logs"},
            "sink": {"type": "file", "directory": "/x"}, "transform": transform}


@pytest.mark.parametrize(("where", "reason"), [
    ("(" * 5000 + "a" + ")" * 5000, "at most 4096"),       # the case: over the size
    ("(" * 1500 + "a" + ")" * 1500, "nests more than 64"),  # under the size, too deep
    ("!" * 2000 + "a", "nests more than 64"),               # prefix operators recurse too
    ("[" * 65 + "a" + "]" * 65, "nests more than 64"),
    (" && ".join(["a"] * 70), "nests more than 64"),
    ("a ==", "not a valid JMESPath expression"),
])
@pytest.mark.parametrize("field", ["where", "select"])
def test_hostile_expressions_are_refused_with_the_reason(where: str, reason: str,
                                                         field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_job_spec(_job(**{field: where}))
    assert err.value.field == f"transform.{field}"
    assert reason in err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize("text", [
    "status >= `500` && (method == 'POST' || method == 'PUT')",
    "{t: time, s: status, ua: headers.\"user-agent\"}",
    "items[?price > `10`].{n: name, p: price} | [0]",
    "'(((' == a && `\"[[[\"` == b",                       # brackets inside quotes do not count
    "(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH,
])
def test_ordinary_expressions_pass_and_evaluate(text: str) -> None:
    spec = parse_job_spec(_job(where=text))
    record = {"status": 503, "method": "PUT", "a": "(((", "b": "[[["}
    assert compile_expression(spec.transform.where or "")(record) == jmespath.search(text, record)


def test_depth_measures() -> None:
    assert bracket_depth("a[?b == '((((('].c") == 1
    assert bracket_depth("`\"\\\"[[\"` == a") == 0
    assert ast_depth(jmespath.compile("a.b.c").parsed) == 2
    assert ast_depth(jmespath.compile(" || ".join("abcdef")).parsed) == 6
