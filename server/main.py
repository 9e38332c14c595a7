"""`exportd-server`: load settings, build the task factory, run the host until SIGTERM/SIGINT.

    exportd-server --config server.yaml --set zookeeper.hosts=zk:2181 --set http.port=0

SIGTERM drains every task, sends a final report and deregisters before exiting 0. The factory
comes from the pipeline (`tasks.factory`), or from `runner_factory` in the settings, so the host
can run (and be tested with) any `RunnerFactory`. A process pool with one worker per core is
shared by all tasks, so CPU-bound transforms use every core.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import structlog

from server.host import ServerHost
from server.sampler import worker_processes
from server.settings import ServerSettings
from tasks.entrypoint import process_main
from tasks.errors import ConfigError
from tasks.logs import get_logger
from tasks.runner import RunnerFactory

log = get_logger(__name__)


def build_factory(settings: ServerSettings, pool: ProcessPoolExecutor) -> RunnerFactory:
    """`settings.runner_factory(settings, pool)` if configured, else the pipeline's
    `tasks.factory.runner_factory(TaskEnvironment(...))` with this server's defaults and pool."""
    if settings.runner_factory:
        module_name, _, function = settings.runner_factory.partition(":")
        try:
            builder = getattr(importlib.import_module(module_name), function)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"runner_factory {settings.runner_factory!r}: {exc}") from exc
        custom: RunnerFactory = builder(settings, pool)
        return custom
    # Imported here: the pipeline pulls in confluent-kafka, boto3 and the sinks, which a host
    # with another factory (tests, embedding) does not need.
    from tasks.factory import TaskEnvironment, runner_factory

    return runner_factory(TaskEnvironment(
        kafka_bootstrap=settings.kafka.bootstrap_servers,
        state_dir=Path(settings.work_dir),
        s3_endpoint=settings.s3.endpoint_url,
        s3_region=settings.s3.region,
        s3_access_key=settings.s3.access_key_id,
        s3_secret_key=settings.s3.secret_access_key,
        process_pool=pool,
    ))


async def run(settings: ServerSettings) -> int:
    structlog.contextvars.bind_contextvars(server=settings.id)
    workers = worker_processes(settings.capacity)
    # forkserver: forking this process after grpc and kazoo started their threads is unsafe.
    pool = ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context("forkserver"))
    try:
        host = ServerHost(settings, build_factory(settings, pool))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await host.start()
        log.info("serving", http=host.address, workers=workers)
        await stop.wait()
        log.info("signal_received")
        await host.shutdown()
        return 0
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def main(argv: Sequence[str] | None = None) -> int:
    return process_main("exportd-server", __doc__, ServerSettings, run, argv)


if __name__ == "__main__":
    sys.exit(main())
