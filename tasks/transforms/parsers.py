"""Parsers from a Kafka record's value (bytes) to a record: json, nginx combined log, regex, raw.

`regex` patterns are the job author's and run under RE2 (linear time); the nginx pattern is ours
and stays on `re`.

Each raises RecordError with the reason when a value does not parse; the caller dead-letters it.
JSON is parsed by orjson (itself ~2.7x faster than the stdlib, ~1.5x with the checks that keep
it exact), falling back to the stdlib wherever the two could disagree, so results and errors are
exactly json.loads's (property-tested).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

from tasks.errors import RecordError
from tasks.expressions import compile_regex
from tasks.spec import Parse

Parser = Callable[[bytes], Any]

# nginx's default `combined` log format.
NGINX_COMBINED = re.compile(
    r'(?P<remote_addr>\S+) - (?P<remote_user>\S+) \[(?P<time_local>[^\]]+)\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<body_bytes_sent>\d+|-) '
    r'"(?P<http_referer>[^"]*)" "(?P<http_user_agent>[^"]*)"'
)


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"not UTF-8: {exc}") from exc


# orjson.loads is exact where it succeeds, except for integers outside [-2**63, 2**64), which it
# reads as floats (json.loads keeps them as ints), and nesting between json.loads's recursion
# limit (~990 deep, less the caller's stack) and orjson's 1024. Everything else it accepts parses
# to the same value (floats are correctly rounded; duplicate keys: the last wins, at the first's
# place; -0 is int 0); what it rejects (NaN, Infinity, 1e400, a BOM, UTF-16/32, lone surrogates
# in \u escapes or encoded, invalid JSON) goes to the stdlib, which has the last word.
#
# One translation finds both (~0.3 µs a 280 B record, half of orjson's own time):
# - Integers: digits and "-" become "0", so a run of 20 is a number of 20 digits, or a negative
#   one of 19, that may not fit; a run inside a string or a long mantissa only costs the stdlib
#   path. (ns timestamps have 19 digits: they stay on orjson.)
# - Nesting: "[" and "{" become "[". A value with fewer than DEEP_NESTING (N) of them nests less
#   than N deep, which json.loads parses unless its caller is already ~(1000 - N) frames deep.
#   They are counted only in a value long enough to hold N pairs (a count costs ~0.7 ns a byte).
_SHAPE = bytes(0x30 if i in b"0123456789-" else 0x5B if i in b"[{" else 0x20 for i in range(256))
_LONG_NUMBER = b"0" * 20
DEEP_NESTING = 512


# The stdlib path. json.loads(bytes) detects the encoding, decodes, and skips whitespace in
# Python before its C scanner runs: ~0.5 µs a record. The usual value (UTF-8, no surrounding
# whitespace) goes to the scanner directly; anything else, valid or not, takes json.loads.
# (scan_once is set in JSONDecoder.__init__; typeshed does not declare it.)
_scan_once: Callable[[str, int], tuple[Any, int]] = (
    json.JSONDecoder().scan_once)  # type: ignore[attr-defined]


def _parse_json_stdlib(value: bytes) -> Any:
    try:
        text = value.decode("utf-8")
        record, end = _scan_once(text, 0)
        if end == len(text):
            return record
    except (ValueError, StopIteration, TypeError, AttributeError):
        pass
    try:
        return json.loads(value)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are both
        raise RecordError(f"invalid JSON: {exc}") from exc


def parse_json(value: bytes) -> Any:
    """`json.loads(value)`, by orjson where that gives the same (see above)."""
    shape = value.translate(_SHAPE)
    if shape.find(_LONG_NUMBER) < 0 and (len(value) < 2 * DEEP_NESTING
                                         or shape.count(0x5B) < DEEP_NESTING):
        try:
            return orjson.loads(value)
        except Exception:  # whatever orjson rejects, json.loads decides
            pass
    return _parse_json_stdlib(value)


def parse_nginx(value: bytes) -> dict[str, Any]:
    match = NGINX_COMBINED.match(_text(value))
    if match is None:
        raise RecordError("not an nginx combined log line")
    record: dict[str, Any] = match.groupdict()
    record["status"] = int(record["status"])
    sent = record["body_bytes_sent"]
    record["body_bytes_sent"] = 0 if sent == "-" else int(sent)
    method, _, rest = record["request"].partition(" ")
    path, _, protocol = rest.rpartition(" ") if " " in rest else (rest, "", "")
    record.update(method=method, path=path, protocol=protocol)
    return record


def regex_parser(pattern: str) -> Parser:
    """Named groups of the first match, by RE2: linear in the value's length whatever the
    pattern (tasks/expressions.py), so one record cannot hold a worker."""
    fields = compile_regex(pattern).fields

    def parse(value: bytes) -> dict[str, Any]:
        record = fields(_text(value))
        if record is None:
            raise RecordError(f"does not match pattern {pattern!r}")
        return record

    return parse


def parse_raw(value: bytes) -> bytes:
    return value


def raw_as_object(value: bytes) -> dict[str, Any]:
    return {"value": value.decode("utf-8", "replace")}


def make_parser(spec: Parse, *, objects: bool) -> Parser:
    """`objects`: raw values become {"value": text} (a later step needs fields)."""
    if spec.format == "json":
        return parse_json
    if spec.format == "nginx":
        return parse_nginx
    if spec.format == "regex":
        return regex_parser(spec.pattern or "")
    return raw_as_object if objects else parse_raw
