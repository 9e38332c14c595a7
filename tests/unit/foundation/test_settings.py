"""Settings: YAML, then EXPORTD_* variables, then flags; durations as human strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import ConfigError
from tasks.settings import (
    Duration,
    KafkaProperties,
    SettingsModel,
    load_settings,
    parse_duration,
    parse_set_flags,
)


class Inner(SettingsModel):
    endpoint: str = "http://localhost"
    timeout: Duration = 1.0


class Example(SettingsModel):
    name: str = "a"
    interval: Duration = 5.0
    inner: Inner = Inner()


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("5s", 5.0), ("250ms", 0.25), ("1.5m", 90.0), ("2h", 7200.0), ("1d", 86400.0), (3, 3.0),
     ("7", 7.0), (0.5, 0.5)],
)
def test_parse_duration(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["5 parsecs", "-1s", -2, True, None, "", "s"])
def test_parse_duration_rejects(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


def test_precedence_yaml_then_env_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("name: from-yaml\ninterval: 10s\ninner:\n  endpoint: http://yaml\n")
    env = {"EXPORTD_INTERVAL": "20s", "EXPORTD_INNER__TIMEOUT": "300ms", "EXPORTD_OTHER": "x"}
    got = load_settings(Example, config_file=cfg, environ=env, overrides={"name": "from-flag"})
    assert got == Example(
        name="from-flag", interval=20.0, inner=Inner(endpoint="http://yaml", timeout=0.3)
    )


def test_flags_from_set_pairs() -> None:
    overrides = parse_set_flags(["inner.endpoint=http://flag", "interval=2m"])
    got = load_settings(Example, environ={}, overrides=overrides)
    assert got.inner.endpoint == "http://flag"
    assert got.interval == 120.0


def test_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("nmae: typo\n")
    with pytest.raises(ConfigError, match="nmae"):
        load_settings(Example, config_file=cfg, environ={})


def test_bad_duration_names_the_field() -> None:
    with pytest.raises(ConfigError, match="interval"):
        load_settings(Example, environ={"EXPORTD_INTERVAL": "soon"})


class Typed(SettingsModel):
    group: str = "default"
    count: int = 1
    enabled: bool = False
    tokens: list[str] = []


def test_variables_keep_strings_and_convert_by_field_type() -> None:
    env = {"EXPORTD_GROUP": "2024", "EXPORTD_COUNT": "15", "EXPORTD_ENABLED": "true",
           "EXPORTD_TOKENS": '["a", "b"]'}
    got = load_settings(Typed, environ=env, overrides=parse_set_flags(["group=007"]))
    assert got == Typed(group="007", count=15, enabled=True, tokens=["a", "b"])


class Kafka(SettingsModel):
    config: KafkaProperties = {}


class WithKafka(SettingsModel):
    kafka: Kafka = Kafka()


@pytest.mark.parametrize("reverse", [False, True])
def test_kafka_properties_merge_a_secret_variable_into_a_mapping_in_any_order(
        tmp_path: Path, reverse: bool) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  config:\n    security.protocol: SASL_SSL\n"
                   "    socket.keepalive.enable: true\n    fetch.min.bytes: 1\n")
    env = {"EXPORTD_KAFKA__CONFIG": '{"sasl.mechanism": "PLAIN", "security.protocol": "SASL_SSL"}',
           "EXPORTD_KAFKA__CONFIG__SASL.PASSWORD": "'s3cret'"}
    if reverse:
        env = dict(reversed(env.items()))
    got = load_settings(WithKafka, config_file=cfg, environ=env)
    # The variable's mapping merges into the file's, the password lands inside it, and values
    # are strings as librdkafka takes them.
    assert got.kafka.config == {"security.protocol": "SASL_SSL", "socket.keepalive.enable": "true",
                                "fetch.min.bytes": "1", "sasl.mechanism": "PLAIN",
                                "sasl.password": "s3cret"}
    from_file = load_settings(WithKafka, config_file=cfg, environ={})
    assert from_file.kafka.config == {"security.protocol": "SASL_SSL",
                                      "socket.keepalive.enable": "true", "fetch.min.bytes": "1"}


@pytest.mark.parametrize("key", ["enable.auto.commit", "group.id", "bootstrap.servers", "acks"])
def test_kafka_properties_exportd_sets_itself_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=f"kafka.config: .*exportd sets {key} itself"):
        load_settings(WithKafka, environ={}, overrides={"kafka.config": {key: "x"}})


def test_a_property_split_at_its_dots_by_a_flag_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="sasl: a property's value is a string"):
        load_settings(WithKafka, environ={}, overrides={"kafka.config.sasl.password": "x"})
