"""Settings for every process: YAML file, overridden by `EXPORTD_*` variables, overridden by flags.

A process declares its settings as a pydantic model (e.g. master.settings.MasterSettings) whose
durations are `Duration` fields, given as human strings ("5s", "250ms", "2m") or numbers of
seconds. `load_settings` merges the three sources in order; nested fields are reached with `__` in
variable names (`EXPORTD_S3__ENDPOINT`) and dots in flags (`--set s3.endpoint=...`).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict

from tasks.errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Any) -> float:
    """'5s' -> 5.0, '250ms' -> 0.25, '1.5m' -> 90.0, 3 -> 3.0 (seconds)."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    raise ValueError(f"not a duration (use e.g. '5s', '250ms', '2m'): {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, given as a number or a human string."""

# librdkafka properties exportd sets itself and relies on: where to connect is `bootstrap_servers`
# (or a job's own), offsets are committed by the pipeline only after the sink acknowledged
# (auto-commit would commit what was never delivered), a missing offset starts at the log start,
# and producers are idempotent with acks=all (a dead letter or re-fed record is never lost).
RESERVED_KAFKA_PROPERTIES = frozenset((
    "bootstrap.servers", "group.id", "client.id", "enable.auto.commit",
    "enable.auto.offset.store", "auto.offset.reset", "enable.idempotence", "acks"))


def kafka_properties(value: Any) -> dict[str, str]:
    """librdkafka properties added to every Kafka client (security, tuning): values as strings
    (YAML's true is librdkafka's "true"); exportd's own properties are refused."""
    if not isinstance(value, Mapping):
        raise ValueError("a mapping of librdkafka properties, e.g. {security.protocol: SASL_SSL}")
    nested = sorted(str(key) for key, item in value.items() if isinstance(item, Mapping | list))
    if nested:  # `--set kafka.config.sasl.password=x` splits the name at its dots
        raise ValueError(f"{', '.join(nested)}: a property's value is a string; give "
                         "kafka.config as one mapping ('{sasl.password: x}') in a flag")
    out = {str(key): (str(item).lower() if isinstance(item, bool) else str(item))
           for key, item in value.items()}
    reserved = sorted(RESERVED_KAFKA_PROPERTIES.intersection(out))
    if reserved:
        raise ValueError(f"exportd sets {', '.join(reserved)} itself")
    return out


KafkaProperties = Annotated[dict[str, str], BeforeValidator(kafka_properties)]
"""librdkafka properties for every consumer, producer and admin client of a process."""


def instance_id(fallback: str) -> str:
    """A process id for ZooKeeper: `<hostname>-<6 hex>`, unique even for two processes on one
    host; `fallback` replaces a hostname with nothing usable in it."""
    host = socket.gethostname().split(".")[0].lower()
    cleaned = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in host).strip("-")
    return f"{cleaned or fallback}-{secrets.token_hex(3)}"


class SettingsModel(BaseModel):
    """Base of every settings model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=SettingsModel)


def _set_path(tree: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _value(raw: str) -> Any:
    """A variable's or flag's value: YAML for lists, mappings and double-quoted strings; the
    text between the quotes, verbatim, for a single-quoted one; else the string itself.

    Plain scalars stay strings and the model converts them by the field's type ("15" to 15.0
    for a number, "true" for a bool): parsing them as YAML would turn a group named `2024` into
    a number and a secret like `0x1F` or `no` into something else. The Helm chart passes
    secrets single-quoted (`'$(SECRET)'`): a secret may hold any character, a quote included,
    which YAML's single-quoted style would need doubled.
    """
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    if text.startswith(("[", "{", '"')):
        return yaml.safe_load(raw)
    return raw


def _env_overrides(environ: Mapping[str, str], prefix: str) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    # Shallower names first, so a deeper one lands inside a mapping given whole, whatever the
    # environment's order (EXPORTD_KAFKA__CONFIG='{...}' and EXPORTD_KAFKA__CONFIG__SASL.PASSWORD).
    for name, raw in sorted(environ.items(), key=lambda item: item[0].count("__")):
        if name.startswith(prefix) and len(name) > len(prefix):
            path = name[len(prefix):].lower().split("__")
            _set_path(tree, path, _value(raw))
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(
    model: type[S],
    *,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_prefix: str = "EXPORTD_",
) -> S:
    """Build `model` from a YAML file, then env variables, then `overrides` (flags; dotted keys)."""
    data: dict[str, Any] = {}
    if config_file:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read settings file {config_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"settings file {config_file} must hold a mapping")
        data = loaded
    known = set(model.model_fields)
    env = _env_overrides(os.environ if environ is None else environ, env_prefix)
    # Variables for other processes' settings share the prefix: keep only ours.
    data = _merge(data, {k: v for k, v in env.items() if k in known})
    flag_tree: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(flag_tree, dotted.split("."), value)
    data = _merge(data, flag_tree)
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid {model.__name__}: {problems}") from exc


def parse_set_flags(pairs: Sequence[str]) -> dict[str, Any]:
    """`--set a.b=1 --set c=x` -> {"a.b": "1", "c": "x"}; lists and mappings as YAML."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes key=value, got {pair!r}")
        out[key.strip()] = _value(raw)
    return out
