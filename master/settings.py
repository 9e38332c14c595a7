"""Settings of one master (`exportd-master`), loaded with tasks.settings.load_settings.

YAML file (`--config`), then `EXPORTD_*` variables (`EXPORTD_ZOOKEEPER__HOSTS`), then flags
(`--set zookeeper.hosts=...`). Durations are human strings ("5s"). Lease and heartbeat defaults
are chosen together with the server's (docs/architecture/master.md, "Lease timing").
"""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from master.api.auth import check_auth_mode
from master.api.settings import ApiSettings
from tasks.cluster import ZooKeeperSettings
from tasks.egress import EgressSettings
from tasks.entrypoint import ListenSettings, ProcessSettings
from tasks.iceberg.catalogs import IcebergSettings
from tasks.kafka_access import KafkaClientSettings
from tasks.settings import Duration, SettingsModel, instance_id
from tasks.tls import TlsSettings


def default_master_id() -> str:
    return instance_id("master")


class KafkaSettings(KafkaClientSettings):
    """Where job topics' partition counts are read from (`bootstrap_servers` when a job names no
    cluster of its own), with the same `config` and `clusters` as the servers' (kafka_access)."""

    metadata_timeout: Duration = 10.0
    # How often every job's topics are checked for partitions added later.
    partition_check_interval: Duration = 30.0


class SchedulerSettings(SettingsModel):
    """The knobs of scheduler.model.Config (DESIGN.md, "Scheduler")."""

    high_watermark: float = Field(default=0.85, gt=0, le=1)
    target_watermark: float = Field(default=0.70, gt=0, le=1)
    imbalance_threshold: float = Field(default=0.10, ge=0)
    min_gain: float = Field(default=0.02, ge=0)
    move_budget: int = Field(default=20, ge=0)
    cooldown: Duration = 300.0
    drain_budget: int = Field(default=50, ge=0)
    default_cpu_estimate: float = Field(default=0.05, ge=0)
    default_net_estimate: float = Field(default=256 * 1024, ge=0)


class MasterSettings(ProcessSettings):
    id: str = Field(default_factory=default_master_id, min_length=1, max_length=128)
    # A crashed leader is replaced after about its session timeout: shorter than a server's.
    zookeeper: ZooKeeperSettings = ZooKeeperSettings(session_timeout=6.0)
    grpc: ListenSettings = ListenSettings(port=9400)
    # The cluster CA and this master's certificate (SAN exportd://<cluster>/master/<id>):
    # mTLS on the heartbeat sessions (docs/SECURITY.md).
    tls: TlsSettings = TlsSettings()
    http: ListenSettings = ListenSettings(port=8080)
    kafka: KafkaSettings = KafkaSettings()
    # The servers' egress rules (tasks/egress.py), checked when a job is created (a 400): give
    # masters the same `egress` and `kafka` blocks as servers.
    egress: EgressSettings = EgressSettings()
    # The Iceberg catalogs jobs may name (tasks/iceberg/catalogs.py): the leader commits to
    # them. Give masters the same `iceberg` block as servers.
    iceberg: IcebergSettings = IcebergSettings()
    # A server with no report for this long is dead and its tasks are evacuated. Servers stop
    # their tasks by themselves `lease.margin` earlier (server settings).
    lease_ttl: Duration = 15.0
    # Reports per second the leader accepts across the cluster; the interval it hands out is
    # max(min_heartbeat_interval, servers / budget).
    heartbeat_budget: float = Field(default=500.0, gt=0)
    min_heartbeat_interval: Duration = 1.0
    # A reconcile round runs on every event, at most this often, and at least every interval.
    reconcile_interval: Duration = 1.0
    reconcile_min_gap: Duration = 0.05
    # With no event, a round re-plans (rebalance from drifting loads) every
    # plan_seconds / plan_time_share, kept within [plan_interval_min, plan_interval_max]: a small
    # cluster re-plans every few seconds, a 100k-task one (~0.5 s a plan) every 30 s.
    plan_interval_min: Duration = 5.0
    plan_interval_max: Duration = 30.0
    plan_time_share: float = Field(default=0.02, gt=0, le=1)
    # Weight of the newest sample in the per-task load EWMA.
    load_ewma_alpha: float = Field(default=0.3, gt=0, le=1)
    # Events kept per task for `get_task` / explain.
    task_history: int = Field(default=50, ge=1, le=10_000)
    # How often the leader writes changed task stories to ZooKeeper (master/story.py): what a
    # failover can lose of them.
    story_flush_interval: Duration = 5.0
    # Assignment shards: fixed for a cluster's lifetime (100k tasks / 64 = ~1.6k per node).
    assignment_shards: int = Field(default=64, ge=1, le=4096)
    scheduler: SchedulerSettings = SchedulerSettings()
    # Tokens are required (a master without any refuses to start), unless `api.auth: none` on
    # a loopback http.host (master/api/auth.py, check_auth_mode).
    api: ApiSettings = Field(default_factory=ApiSettings, validate_default=True)

    @field_validator("api")
    @classmethod
    def _api_auth(cls, api: ApiSettings, info: ValidationInfo) -> ApiSettings:
        http = info.data.get("http")
        problem = check_auth_mode(api, http.host if isinstance(http, ListenSettings) else "")
        if problem:
            raise PydanticCustomError("api_auth", problem)
        return api

    @model_validator(mode="after")
    def _check(self) -> MasterSettings:
        if "/" in self.id or self.id in {".", ".."}:
            raise ValueError("id must be a valid znode name (no '/')")
        if self.lease_ttl <= self.min_heartbeat_interval:
            raise ValueError("lease_ttl must be longer than min_heartbeat_interval")
        return self

    def api_settings(self) -> ApiSettings:
        """The API's settings with this master's id filled in."""
        if self.api.master_id:
            return self.api
        return self.api.model_copy(update={"master_id": self.id})
