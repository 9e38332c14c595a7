"""Building runners: `runner_factory(env)` turns an Assignment into a stopped PipelineRunner.

A host (the export server, a test, the benchmark) describes what it offers once in a
`TaskEnvironment` — default Kafka and S3 endpoints and credentials, a state directory, and
optionally a process pool — and calls `runner_factory(env)(assignment)` per task. With a
`ProcessPoolExecutor` (e.g. one worker per core), parse + filter + project run in the pool, so
CPU-bound jobs use every core of the server; without one they run in a thread of the host process.
The environment's `MemoryBudget` is shared by the file bodies of all its tasks (tasks/spool.py):
one per host, so the memory that open files take does not grow with the number of tasks.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tasks.batching import limits_for
from tasks.deadletter import DeadLetterSink, FileDeadLetter, KafkaDeadLetter
from tasks.egress import (
    EgressRefused,
    EgressSettings,
    check_job,
    check_s3_endpoint,
    file_directory,
)
from tasks.fence import WorkerFence
from tasks.iceberg.catalogs import IcebergSettings
from tasks.iceberg.spec import IcebergSink
from tasks.kafka_access import KafkaAccess, bootstrap_key
from tasks.partitioning import PathRenderer, partitioned
from tasks.pipeline import PipelineRunner
from tasks.ratelimit import task_share
from tasks.runner import Assignment, RunnerFactory, TaskRunner
from tasks.sinks.base import Sink
from tasks.sinks.files import FileSinkWriter
from tasks.sinks.http import HttpSinkWriter
from tasks.sinks.iceberg import IcebergSinkWriter
from tasks.sinks.kafka import KafkaSinkWriter
from tasks.sinks.s3 import S3SinkWriter, s3_client
from tasks.source import KafkaSource
from tasks.spec import FileSink, HttpSink, JobSpec, KafkaSink, S3Sink
from tasks.spool import FileBody, MemoryBudget, body_factory
from tasks.transforms.batch import Plan


@dataclass(frozen=True)
class TaskEnvironment:
    """What a host gives every task it runs; a job's spec may override endpoints."""

    kafka_bootstrap: str
    state_dir: Path
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    process_pool: ProcessPoolExecutor | None = field(default=None, compare=False)
    # librdkafka properties (security) of every consumer/producer, by the cluster it reads.
    kafka: KafkaAccess = field(default_factory=KafkaAccess)
    queue_batches: int = 2
    drain_timeout: float = 60.0
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    # In-memory bytes of all open S3/file bodies together; beyond it they spill to state_dir.
    memory_budget: MemoryBudget = field(default_factory=MemoryBudget, compare=False)
    # The worker's own lease (tasks/fence.py): every sink checks it before each side effect.
    # Unbounded for hosts without a lease; a server's workers renew it with each heartbeat ack.
    fence: WorkerFence = field(default_factory=WorkerFence.unbounded, compare=False)
    # Where this host lets jobs send data (tasks/egress.py): its own settings, never the job's.
    egress: EgressSettings = field(default_factory=EgressSettings)
    # The Iceberg catalogs this host offers jobs, by name (tasks/iceberg/catalogs.py).
    iceberg: IcebergSettings = field(default_factory=IcebergSettings)

    def kafka_cluster(self, named: str | None) -> tuple[str, Mapping[str, str | int]]:
        """(bootstrap list, librdkafka properties) of the cluster a spec names, or of ours; an
        unlisted cluster gets none, or is refused (tasks/kafka_access.py)."""
        if named is None or bootstrap_key(named) == bootstrap_key(self.kafka_bootstrap):
            return self.kafka_bootstrap, self.kafka.default
        return named, self.kafka_access().properties(named)

    def kafka_access(self) -> KafkaAccess:
        """`kafka` with this host's bootstrap list as the configured cluster."""
        return dataclasses.replace(self.kafka, home=bootstrap_key(self.kafka_bootstrap))


def _contained(directory: str, root: str, field: str) -> None:
    """The directory, symlinks resolved, is still below the root (its real path)."""
    real, real_root = os.path.realpath(directory), os.path.realpath(root)
    if os.path.commonpath([real, real_root]) != real_root:
        raise EgressRefused(f"{directory} leads outside the file root {root} (a symlink)",
                            field=field)


def egress_checked(env: TaskEnvironment, job: JobSpec) -> JobSpec:
    """The job if this host's egress rules allow it (tasks/egress.py), with its file
    directories made absolute below the file root; EgressRefused otherwise (ConfigError for an
    Iceberg catalog this host does not have), so the task fails with the reason before any
    client is built."""
    check_job(job, env.egress, env.kafka_access())
    sink, dead = job.sink, job.dead_letter
    if isinstance(sink, S3Sink):
        check_s3_endpoint(sink.endpoint_url, env.s3_endpoint, env.egress)
    if isinstance(sink, IcebergSink):   # ConfigError naming the catalogs this host has
        env.iceberg.catalog(sink.catalog)
    if isinstance(sink, FileSink):
        directory = file_directory(sink.directory, env.egress.file_root)
        _contained(directory, env.egress.file_root, "sink.directory")
        job = job.model_copy(update={"sink": sink.model_copy(update={"directory": directory})})
    if dead.type == "file" and dead.directory:
        directory = file_directory(dead.directory, env.egress.file_root,
                                   field="dead_letter.directory")
        _contained(directory, env.egress.file_root, "dead_letter.directory")
        job = job.model_copy(update={"dead_letter": dead.model_copy(
            update={"directory": directory})})
    return job


def _sink(env: TaskEnvironment, a: Assignment, source: KafkaSource) -> Sink:
    spec, job = a.job.sink, a.job
    if isinstance(spec, S3Sink):
        client = s3_client(endpoint_url=spec.endpoint_url or env.s3_endpoint,
                           region=spec.region or env.s3_region, access_key=env.s3_access_key,
                           secret_key=env.s3_secret_key)
        return S3SinkWriter(spec, job.format, client, topic=a.topic, partition=a.partition,
                            fence=env.fence, renderer=_renderer(spec, a))
    if isinstance(spec, HttpSink):
        return HttpSinkWriter(spec, job.format, task_id=a.task_id, backoff_base=env.backoff_base,
                              allow_networks=env.egress.networks(), fence=env.fence)
    if isinstance(spec, IcebergSink):
        return IcebergSinkWriter(spec, job.format, env.iceberg.catalog(spec.catalog),
                                 topic=a.topic, partition=a.partition,
                                 writer=f"{a.task_id}@{a.generation}", fence=env.fence)
    if isinstance(spec, FileSink):
        return FileSinkWriter(spec, job.format, topic=a.topic, partition=a.partition,
                              fence=env.fence, renderer=_renderer(spec, a))
    assert isinstance(spec, KafkaSink)
    bootstrap, properties = env.kafka_cluster(spec.bootstrap_servers)
    # Offsets go into the sink's transaction only on the source's own cluster (sinks/kafka.py).
    same = bootstrap_key(bootstrap) == bootstrap_key(
        env.kafka_cluster(job.source.bootstrap_servers)[0])
    return KafkaSinkWriter(spec, bootstrap=bootstrap, task_id=a.task_id, source=source,
                           fence=env.fence, commits_offsets=same, extra=properties)


def _dead_letter(env: TaskEnvironment, a: Assignment) -> DeadLetterSink:
    spec = a.job.dead_letter
    if spec.type == "file":
        return FileDeadLetter(spec.directory or str(env.state_dir / "dead-letter"),
                              job=a.job.id, topic=a.topic, partition=a.partition)
    bootstrap, properties = env.kafka_cluster(a.job.source.bootstrap_servers)
    return KafkaDeadLetter(a.job.dead_letter_topic, bootstrap=bootstrap,
                           job=a.job.id, source_topic=a.topic, partition=a.partition,
                           task_id=a.task_id, consumer_group=a.job.consumer_group,
                           fence=env.fence, extra=properties)


def _renderer(spec: S3Sink | FileSink, a: Assignment) -> PathRenderer | None:
    """Each record's directory, for a sink whose records go to several (tasks/partitioning.py)."""
    if not partitioned(spec.path, spec.partitioning):
        return None
    return PathRenderer(spec.path, a.topic, a.partition, spec.partitioning)


def _bodies(env: TaskEnvironment, a: Assignment) -> Callable[[], FileBody] | None:
    """S3 and file sinks get their files rendered as chunks fill; HTTP and Kafka take rows, and
    so do sinks whose records go to several directories (split when the chunk closes) and
    Iceberg tables (conformed to the table's schema when the chunk closes)."""
    sink = a.job.sink
    if isinstance(sink, S3Sink | FileSink) and partitioned(sink.path, sink.partitioning):
        return None
    if isinstance(sink, S3Sink):
        return body_factory(a.job.format, env.memory_budget, env.state_dir / "spool")
    if isinstance(sink, FileSink):  # it goes to disk anyway: memory would buy nothing
        # In the sink's directory: the finished body is linked there, not copied (sinks/files.py).
        return body_factory(a.job.format, None, Path(sink.directory))
    return None


def build_runner(env: TaskEnvironment, assignment: Assignment) -> PipelineRunner:
    job = egress_checked(env, assignment.job)
    assignment = dataclasses.replace(assignment, job=job)
    bootstrap, properties = env.kafka_cluster(job.source.bootstrap_servers)
    # The consumer's share of the host's prefetch budget (tasks/budget.py); the operator's
    # librdkafka properties, if they size the queues, win.
    prefetch = env.memory_budget.reserve_prefetch((assignment.task_id, assignment.generation))
    source = KafkaSource(job.source, bootstrap=bootstrap, group=job.consumer_group,
                         partition=assignment.partition, client_id=assignment.task_id,
                         extra={**prefetch, **properties}, topic=assignment.topic)
    return PipelineRunner(
        task_id=assignment.task_id, generation=assignment.generation, source=source,
        sink=_sink(env, assignment, source), dead_letter=_dead_letter(env, assignment),
        plan=Plan.of(job, assignment.partition,
                     allow_networks=tuple(env.egress.http_allow_networks),
                     topic=assignment.topic),
        share=task_share(job.rate_limit, assignment.job_tasks), budget=env.memory_budget,
        limits=limits_for(job),
        pool=env.process_pool, queue_batches=env.queue_batches,
        drain_timeout=env.drain_timeout, backoff_base=env.backoff_base,
        backoff_cap=env.backoff_cap, body_factory=_bodies(env, assignment), fence=env.fence)


def runner_factory(env: TaskEnvironment) -> RunnerFactory:
    """The host's RunnerFactory: `runner_factory(env)(Assignment(...))` -> a stopped runner."""

    def make(assignment: Assignment) -> TaskRunner:
        return build_runner(env, assignment)

    return make
