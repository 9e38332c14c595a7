"""`--print-settings`: the settings a process would run with, secrets hidden, nothing started."""

from __future__ import annotations

import pytest
import yaml

from server.settings import ServerSettings
from tasks.entrypoint import process_main
from tasks.redact import redacted


async def _never(settings: ServerSettings) -> int:
    raise AssertionError("--print-settings must not run the process")


def test_prints_the_merged_settings_with_secrets_hidden(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EXPORTD_S3__SECRET_ACCESS_KEY", "s3-secret")
    monkeypatch.setenv("EXPORTD_KAFKA__CONFIG", '{"sasl.username": "u", "sasl.password": "p"}')
    code = process_main("exportd-server", "doc", ServerSettings, _never,
                        ["--set", "group=heavy", "--print-settings"])
    out = capsys.readouterr().out
    assert code == 0
    printed = yaml.safe_load(out)
    assert printed["group"] == "heavy"                       # flags applied
    assert printed["kafka"]["config"] == {"sasl.username": "u", "sasl.password": "***"}
    assert printed["s3"]["secret_access_key"] == "***"
    assert printed["s3"]["access_key_id"] is None            # not set stays visible as such
    assert "s3-secret" not in out and ": p\n" not in out
    assert printed["lease"]["margin"] > 0                    # every tunable, defaults included


def test_redacted_hides_lists_and_nested_values_under_a_secret_name() -> None:
    tree = {"api": {"admin_tokens": ["a", "b"], "read_tokens": []},
            "clusters": {"x": {"config": {"ssl.key.password": "k", "sasl.username": "u"}}},
            "token_file": ""}
    assert redacted(tree) == {
        "api": {"admin_tokens": ["***", "***"], "read_tokens": []},
        "clusters": {"x": {"config": {"ssl.key.password": "***", "sasl.username": "u"}}},
        "token_file": ""}
