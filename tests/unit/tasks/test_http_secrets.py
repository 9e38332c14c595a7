"""HTTP header secrets: `${env:EXPORTD_SECRET_...}` references in the spec, resolved on the
server from its environment; any other `${...}` is refused when the job is submitted."""

from __future__ import annotations

import pytest

from tasks.errors import ConfigError, ValidationError
from tasks.sinks.http import resolve_headers
from tasks.spec import parse_job_spec


def _job(headers: dict[str, str]) -> None:
    parse_job_spec({"id": "j", "source": {"topic": "t"},
                    "sink": {"type": "http", "url": "http://127.0.0.1:1/x", "headers": headers}})


@pytest.mark.parametrize("value", ["Bearer ${env:EXPORTD_SECRET_TOKEN}", "plain",
                                   "${env:EXPORTD_SECRET_A}:${env:EXPORTD_SECRET_B_2}", "$5 {x}"])
def test_secret_references_are_accepted(value: str) -> None:
    _job({"Authorization": value})


@pytest.mark.parametrize("value", ["${env:AWS_SECRET_ACCESS_KEY}", "${TOKEN}",
                                   "${env:EXPORTD_SECRET_lower}", "${file:/etc/passwd}", "${}"])
def test_other_references_are_refused_naming_the_header(value: str) -> None:
    with pytest.raises(ValidationError, match=r"header X-Key: .* is not a secret reference"):
        _job({"X-Key": value})


def test_references_are_replaced_from_the_environment() -> None:
    env = {"EXPORTD_SECRET_TOKEN": "t0k'en$", "EXPORTD_SECRET_B": "b"}
    got = resolve_headers({"Authorization": "Bearer ${env:EXPORTD_SECRET_TOKEN}",
                           "X-Two": "${env:EXPORTD_SECRET_B}-${env:EXPORTD_SECRET_B}",
                           "X-Plain": "v"}, env)
    assert got == {"Authorization": "Bearer t0k'en$", "X-Two": "b-b", "X-Plain": "v"}


def test_an_unset_variable_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="HTTP header Authorization refers to "
                                          "EXPORTD_SECRET_TOKEN, which is not set"):
        resolve_headers({"Authorization": "${env:EXPORTD_SECRET_TOKEN}"}, {})
