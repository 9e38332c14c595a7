"""The server's side of its task worker processes: start them, place tasks, proxy runners.

`WorkerPool(env, processes)` starts that many worker processes (forkserver: the server already
runs gRPC and ZooKeeper threads, which must not be forked) and `pool.factory` is the server's
RunnerFactory: each runner it makes is a `WorkerRunner`, which starts its task on the worker with
the fewest tasks (then the least CPU) and stays there. A thread per worker reads its messages and
passes them to the event loop.

A worker that dies takes its tasks with it: they report FAILED ("worker process exited") and
the host restarts them as it does any failed task — on a fresh worker that replaces the dead one
at its next start. A stop of a task whose worker is gone returns at once: the task no longer
runs, and whatever it had not committed will be read again by its next owner (exactly-once files
by deterministic names; docs/architecture/pipeline.md). A stop without drain — a fence after a
lost lease — that the worker does not answer within ABORT_TIMEOUT_S (a wedged or stopped
process) kills the worker: the fence must hold whatever the worker's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import multiprocessing
import threading
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext

from tasks.errors import ExportdError
from tasks.factory import TaskEnvironment
from tasks.fence import WorkerFence
from tasks.logs import get_logger
from tasks.runner import Assignment, TaskRunner, TaskState, TaskStats
from tasks.workers.process import WorkerConfig, worker_main
from tasks.workers.protocol import (
    STATS_PERIOD_S,
    Done,
    LeaseUpdate,
    Ready,
    Shutdown,
    StartTask,
    StatsReport,
    StopTask,
    TaskKey,
    ToWorker,
)
from tasks.workers.tuning import MALLOC_ARENAS, TRIM_PERIOD_S

log = get_logger(__name__)

# Imported by the forkserver once, so each worker starts without importing the pipeline again
# (nor loading botocore's S3 model: tasks/workers/warmup.py).
PRELOAD = ["tasks.workers.process", "tasks.workers.warmup"]
# How long closing the pool waits for a worker to exit before killing it.
EXIT_TIMEOUT_S = 10.0
# A stop without drain (a fence: the lease is lost) that a worker has not answered after this
# long is made certain by killing the worker: its tasks must not go on committing.
ABORT_TIMEOUT_S = 5.0


class WorkerError(ExportdError):
    """A request to a task worker failed, or the worker process is gone."""

    code = "worker"


class WorkerProcess:
    """One worker process and the pipe to it. Use from the event loop's thread only (the reader
    thread hands messages over with call_soon_threadsafe)."""

    def __init__(self, index: int, ctx: BaseContext, config: WorkerConfig,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.index = index
        self._loop = loop
        self._requests = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Done]] = {}
        self.stats: dict[TaskKey, TaskStats] = {}
        self.tasks: set[TaskKey] = set()
        self.exit_reason = ""
        self.ready = asyncio.Event()
        self.exited = asyncio.Event()
        conn, child = ctx.Pipe(duplex=True)
        self._conn: Connection = conn
        self.process = ctx.Process(  # type: ignore[attr-defined]
            target=worker_main, args=(child, config), name=f"exportd-worker-{index}",
            daemon=True)
        self.process.start()
        child.close()
        self._reader = threading.Thread(target=self._read, name=f"worker-{index}-reader",
                                        daemon=True)
        self._reader.start()
        log.info("worker_started", worker=index, pid=self.process.pid)

    @property
    def alive(self) -> bool:
        return not self.exit_reason

    @property
    def cpu(self) -> float:
        return sum(s.cpu_seconds_per_s for s in self.stats.values())

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError, TypeError):  # TypeError: closed here meanwhile
                # Reaped here, not on the loop: the join may wait for the process to finish.
                self.process.join(timeout=5.0)
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    self._loop.call_soon_threadsafe(self._gone)
                return
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._receive, message)

    def _receive(self, message: object) -> None:
        if isinstance(message, Ready):
            self.ready.set()
        elif isinstance(message, StatsReport):
            self.stats = {k: v for k, v in message.stats.items() if k in self.tasks}
        elif isinstance(message, Done):
            future = self._pending.pop(message.request, None)
            if future is not None and not future.done():
                future.set_result(message)

    def _gone(self) -> None:
        code = self.process.exitcode
        self.exit_reason = f"worker process {self.index} exited (exit code {code})"
        if self.tasks:
            log.error("worker_exited", worker=self.index, exitcode=code, tasks=len(self.tasks))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerError(self.exit_reason))
        self._pending.clear()
        self.ready.set()   # nobody waits for a dead worker
        self.exited.set()

    async def request(self, make: type[StartTask] | type[StopTask], *args: object) -> Done:
        if not self.alive:
            raise WorkerError(self.exit_reason)
        number = next(self._requests)
        future: asyncio.Future[Done] = self._loop.create_future()
        self._pending[number] = future
        try:
            self._conn.send(make(number, *args))  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            self._pending.pop(number, None)
            raise WorkerError(f"worker process {self.index}: {exc}") from exc
        return await future

    def send(self, message: ToWorker) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(message)

    async def kill(self, timeout: float = EXIT_TIMEOUT_S) -> None:
        """SIGKILL, and wait until the reader has seen the process go."""
        self.process.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.exited.wait(), timeout)

    def close(self, timeout: float = EXIT_TIMEOUT_S) -> None:
        """Tell the worker to stop its tasks and exit; kill it if it does not. Blocking."""
        self.send(Shutdown())
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self._conn.close()


class WorkerPool:
    """`processes` task workers for one server. `factory` makes its runners; `close()` stops
    every worker (after the host has stopped its tasks)."""

    def __init__(self, env: TaskEnvironment, processes: int, *, log_json: bool = True,
                 log_level: str = "info", log_context: dict[str, str] | None = None,
                 start_method: str = "forkserver",
                 stats_period_s: float = STATS_PERIOD_S,
                 abort_timeout_s: float = ABORT_TIMEOUT_S,
                 trim_period_s: float = TRIM_PERIOD_S,
                 malloc_arenas: int = MALLOC_ARENAS) -> None:
        if processes < 1:
            raise ValueError("a worker pool needs at least one process")
        ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            ctx.set_forkserver_preload(PRELOAD)
        self._ctx = ctx
        # One budget for the whole host: its counters live in shared memory and every worker
        # gets them when it starts (tasks/spool.py), so a busy worker may use what an idle one
        # does not (the budget was split `limit // processes` before, while the docs said shared).
        self.budget = env.memory_budget
        self._env = dataclasses.replace(env, process_pool=None)
        self._log = (log_json, log_level, tuple(sorted((log_context or {}).items())))
        # The lease deadline the workers hold (tasks/fence.py), from the env's fence until the
        # first renewal: a server builds its env fenced (-inf), so nothing is written before it.
        self._deadline = env.fence.deadline
        self._stats_period_s = stats_period_s
        self._malloc = (trim_period_s, malloc_arenas)
        self.abort_timeout_s = abort_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self.size = processes
        self.workers: list[WorkerProcess] = []

    def start(self) -> None:
        """Start the processes (from the event loop that will use them)."""
        self._loop = asyncio.get_running_loop()
        self.workers = [self._spawn(i) for i in range(self.size)]

    async def wait_ready(self) -> None:
        """Until every worker has imported the pipeline (or died); tasks may start before."""
        await asyncio.gather(*(w.ready.wait() for w in self.workers))

    def renew_lease(self, deadline: float) -> None:
        """The server's lease now runs until `deadline` (time.monotonic; -inf: revoked): tell
        every worker, and start new workers with it."""
        self._deadline = deadline
        for worker in self.workers:
            if worker.alive:
                worker.send(LeaseUpdate(deadline))

    def _spawn(self, index: int) -> WorkerProcess:
        assert self._loop is not None, "WorkerPool.start() first"
        log_json, log_level, context = self._log
        fence = WorkerFence(deadline=self._deadline, margin_s=self._env.fence.margin_s)
        config = WorkerConfig(index, dataclasses.replace(self._env, fence=fence), log_json,
                              log_level, context, self._stats_period_s, *self._malloc)
        return WorkerProcess(index, self._ctx, config, self._loop)

    def pick(self) -> WorkerProcess:
        """The worker for a new task: fewest tasks, then least CPU. A dead one is replaced."""
        if not self.workers:
            self.start()
        for i, worker in enumerate(self.workers):
            if not worker.alive and not worker.tasks:
                self._replace(i)
        alive = [w for w in self.workers if w.alive] or [self._replace(0)]
        return min(alive, key=lambda w: (len(w.tasks), w.cpu, w.index))

    def _replace(self, i: int) -> WorkerProcess:
        """A new process in dead worker `i`'s place, given back what its consumers had
        reserved of the prefetch budget."""
        index = self.workers[i].index
        self.budget.forget_owner(index)
        self.workers[i] = self._spawn(index)
        return self.workers[i]

    def factory(self, assignment: Assignment) -> TaskRunner:
        """The server's RunnerFactory."""
        return WorkerRunner(self, assignment)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.workers = []

    async def aclose(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(w.close) for w in self.workers))
        self.workers = []


class WorkerRunner:
    """A TaskRunner whose pipeline runs in one of the pool's worker processes."""

    def __init__(self, pool: WorkerPool, assignment: Assignment) -> None:
        self._pool = pool
        self._assignment = assignment
        self._key: TaskKey = (assignment.task_id, assignment.generation)
        self._worker: WorkerProcess | None = None
        self._final: TaskStats | None = None

    @property
    def task_id(self) -> str:
        return self._assignment.task_id

    @property
    def generation(self) -> int:
        return self._assignment.generation

    @property
    def worker(self) -> WorkerProcess | None:
        return self._worker

    async def start(self) -> None:
        worker = self._worker = self._pool.pick()
        worker.tasks.add(self._key)
        # Counted before the request: tasks the host starts together all count when each
        # consumer's prefetch is sized from the budget ÷ the host's tasks.
        self._pool.budget.task_started()
        try:
            done = await worker.request(StartTask, self._assignment)
        except WorkerError:
            self._gone(worker)
            raise
        if done.error:
            self._gone(worker)
            raise WorkerError(done.error, task=self.task_id, worker=worker.index)

    def _gone(self, worker: WorkerProcess) -> None:
        if self._key in worker.tasks:
            worker.tasks.discard(self._key)
            self._pool.budget.task_stopped()

    async def stop(self, *, drain: bool = True) -> None:
        worker = self._worker
        if worker is None:
            self._final = TaskStats(TaskState.STOPPED)
            return
        try:
            if worker.alive:
                done = await self._request_stop(worker, drain)
                self._final = done.stats
                if done.error:
                    raise WorkerError(done.error, task=self.task_id, worker=worker.index)
            else:   # the process is gone, so is the task: nothing more will be committed
                last = worker.stats.get(self._key, TaskStats(TaskState.STOPPED))
                self._final = dataclasses.replace(last, state=TaskState.STOPPED,
                                                  last_error=worker.exit_reason)
        except WorkerError:
            if worker.alive:
                raise
            self._final = TaskStats(TaskState.STOPPED, last_error=worker.exit_reason)
        finally:
            self._gone(worker)
            worker.stats.pop(self._key, None)

    async def _request_stop(self, worker: WorkerProcess, drain: bool) -> Done:
        if drain:   # a drain has its own deadline in the pipeline (drain_timeout)
            return await worker.request(StopTask, self._key, drain)
        try:
            return await asyncio.wait_for(worker.request(StopTask, self._key, drain),
                                          self._pool.abort_timeout_s)
        except TimeoutError:
            log.error("worker_unresponsive_killed", worker=worker.index, task=self.task_id,
                      timeout_s=self._pool.abort_timeout_s)
            await worker.kill()
            raise WorkerError(worker.exit_reason or "worker killed") from None

    def stats(self) -> TaskStats:
        if self._final is not None:
            return self._final
        worker = self._worker
        if worker is None:
            return TaskStats(TaskState.STARTING)
        last = worker.stats.get(self._key)
        if not worker.alive:
            base = last or TaskStats(TaskState.FAILED)
            return dataclasses.replace(base, state=TaskState.FAILED,
                                       last_error=worker.exit_reason)
        return last or TaskStats(TaskState.STARTING)
