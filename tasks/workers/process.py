"""A task worker process: runs the PipelineRunners a server hands it, on its own asyncio loop.

`worker_main` is the process's entry point (multiprocessing). A thread reads the server's
requests from the pipe and passes them to the loop; each start or stop runs as its own asyncio
task and is answered with a `Done`; every `stats_period_s` the worker sends its tasks' stats.

Every task's side effects are fenced by the worker's own copy of the server's lease deadline
(`LeaseUpdate`, tasks/fence.py): when the server's main process is stopped or wedged and sends
no more renewals, the worker's tasks stop writing at the deadline by themselves.

When the pipe closes without a `Shutdown` — the server process died, e.g. kill -9 — the worker
stops every task at once, without draining: nothing more is delivered or committed, exactly as
if the worker had died with it, and the consumers are closed instead of lingering. (The server's
lease has not been renewed either; the leader reassigns the tasks after it expires.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import structlog

from tasks.factory import TaskEnvironment, runner_factory
from tasks.logs import configure_logging, get_logger
from tasks.runner import TaskRunner, TaskState, TaskStats, safe_stats
from tasks.workers.protocol import (
    STATS_PERIOD_S,
    Done,
    FromWorker,
    LeaseUpdate,
    Ready,
    Shutdown,
    StartTask,
    StatsReport,
    StopTask,
    TaskKey,
)
from tasks.workers.tuning import (
    MALLOC_ARENAS,
    TRIM_PERIOD_S,
    give_back_memory,
    tune_worker_process,
)

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker process is started with (pickled to it)."""

    index: int
    env: TaskEnvironment
    log_json: bool = True
    log_level: str = "info"
    log_context: tuple[tuple[str, str], ...] = ()
    stats_period_s: float = STATS_PERIOD_S
    # malloc_trim every this many seconds (0: never); glibc arenas (0: glibc's default).
    trim_period_s: float = TRIM_PERIOD_S
    malloc_arenas: int = MALLOC_ARENAS


def error_text(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}"


class Worker:
    """The worker's state: its runners, and the pipe back to the server."""

    def __init__(self, conn: Connection, env: TaskEnvironment) -> None:
        self.conn = conn
        self.fence = env.fence
        self.budget = env.memory_budget   # the host's, shared (tasks/spool.py)
        self.make = runner_factory(env)
        self.runners: dict[TaskKey, TaskRunner] = {}
        self.ops: set[asyncio.Task[None]] = set()
        self._send_lock = threading.Lock()

    def send(self, message: FromWorker) -> None:
        with self._send_lock, contextlib.suppress(OSError, ValueError):
            self.conn.send(message)   # the server is gone: nobody to tell

    def _spawn(self, coro: Any) -> None:
        op = asyncio.ensure_future(coro)
        self.ops.add(op)
        op.add_done_callback(self.ops.discard)

    def handle(self, message: object) -> bool:
        """Dispatch one request; False when the worker should exit."""
        if isinstance(message, StartTask):
            self._spawn(self._start(message))
        elif isinstance(message, StopTask):
            self._spawn(self._stop(message))
        elif isinstance(message, LeaseUpdate):
            self.fence.renew(message.deadline)
        elif isinstance(message, Shutdown):
            return False
        else:
            log.warning("unknown_request", type=type(message).__name__)
        return True

    async def _start(self, req: StartTask) -> None:
        a = req.assignment
        key = (a.task_id, a.generation)
        try:
            runner = self.make(a)
            self.runners[key] = runner
            await runner.start()
        except Exception as exc:
            self.runners.pop(key, None)  # a runner that failed to start has closed itself
            self.budget.release_prefetch(key)
            self.send(Done(req.request, error_text(exc)))
            return
        self.send(Done(req.request))

    async def _stop(self, req: StopTask) -> None:
        runner = self.runners.get(req.key)
        if runner is None:  # never started, or already stopped
            self.send(Done(req.request, stats=TaskStats(TaskState.STOPPED)))
            return
        try:
            await runner.stop(drain=req.drain)
        except Exception as exc:
            self.send(Done(req.request, error_text(exc), stats=safe_stats(runner)))
            return
        finally:
            self.runners.pop(req.key, None)
            self.budget.release_prefetch(req.key)   # its consumer is closed
        self.send(Done(req.request, stats=safe_stats(runner)))

    def report(self) -> None:
        self.send(StatsReport({key: safe_stats(r) for key, r in self.runners.items()}))

    async def abort_all(self) -> None:
        for op in list(self.ops):
            op.cancel()
        await asyncio.gather(*self.ops, return_exceptions=True)
        await asyncio.gather(*(r.stop(drain=False) for r in self.runners.values()),
                             return_exceptions=True)
        for key in self.runners:
            self.budget.release_prefetch(key)
        self.runners.clear()


def _read(conn: Connection, loop: asyncio.AbstractEventLoop,
          inbox: asyncio.Queue[object | None]) -> None:
    """The reader thread: requests to the loop; None once the pipe is closed."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            loop.call_soon_threadsafe(inbox.put_nowait, None)
            return
        loop.call_soon_threadsafe(inbox.put_nowait, message)
        if isinstance(message, Shutdown):
            return


async def _report(worker: Worker, period: float, trim_period: float) -> None:
    trimmed = time.monotonic()
    while True:
        await asyncio.sleep(period)
        worker.report()
        if trim_period > 0 and time.monotonic() - trimmed >= trim_period:
            # Give freed heap back to the OS after upload waves (tasks/workers/tuning.py).
            await asyncio.to_thread(give_back_memory)
            trimmed = time.monotonic()


async def serve(conn: Connection, env: TaskEnvironment,
                stats_period_s: float = STATS_PERIOD_S, trim_period_s: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[object | None] = asyncio.Queue()
    worker = Worker(conn, env)
    threading.Thread(target=_read, args=(conn, loop, inbox), name="requests",
                     daemon=True).start()
    worker.send(Ready(os.getpid()))
    reporter = asyncio.create_task(_report(worker, stats_period_s, trim_period_s))
    try:
        while True:
            message = await inbox.get()
            if message is None:
                log.warning("server_gone", tasks=len(worker.runners))
                break
            if not worker.handle(message):
                break
    finally:
        reporter.cancel()
        await worker.abort_all()
        worker.report()


def worker_main(conn: Connection, config: WorkerConfig) -> None:
    """The process's entry point."""
    # The server decides when tasks stop (drain on SIGTERM, abort on a lost lease): a Ctrl-C or
    # a SIGTERM sent to the whole process group must not kill its workers under it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(json=config.log_json, level=config.log_level)
    structlog.contextvars.bind_contextvars(**dict(config.log_context), worker=config.index)
    tune_worker_process(malloc_arenas=config.malloc_arenas)
    config.env.memory_budget.owner = config.index   # its prefetch reservations are this worker's
    asyncio.run(serve(conn, config.env, config.stats_period_s, config.trim_period_s))
    conn.close()
