"""`exportd-server`: load settings, start the task workers, run the host until SIGTERM/SIGINT.

    exportd-server --config server.yaml --set zookeeper.hosts=zk:2181 --set http.port=0

SIGTERM drains every task, sends a final report and deregisters before exiting 0. Tasks run in
worker processes (tasks/workers: one per core unless `capacity.worker_processes` says otherwise),
so CPU-bound pipelines use every core and the host's own loop (heartbeats, leases) never waits
for a task's Python code. The factory is the worker pool's, or `runner_factory` from the
settings, so the host can run (and be tested with) any `RunnerFactory`.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import structlog

from server import metrics
from server.host import ServerHost
from server.sampler import worker_processes
from server.settings import ServerSettings
from tasks.entrypoint import process_main
from tasks.errors import ConfigError
from tasks.logs import get_logger
from tasks.runner import RunnerFactory

if TYPE_CHECKING:
    from tasks.spool import MemoryBudget
    from tasks.workers.pool import WorkerPool

log = get_logger(__name__)


def custom_factory(settings: ServerSettings) -> RunnerFactory:
    """`settings.runner_factory` ("module:function"), called with the settings."""
    module_name, _, function = settings.runner_factory.partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"runner_factory {settings.runner_factory!r}: {exc}") from exc
    factory: RunnerFactory = builder(settings)
    return factory


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def host_budget(settings: ServerSettings) -> MemoryBudget:
    """The host's memory and spill budget from the settings, else from the container's memory
    limit (cgroup v2, then v1) or the machine's RAM, and work_dir's file system."""
    from tasks import budget
    from tasks.spool import MemoryBudget

    total = settings.memory_budget
    if total is None:
        limit = budget.container_limit(_read("/sys/fs/cgroup/memory.max"),
                                       _read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        total = budget.default_budget(limit, psutil.virtual_memory().total)
    spill = settings.spill_budget
    if spill is None:
        work = Path(settings.work_dir)
        where = next((p for p in (work, *work.parents) if p.exists()), Path("/"))
        spill = max(budget.MIN_BUDGET, shutil.disk_usage(where).total // 4)
    log.info("memory_budget", total=total, spill=spill, split=budget.split(total))
    return MemoryBudget.for_host(total, spill)


def task_cap(settings: ServerSettings, host: MemoryBudget | None) -> int | None:
    """The task cap this server reports: `max_tasks` if set, else its memory budget's task
    slots (tasks/budget.py); None without a budget (a custom runner factory) and no setting."""
    from tasks import budget

    total = host.total if host is not None else None
    container = budget.container_limit(_read("/sys/fs/cgroup/memory.max"),
                                       _read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
    processes = settings.capacity.worker_processes or psutil.cpu_count() or 1
    cap = budget.max_tasks(settings.max_tasks, total, container=container, processes=processes)
    source = ("setting" if settings.max_tasks is not None
              else "memory_budget" if cap is not None else "none")
    log.info("max_tasks", max_tasks=cap, source=source, memory_budget=total,
             container_limit=container)
    return cap


def worker_pool(settings: ServerSettings) -> WorkerPool:
    """The pipeline's task workers, with this server's Kafka and S3 defaults."""
    # Imported here: the pipeline pulls in confluent-kafka, boto3 and the sinks, which a host
    # with another factory (tests, embedding) does not need.
    from tasks.factory import TaskEnvironment
    from tasks.fence import WorkerFence
    from tasks.workers.pool import WorkerPool

    env = TaskEnvironment(
        memory_budget=host_budget(settings),
        kafka_bootstrap=settings.kafka.bootstrap_servers,
        kafka=settings.kafka.access(),
        egress=settings.egress,
        iceberg=settings.iceberg,
        state_dir=Path(settings.work_dir),
        s3_endpoint=settings.s3.endpoint_url,
        s3_region=settings.s3.region,
        s3_access_key=settings.s3.access_key_id,
        s3_secret_key=settings.s3.secret_access_key,
        # Fenced until the first ack renews the lease (ServerHost on_lease -> renew_lease); the
        # workers stop writing half the margin before the main process self-fences.
        fence=WorkerFence(deadline=-math.inf, margin_s=settings.lease.margin / 2),
    )
    # A fence starts `lease.margin` before the leader may reassign the tasks: a worker that has
    # not stopped them by half of it is killed, so they are gone before the lease is.
    return WorkerPool(env, worker_processes(settings.capacity),
                      log_json=settings.log_format == "json", log_level=settings.log_level,
                      log_context={"server": settings.id},
                      abort_timeout_s=max(settings.lease.margin / 2, 0.2))


async def run(settings: ServerSettings) -> int:
    structlog.contextvars.bind_contextvars(server=settings.id)
    settings.tls.require()   # before the workers start: one clear line, exit 1
    pool = None if settings.runner_factory else worker_pool(settings)
    try:
        if pool is not None:
            metrics.register_budget(pool.budget)
            pool.start()
            # Registered only once the workers are up: the sampler's baseline is taken when the
            # host is built, and the workers' start-up (the forkserver's imports, ~0.5 s of CPU)
            # reported as load made a small server look full for its first heartbeats.
            await pool.wait_ready()
        factory = pool.factory if pool is not None else custom_factory(settings)
        host = ServerHost(settings, factory,
                          on_lease=pool.renew_lease if pool is not None else None,
                          max_tasks=task_cap(settings, pool.budget if pool is not None else None))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await host.start()
        log.info("serving", http=host.address, workers=pool.size if pool else 0)
        await stop.wait()
        log.info("signal_received")
        await host.shutdown()
        return 0
    finally:
        if pool is not None:
            await pool.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    return process_main("exportd-server", __doc__, ServerSettings, run, argv)


if __name__ == "__main__":
    sys.exit(main())
