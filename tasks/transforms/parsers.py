"""Parsers from a Kafka record's value (bytes) to a record: json, nginx combined log, regex, raw.

Each raises RecordError with the reason when a value does not parse; the caller dead-letters it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tasks.errors import RecordError
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


# json.loads(bytes) detects the encoding, decodes, and skips whitespace in Python before its C
# scanner runs: ~0.5 µs a record. The usual value (UTF-8, no surrounding whitespace) goes to the
# scanner directly; anything else, valid or not, takes json.loads, so results and errors are
# exactly json.loads's (property-tested).
# (scan_once is set in JSONDecoder.__init__; typeshed does not declare it.)
_scan_once: Callable[[str, int], tuple[Any, int]] = (
    json.JSONDecoder().scan_once)  # type: ignore[attr-defined]


def parse_json(value: bytes) -> Any:
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
    compiled = re.compile(pattern)

    def parse(value: bytes) -> dict[str, Any]:
        match = compiled.search(_text(value))
        if match is None:
            raise RecordError(f"does not match pattern {pattern!r}")
        return match.groupdict()

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
