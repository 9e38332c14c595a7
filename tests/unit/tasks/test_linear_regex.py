"""`parse.regex` runs in linear time (RE2): a pattern that backtracks exponentially in Python's
`re` parses a hostile record at once; constructs RE2 cannot run in linear time (backreferences,
lookaround) are refused when the spec is validated, with the reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tasks.errors import ValidationError
from tasks.spec import Parse, job_spec_from_json, parse_job_spec
from tasks.transforms.parsers import make_parser

HOSTILE = r"(?P<x>(a+)+$)"


def _job(pattern: str) -> dict[str, Any]:
    return {"id": "logs", "source": {"topic": "logs"},
            "sink": {"type": "file", "directory": "/x"},
            "transform": {"parse": {"format": "regex", "pattern": pattern}}}


# The guard is pytest-timeout, not a clock assertion: with Python's `re` the 28-byte record alone
# takes ~15 s (doubling per byte) and the 10,000-byte one would never finish.
@pytest.mark.timeout(20)
def test_nested_quantifier_on_a_hostile_record_finishes() -> None:
    spec = parse_job_spec(_job(HOSTILE))
    parse = make_parser(spec.transform.parse, objects=True)
    for size in (28, 10_000):
        with pytest.raises(Exception, match="does not match"):
            parse(b"a" * (size - 1) + b"!")
    assert parse(b"aaaa") == {"x": "aaaa"}


def test_named_groups_become_fields_and_unmatched_groups_are_none() -> None:
    parse = make_parser(Parse(format="regex", pattern=r"(?P<level>[A-Z]+) (?P<msg>.*?)"
                              r"(?: code=(?P<code>\d+))?$"), objects=True)
    assert parse(b"WARN disk full code=7") == {"level": "WARN", "msg": "disk full", "code": "7"}
    assert parse(b"INFO ok") == {"level": "INFO", "msg": "ok", "code": None}


def test_unicode_text_is_matched_by_characters() -> None:
    parse = make_parser(Parse(format="regex", pattern=r"^(?P<word>.{3}) (?P<rest>.*)$"),
                        objects=True)
    assert parse("été ok".encode()) == {"word": "été", "rest": "ok"}


@pytest.mark.parametrize(("pattern", "reason"), [
    (r"(?P<a>x)(?P=a)", "backreference"),
    (r"(?P<a>x)\1", "backreference"),
    (r"(?P<a>x)(?=y)", "lookaround"),
    (r"(?P<a>x)(?!y)", "lookaround"),
    (r"(?<=y)(?P<a>x)", "lookaround"),
    (r"(?P<a>x", "not a valid regex"),
    (r"(x)", "named group"),
])
def test_patterns_re2_cannot_run_are_refused_with_the_reason(pattern: str, reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_job_spec(_job(pattern))
    assert err.value.field == "transform.parse"
    assert reason in err.value.message
    assert "\n" not in err.value.message


def test_an_oversized_pattern_is_refused() -> None:
    with pytest.raises(ValidationError, match="at most 4096"):
        parse_job_spec(_job("(?P<a>" + "x" * 5000 + ")"))


def test_a_stored_spec_from_before_the_checks_still_decodes() -> None:
    """A job stored by a version without these checks stays visible (and deletable) on the
    leader and reaches its servers; its tasks fail with the reason instead (the transform
    compiles the pattern under RE2)."""
    from master.store import StoredJob, decode_job, encode_job

    old = parse_job_spec(_job(r"(?P<x>\w+)"))
    raw = old.to_json().replace(b"(?P<x>\\\\w+)", b"(?P<x>a)(?=b)")
    assert b"(?=b)" in raw
    with pytest.raises(ValidationError, match="lookaround"):
        parse_job_spec(json.loads(raw))
    stored = job_spec_from_json(raw)
    assert stored.transform.parse.pattern == "(?P<x>a)(?=b)"
    node = encode_job(StoredJob(stored, 1.0))
    assert decode_job(node).spec == stored
    with pytest.raises(ValueError, match="lookaround"):
        make_parser(stored.transform.parse, objects=True)
