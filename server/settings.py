"""Settings of one export server (`exportd-server`), loaded with tasks.settings.load_settings.

YAML file (`--config`), then `EXPORTD_*` variables (`EXPORTD_ZOOKEEPER__HOSTS`), then flags
(`--set zookeeper.hosts=...`). Durations are human strings ("5s"). Kafka and S3 here are the
defaults a job falls back to when its spec names none.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from tasks.cluster import ZooKeeperSettings
from tasks.egress import EgressSettings
from tasks.entrypoint import ListenSettings, ProcessSettings
from tasks.iceberg.catalogs import IcebergSettings
from tasks.kafka_access import KafkaClientSettings
from tasks.settings import Duration, SettingsModel, instance_id
from tasks.tls import TlsSettings

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
          "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2,
          "gib": 1024**3, "tib": 1024**4}


def parse_bytes(value: Any) -> Any:
    """"512MiB", "2GB", "1.5 GiB" or a number of bytes."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", value)
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"not a size: {value!r} (e.g. 512MiB, 2GB)")
        return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    return value


ByteSize = Annotated[int, BeforeValidator(parse_bytes), Field(gt=0)]


def default_server_id() -> str:
    """`<hostname>-<6 hex>`: unique per process even when two servers share a host."""
    return instance_id("server")


class HttpSettings(ListenSettings):
    """The server's /metrics and /healthz endpoint; its advertised address is what the master
    is told to reach it at."""

    port: int = Field(default=8090, ge=0, le=65535)   # 0: any free port


class KafkaSettings(KafkaClientSettings):
    """The cluster tasks read from unless their job names another, and the librdkafka
    properties of every consumer and producer, by cluster (tasks/kafka_access.py)."""


class S3Settings(SettingsModel):
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None


class CapacitySettings(SettingsModel):
    """What this server offers the scheduler. None: measured (cores from psutil)."""

    cpu_cores: float | None = Field(default=None, gt=0)
    # 125 MB/s: a 1 Gbit/s NIC. The NIC speed psutil reports is often 0 or wrong in VMs.
    net_bytes_per_s: float = Field(default=125_000_000.0, gt=0)
    # Processes the server's tasks run in (tasks/workers); None: one per core.
    worker_processes: int | None = Field(default=None, gt=0)
    # Several servers on one host (`make dev`, tests): the host's network counters belong to
    # all of them, so report no network usage beyond what our tasks measure themselves.
    shared_host: bool = False


class LeaseSettings(SettingsModel):
    # Self-fence this long before the leader's lease_ttl runs out, to absorb clock-rate drift
    # and the time a stop takes.
    margin: Duration = 2.0
    # Until the first ack tells us, send reports this often.
    initial_heartbeat_interval: Duration = 1.0


class SessionSettings(SettingsModel):
    reconnect_min: Duration = 0.2
    reconnect_max: Duration = 5.0
    # SIGTERM: how long all tasks get to drain before the server exits anyway.
    shutdown_timeout: Duration = 60.0
    # A FAILED task that is still desired is restarted after this long.
    restart_backoff: Duration = 5.0


class ServerSettings(ProcessSettings):
    id: str = Field(default_factory=default_server_id, min_length=1, max_length=128)
    group: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    zookeeper: ZooKeeperSettings = ZooKeeperSettings()
    http: HttpSettings = HttpSettings()
    # The cluster CA and this server's certificate (SAN exportd://<cluster>/server/<id>):
    # mTLS on the heartbeat session (docs/SECURITY.md).
    tls: TlsSettings = TlsSettings()
    kafka: KafkaSettings = KafkaSettings()
    s3: S3Settings = S3Settings()
    # Where tasks may send data and credentials (tasks/egress.py): HTTP networks, S3 endpoints,
    # the file root. Enforced from these settings, never from a job.
    egress: EgressSettings = EgressSettings()
    # The Iceberg catalogs jobs may name (tasks/iceberg/catalogs.py); none by default.
    iceberg: IcebergSettings = IcebergSettings()
    work_dir: str = "/var/lib/exportd"
    capacity: CapacitySettings = CapacitySettings()
    lease: LeaseSettings = LeaseSettings()
    session: SessionSettings = SessionSettings()
    # The memory the server's task processes may use for prefetch, batches, file bodies and
    # uploads, all workers together (tasks/budget.py); None: half the container's memory limit
    # (cgroup v2/v1), else a quarter of the machine's RAM. The processes' own ~60-80 MB each
    # come on top (docs/OPERATIONS.md, "Memory and disk").
    memory_budget: ByteSize | None = None
    # Bytes of file bodies spilled to `work_dir`/spool beyond the memory budget; when full,
    # files are cut early and sources pause. None: a quarter of work_dir's file system.
    spill_budget: ByteSize | None = None
    # The most tasks this server takes (reported to the leader; the scheduler places nothing
    # beyond it). None: the memory budget's task slots (tasks/budget.py task_slots: 256 per
    # 512 MiB); with a custom runner_factory, which the budget does not govern, no cap.
    max_tasks: int | None = Field(default=None, ge=1)
    # "module:function" building the RunnerFactory from the settings; empty: the pipeline's,
    # in worker processes (tasks/workers). For embedding other task kinds, and for tests.
    runner_factory: str = ""

    @model_validator(mode="after")
    def _id_is_a_znode_name(self) -> ServerSettings:
        if "/" in self.id or self.id in {".", ".."}:
            raise ValueError("id must be a valid znode name (no '/')")
        return self
