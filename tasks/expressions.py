"""User expressions with a bounded cost: `parse.regex` patterns and JMESPath `where`/`select`.

A job author's expression runs on every record of a task, on a worker shared by other tasks, so
its cost must not depend on what the records hold. Checked here once, when the spec is validated
(the API answers 400 with the reason; a stored spec is checked again where it is decoded):

- Regexes are RE2 (google-re2): matching is linear in the record's length, whatever the pattern.
  Backreferences and lookaround (which need backtracking) do not compile and are refused with
  the reason; so is a pattern over MAX_PATTERN_CHARS. Named groups `(?P<name>...)` become fields,
  in the pattern's order. Character classes follow RE2: `\\d`, `\\w`, `\\s` are ASCII, `\\p{L}`
  and `[[:alpha:]]` are accepted.
- JMESPath expressions are at most MAX_EXPRESSION_CHARS long and nest at most MAX_DEPTH levels
  (brackets, and operators in a chain, which jmespath's parser and interpreter both recurse on):
  a 5,000-deep `((((...` is a 400, not a RecursionError on the master or a worker.

Pure functions; `compile_regex` returns a `Regex` that parsers use per record.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions
import re2

MAX_PATTERN_CHARS = 4096
MAX_EXPRESSION_CHARS = 4096
MAX_DEPTH = 64

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False          # errors are ours to report, not RE2's stderr lines
_NAMED_GROUP = re.compile(r"\(\?P?<([A-Za-z_][A-Za-z0-9_]*)>")
_BACKREFERENCE = re.compile(r"invalid escape sequence: \\[1-9]|\(\?P[=>]|\(\?P$")
_LOOKAROUND = ("(?=", "(?!", "(?<=", "(?<!")
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_QUOTES = frozenset("'\"`")


def one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class Regex:
    """A compiled RE2 pattern with named groups. `fields(text)` is the groups of the first match
    as a dict in the pattern's order (None for a group that did not take part), or None."""

    pattern: str
    names: tuple[tuple[str, int], ...]
    search: Callable[[str], Any]

    def fields(self, text: str) -> dict[str, Any] | None:
        match = self.search(text)
        if match is None:
            return None
        groups = match.groups()
        return {name: groups[index - 1] for name, index in self.names}


def _re2_reason(pattern: str, message: str) -> str:
    if _BACKREFERENCE.search(message):
        return ("uses a backreference (\\1 or (?P=name)), which cannot be matched in linear "
                "time; regexes here are RE2 syntax")
    if any(op in message for op in _LOOKAROUND):
        return ("uses lookaround ((?=...), (?!...), (?<=...) or (?<!...)), which cannot be "
                "matched in linear time; regexes here are RE2 syntax")
    return f"is not a valid regex (RE2 syntax): {one_line(message)}"


def _re2(pattern: str) -> Any:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"pattern is {len(pattern)} characters; at most {MAX_PATTERN_CHARS}")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else ""
        message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        raise ValueError(f"pattern {_re2_reason(pattern, message)}") from exc


def compile_search(pattern: str) -> Callable[[str], bool]:
    """A predicate true when the RE2 pattern matches somewhere in a string (as `re.search`);
    ValueError with the reason. For patterns that arrive with data, e.g. JSON Schema `pattern`
    keywords from a schema registry (tasks/transforms/schemas.py)."""
    search = _re2(pattern).search

    def matches(text: str) -> bool:
        return search(text) is not None

    return matches


def compile_topic_pattern(pattern: str) -> Callable[[str], bool]:
    """A `source.topic_pattern` compiled with RE2: a predicate that is true when the pattern
    matches a WHOLE topic name (as Kafka Connect's `topics.regex`); ValueError with the reason."""
    fullmatch = _re2(pattern).fullmatch

    def matches(topic: str) -> bool:
        return fullmatch(topic) is not None

    return matches


def compile_regex(pattern: str) -> Regex:
    """The pattern compiled with RE2, or ValueError with the reason (one line, starting with
    what is wrong with it)."""
    compiled = _re2(pattern)
    names = _NAMED_GROUP.findall(pattern)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"pattern names group {twice[0]!r} twice; each named group is a field")
    index: dict[str, int] = dict(compiled.groupindex)
    if not index:
        raise ValueError("pattern needs at least one named group, e.g. (?P<ip>\\S+)")
    ordered = tuple(sorted(index.items(), key=lambda item: item[1]))
    return Regex(pattern, ordered, compiled.search)


def bracket_depth(text: str) -> int:
    """How deep (), [] and {} nest in a JMESPath expression, outside its quoted parts ('raw
    strings', "identifiers", `literals`, with backslash escapes). One pass, no recursion."""
    deepest = depth = 0
    quote = ""
    escaped = False
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in _QUOTES:
            quote = char
        elif char in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth = max(depth - 1, 0)
    return deepest


def ast_depth(node: Any) -> int:
    """The depth of a jmespath AST (dicts with `children`), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in current.get("children", ()) if isinstance(current, dict) else ():
            if isinstance(child, dict):
                stack.append((child, depth + 1))
    return deepest


def check_jmespath(text: str) -> jmespath.parser.ParsedResult:
    """The parsed expression, or ValueError with the reason (one line)."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"the JMESPath expression is {len(text)} characters; at most "
                         f"{MAX_EXPRESSION_CHARS}")
    too_deep = (f"the JMESPath expression nests more than {MAX_DEPTH} levels deep (brackets, "
                "or operators in one chain); split it or use a function such as contains()")
    if bracket_depth(text) > MAX_DEPTH:
        raise ValueError(too_deep)
    try:
        parsed = jmespath.compile(text)
    except RecursionError as exc:  # a chain of prefix operators (!!!!...) under the size limit
        raise ValueError(too_deep) from exc
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError(f"not a valid JMESPath expression: {one_line(str(exc))}") from exc
    if ast_depth(parsed.parsed) > MAX_DEPTH:
        raise ValueError(too_deep)
    return parsed
