"""Which librdkafka properties (SASL, TLS) a Kafka client gets, by the cluster it connects to.

A job reads from the process's configured cluster (`kafka.bootstrap_servers`) unless its spec
names another (`source.bootstrap_servers`, a Kafka sink's `bootstrap_servers`). Clients of the
configured cluster get `kafka.config`. Another cluster gets the `config` of the `kafka.clusters`
entry with its bootstrap list, for clusters with their own credentials or none at all. A cluster
neither names is unlisted: a job naming one is refused (a 400 from the masters, a failed task on
a server), unless `kafka.allow_unlisted_clusters` is true, and then its clients get NO properties
at all — credentials go only to the cluster they were configured for:

    kafka:
      bootstrap_servers: kafka-a:9093
      config: {security.protocol: SASL_SSL, sasl.mechanism: SCRAM-SHA-512, sasl.username: x}
      clusters:
        legacy: {bootstrap_servers: "old-1:9092,old-2:9092", config: {}}   # plaintext

A secret comes from the environment like any setting:
`EXPORTD_KAFKA__CLUSTERS__LEGACY__CONFIG__SASL.PASSWORD`. Masters (partition counts) and servers
(tasks) choose the same way, so both need the same `kafka` block.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import Field, field_validator, model_validator

from tasks.errors import ValidationError
from tasks.settings import KafkaProperties, SettingsModel

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")


def bootstrap_key(bootstrap: str) -> frozenset[str]:
    """A bootstrap list as a set of host:port: the same cluster however its list is ordered."""
    return frozenset(part.strip() for part in bootstrap.split(",") if part.strip())


class KafkaCluster(SettingsModel):
    """Another cluster jobs may name, and the properties its clients use instead of
    `kafka.config`."""

    bootstrap_servers: str = Field(min_length=1)
    config: KafkaProperties = {}


class KafkaClientSettings(SettingsModel):
    """The part of a process's `kafka` block that says how its clients connect."""

    bootstrap_servers: str = "127.0.0.1:9092"
    # librdkafka properties for every client of the configured cluster (SASL, TLS, tuning), e.g.
    # {security.protocol: SASL_SSL, sasl.mechanism: SCRAM-SHA-512}; a secret can come from
    # EXPORTD_KAFKA__CONFIG__SASL.PASSWORD. Also for other clusters no `clusters` entry names.
    config: KafkaProperties = {}
    # Other clusters by a name of your choice (lowercase: it appears in variable names).
    clusters: dict[str, KafkaCluster] = {}
    # A job may name a cluster that is neither bootstrap_servers nor in `clusters`; its clients
    # then get no properties (no credentials). False: such a job is refused.
    allow_unlisted_clusters: bool = False

    @field_validator("clusters")
    @classmethod
    def _names(cls, value: dict[str, KafkaCluster]) -> dict[str, KafkaCluster]:
        bad = sorted(name for name in value if not _NAME.match(name))
        if bad:
            raise ValueError(f"{', '.join(bad)}: a cluster's name is lowercase letters, "
                             "digits, '-' and '_' (it is part of EXPORTD_KAFKA__CLUSTERS__<NAME>__"
                             "... variables)")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> KafkaClientSettings:
        seen = {bootstrap_key(self.bootstrap_servers): "bootstrap_servers"}
        for name, cluster in sorted(self.clusters.items()):
            key = bootstrap_key(cluster.bootstrap_servers)
            if key in seen:
                raise ValueError(f"clusters.{name} has the bootstrap list of {seen[key]}: "
                                 "one cluster, one set of properties")
            seen[key] = f"clusters.{name}"
        return self

    def access(self) -> KafkaAccess:
        return KafkaAccess(self.config, {bootstrap_key(c.bootstrap_servers): c.config
                                         for c in self.clusters.values()},
                           home=bootstrap_key(self.bootstrap_servers),
                           allow_unlisted=self.allow_unlisted_clusters)


@dataclass(frozen=True)
class KafkaAccess:
    """The choice itself, picklable (it travels to worker processes with a task's
    environment)."""

    default: Mapping[str, str | int] = field(default_factory=dict)
    clusters: Mapping[frozenset[str], Mapping[str, str | int]] = field(default_factory=dict)
    home: frozenset[str] = frozenset()     # the configured cluster's bootstrap list
    allow_unlisted: bool = False

    def check(self, bootstrap: str | None, *, field: str = "bootstrap_servers") -> None:
        """May a job name the cluster at `bootstrap` (None: the configured one)?"""
        key = bootstrap_key(bootstrap or "")
        if bootstrap is None or key == self.home or key in self.clusters or self.allow_unlisted:
            return
        raise UnlistedCluster(
            f"{bootstrap} is not a configured Kafka cluster: name kafka.bootstrap_servers or a "
            "kafka.clusters entry (or set kafka.allow_unlisted_clusters, and it gets no "
            "credentials)", field=field)

    def properties(self, bootstrap: str) -> Mapping[str, str | int]:
        """The properties for a client of the cluster at `bootstrap`: the configured cluster's,
        a `clusters` entry's, or none for an allowed unlisted one; UnlistedCluster otherwise."""
        key = bootstrap_key(bootstrap)
        if key == self.home:
            return self.default
        if key in self.clusters:
            return self.clusters[key]
        self.check(bootstrap)
        return {}


class UnlistedCluster(ValidationError):
    """A job names a Kafka cluster the process is not configured for."""
