"""One task's pipeline: pull → transform → push, asyncio stages on bounded queues.

- pull: batch `consume` from the task's partition in the source's lane (its calls one at a time
  on a thread pool the process's tasks share, tasks/lanes.py; an idle poll waits out its interval
  on the event loop, not in a thread); puts batches on a queue of `queue_batches` entries. When
  the queue is full it waits: a slow sink slows the pull.
- transform: runs `transform_batch` in a thread, or in the host's process pool (all cores), with
  up to `transform_window` batches in flight; a collect stage keeps the results in order.
- push: dead-letters the failed records, cuts chunks (tasks/batching.py) in its own lane of a
  shared pool (for S3 and file sinks that also compresses the lines into the chunk's file body,
  tasks/spool.py),
  delivers each chunk to the sink with retries, then commits its end offset synchronously —
  before the next delivery begins; the next chunk fills meanwhile. Nothing is committed that the
  sink has not acknowledged.

Fencing where data lands: every side effect (sink write, offset commit, dead letter) first
checks the worker's own lease (tasks/fence.py) and backs off while it has run out. S3 and file
sinks write create-only objects chained by offsets; when a write finds its name taken by another
owner's object, the records up to that object's end are exported already: the task commits that
end and re-reads from it (`_Resync`), dropping what it had cut since. A chunk held by the chained
sinks never closes without a record in it (Batcher `hold_empty`), so a chunk's name is a
function of its start offset alone.

Memory per task is bounded by librdkafka's prefetch (source.PREFETCH_KBYTES) + at most
(2 * queue_batches + transform_window + 3) batches + two closed chunks. S3 file bodies share the
host's MemoryBudget and spill to temporary files beyond it, file-sink bodies go to disk at once,
HTTP and Kafka chunks are rows bounded by their batch limits; see docs/architecture/pipeline.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import BrokenExecutor, Executor
from typing import Any, TypeVar

from tasks.batching import Batcher, Chunk, Limits
from tasks.budget import batch_bytes
from tasks.deadletter import DeadLetterSink
from tasks.deadletter_rules import Stage
from tasks.errors import SinkError, Unavailable
from tasks.fence import WorkerFence
from tasks.lanes import push_lane, source_lane
from tasks.logs import get_logger
from tasks.ratelimit import Share, Throttle
from tasks.runner import TaskState, TaskStats
from tasks.sinks.base import KeyTaken, Resumes, Sink, backoff_delay, screened
from tasks.sinks.partitioned import ChunkClaimed
from tasks.source import POLL_BUSY, KafkaSource, Polled
from tasks.spool import FileBody, MemoryBudget
from tasks.stats import TaskMeter
from tasks.transforms.batch import (
    DeadRecord,
    Plan,
    Rows,
    TransformOutput,
    compiled,
    transform_batch,
)

# How long a stop waits for its cancelled stages to end before it logs them and goes on.
STOP_WAIT_S = 30.0
# A task's pull waits at most this long for the host's pipeline share before it reads on.
PIPELINE_WAIT_S = 5.0
T = TypeVar("T")


class _End:
    """End of the stream, passed down the queues when the task drains."""


_END = _End()
Done = tuple[Polled, TransformOutput]


class _Resync(Exception):
    """Another owner's object ends at `offset`: read on from there. With `cut_at`, another
    owner claimed the chunk starting at `offset` up to `cut_at` (tasks/sinks/partitioned.py):
    read it again and cut it exactly there."""

    def __init__(self, offset: int, cut_at: int | None = None) -> None:
        super().__init__(f"continue at offset {offset}")
        self.offset, self.cut_at = offset, cut_at


class PipelineRunner:
    """A TaskRunner (tasks/runner.py) for one (job, partition)."""

    def __init__(self, *, task_id: str, generation: int, source: KafkaSource, sink: Sink,
                 dead_letter: DeadLetterSink, plan: Plan, limits: Limits,
                 pool: Executor | None = None, queue_batches: int = 2,
                 transform_window: int = 2, drain_timeout: float = 60.0,
                 backoff_base: float = 0.2, backoff_cap: float = 10.0,
                 body_factory: Callable[[], FileBody] | None = None,
                 fence: WorkerFence | None = None, share: Share | None = None,
                 budget: MemoryBudget | None = None) -> None:
        self._task_id, self._generation = task_id, generation
        self._halting = False
        # Set while the stages are being cancelled (_cancel_point).
        self._cancelling = False
        # The host's memory budget: consumed batches count in its pipeline share until the push
        # stage has them in a chunk (`_held`, oldest first), and the pull waits while it is full.
        self.budget = budget
        self._held: collections.deque[int] = collections.deque()
        # The task's share of its job's rate_limit: the pull waits on it (tasks/ratelimit.py).
        self.throttle = None if share is None else Throttle(share, time.monotonic())
        self.fence = fence or WorkerFence.unbounded()
        self.source, self.sink, self.dead_letter = source, sink, dead_letter
        self.plan, self.limits, self.pool = plan, limits, pool
        self.body_factory = body_factory
        self._inline = compiled(plan).passthrough
        self.transform_window = transform_window
        self.drain_timeout, self.backoff_base, self.backoff_cap = (drain_timeout, backoff_base,
                                                                   backoff_cap)
        self.meter = TaskMeter(rotation_s=limits.max_seconds)
        self._state = TaskState.STOPPED
        self.queue_batches = queue_batches
        self._new_queues()
        self._stopping = asyncio.Event()
        self._abort_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # The consumer's calls (consume, commit, close after the last consume) one at a time, in
        # order, on the process's shared source pool (tasks/lanes.py): no thread of its own.
        self._source_lane = source_lane()
        # Cutting and compressing (zlib-ng/zstd release the GIL) one batch at a time, off the
        # event loop that all tasks of the process share, on its shared push pool. Stopping waits
        # for the lane before freeing the open chunk.
        self._push_lane = push_lane()
        self._batcher: Batcher | None = None
        self._delivery: asyncio.Task[None] | None = None  # the chunk being delivered + committed
        self._resync: asyncio.Task[None] | None = None    # stages restarting at another offset
        self._start_to_commit: int | None = None
        self._dead_lock = asyncio.Lock()
        self._closed = False
        self.log = get_logger("tasks.pipeline").bind(task=task_id, generation=generation)

    def _new_queues(self) -> None:
        self._q_pulled: asyncio.Queue[Polled | _End] = asyncio.Queue(maxsize=self.queue_batches)
        self._q_done: asyncio.Queue[Done | _End] = asyncio.Queue(maxsize=self.queue_batches)
        # Transforms in flight beyond the one the collector awaits.
        self._q_inflight: asyncio.Queue[asyncio.Future[Done] | _End] = asyncio.Queue(
            maxsize=max(1, self.transform_window - 1))

    @property
    def task_id(self) -> str:
        return self._task_id

    @property
    def generation(self) -> int:
        return self._generation

    def stats(self) -> TaskStats:
        self.meter.sink_cpu = self.sink.cpu.total
        stats = self.meter.snapshot(self._state)
        if self.throttle is None:
            return stats
        share = self.throttle.share
        return dataclasses.replace(stats, rate_limited_s=self.throttle.throttled_s,
                                   rate_share_records_per_s=share.records_per_s or 0.0,
                                   rate_share_bytes_per_s=share.bytes_per_s or 0.0)

    async def _in_source_lane(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._source_lane, func, *args)

    async def start(self) -> None:
        self._state = TaskState.STARTING
        try:
            start = kafka_start = await self._in_source_lane(self.source.open)
            if isinstance(self.sink, Resumes):
                # The destination knows where the export goes on (an Iceberg table's offset and
                # the chunk reports after it), not Kafka: read from there.
                start = await asyncio.to_thread(self.sink.cpu.run, self.sink.resume_offset,
                                                kafka_start)
                if start != kafka_start:
                    await self._in_source_lane(self.source.seek, start)
        except Exception as exc:
            self._fail(exc)
            await self._close()
            raise
        self.meter.committed(start)  # where a restart would resume
        # Another owner resolving `latest` (or a timestamp) later would start elsewhere and cut
        # other chunks: such a start, or one the sink resumed at, is committed before the first
        # write (_deliver).
        moved = start != kafka_start
        self._start_to_commit = start if self.source.resolved or moved else None
        self.log.info("task started", start_offset=start,
                      **({"kafka_offset": kafka_start} if moved else {}))
        self._start_stages(start)
        self._state = TaskState.RUNNING

    def _start_stages(self, start: int, cut_at: int | None = None) -> None:
        self._batcher = Batcher(self.limits, start, self.body_factory, cut_at=cut_at,
                                hold_empty=self.sink.chained)
        self._tasks = []
        for name, stage in (("pull", self._pull()), ("transform", self._transform()),
                            ("collect", self._collect()), ("push", self._push())):
            task = asyncio.create_task(stage, name=f"{self.task_id}:{name}")
            task.add_done_callback(self._stage_done)
            self._tasks.append(task)

    async def _commit(self, offset: int) -> None:
        def commit() -> None:
            self.fence.check("offset commit")
            self.source.commit(offset)
        # In the source's thread: a commit waits for a running consume anyway (librdkafka).
        await self._in_source_lane(commit)

    async def _restart_at(self, offset: int, cut_at: int | None = None) -> None:
        """Drop everything read since the last delivery and read on from `offset`, where
        another owner's object ends (its records are exported; ours up to there are not needed).
        """
        self.log.info("continuing after another owner's object", offset=offset)
        await self._cancel_stages("stages, to re-read")
        self._cancelling = False
        self._cancel_inflight()
        self._delivery = None
        if self._batcher is not None:  # after whatever the push lane is still adding to it
            await asyncio.wrap_future(self._push_lane.submit(self._batcher.current.release))
        self._new_queues()
        self._unhold(every=True)
        await self._in_source_lane(self.source.seek, offset)
        self.meter.committed(offset, restart=True)
        self._start_stages(offset, cut_at)

    async def stop(self, *, drain: bool = True) -> None:
        self._halting = True   # no re-read starts from here on (_stage_done)
        if self._tasks and drain and self._state == TaskState.RUNNING:
            self._state = TaskState.DRAINING
            self._abort_at = time.monotonic() + self.drain_timeout
            self._stopping.set()
            push = self._tasks[-1]
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(push), self.drain_timeout + 5)
        if self._resync is not None:
            self._resync.cancel()
            await self._settle([self._resync], "resync")
        await self._cancel_stages("stages")
        self._cancel_inflight()
        await self._close()
        if self._state != TaskState.FAILED:
            self._state = TaskState.STOPPED
        self.log.info("task stopped", drain=drain, committed=self.meter.committed_offset,
                      state=str(self._state))

    async def _cancel_stages(self, what: str) -> None:
        """Cancel the stages and the delivery in flight, and wait for them (_settle); the
        loops end at their next cancel point."""
        stages = [*self._tasks, *([self._delivery] if self._delivery is not None else [])]
        self._cancelling = True
        for task in stages:
            task.cancel()
        await self._settle(stages, what)

    def _cancel_point(self) -> None:
        """Python 3.11's asyncio.wait_for can swallow a cancellation that arrives as its inner
        wait completes (fixed in 3.12): a stage loop built on it would then run on after its
        stop. The loops call this each turn (at least once a second) and end."""
        if self._cancelling:
            raise asyncio.CancelledError

    async def _settle(self, tasks: list[asyncio.Task[None]], what: str) -> None:
        """Wait for cancelled tasks to end, at most STOP_WAIT_S: a stop must end, and one that
        cannot is logged with what did not stop (a bug to find, not a hang to sit through)."""
        if not tasks:
            return
        _done, stuck = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
        if stuck:
            self.log.error("stop_stuck", what=what,
                           stuck=[f"{t.get_name()}: {t.get_coro()}" for t in stuck])

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for closer in (self.sink.close, self.dead_letter.close):
            with contextlib.suppress(Exception):
                await closer()
        with contextlib.suppress(Exception):
            await self._in_source_lane(self.source.close)
        self._source_lane.shutdown(wait=False)
        # A cancelled push stage may have left a batch being added in the push lane.
        await asyncio.to_thread(self._push_lane.shutdown, wait=True)
        self._unhold(every=True)
        if self._batcher is not None:
            self._batcher.current.release()

    def _fail(self, exc: BaseException) -> None:
        self._state = TaskState.FAILED
        self.meter.last_error = f"{type(exc).__name__}: {exc}"
        self.log.error("task failed", error=self.meter.last_error)

    def _stage_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if isinstance(exc, _Resync):
            if self._halting:
                return
            if self._resync is None or self._resync.done():
                self._resync = asyncio.create_task(self._restart_at(exc.offset, exc.cut_at))
                self._resync.add_done_callback(self._stage_done)
            return
        self._fail(exc or RuntimeError("stage failed"))
        for other in self._tasks:
            other.cancel()

    # -- stages ---------------------------------------------------------------------------

    async def _rate_limited(self) -> int | None:
        """Wait until the rate limit lets the next pull take a record (or the task stops);
        how many it may take. None: no limit."""
        throttle = self.throttle
        if throttle is None:
            return None
        wait = throttle.wait(time.monotonic())
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)
            throttle.waited(wait)
        return max(throttle.allowance(time.monotonic()), 1)

    def _account(self, polled: Polled) -> None:
        """Charge a pulled batch to the rate limit and hold it in the host's budget: one pass
        over its values for both (per batch, on the event loop)."""
        if not polled.rows or (self.throttle is None and self.budget is None):
            return
        values = polled.rows.values
        nbytes = sum(len(v) for v in values if v is not None)
        if self.throttle is not None:
            self.throttle.charge(len(values), nbytes, time.monotonic())
        if self.budget is not None:
            n = batch_bytes(nbytes, len(values))
            self._held.append(n)
            self.budget.hold_batch(n)

    def _unhold(self, every: bool = False) -> None:
        """The oldest batch is in its chunk (or, `every`, the batches are dropped)."""
        if self.budget is not None:
            for _ in range(len(self._held) if every else min(1, len(self._held))):
                self.budget.drop_batch(self._held.popleft())

    async def _budget_room(self) -> None:
        """While the host's pipeline share is full and this task holds batches, wait for the
        push stage to take them (bounded: PIPELINE_WAIT_S, then read on)."""
        budget = self.budget
        if budget is None or not self._held or not budget.pipeline_full():
            return
        budget.paused_by(1)
        try:
            deadline = time.monotonic() + PIPELINE_WAIT_S
            while (self._held and budget.pipeline_full() and not self._stopping.is_set()
                   and time.monotonic() < deadline):
                await asyncio.sleep(0.01)
        finally:
            budget.paused_by(-1)

    async def _pull(self) -> None:
        while not self._stopping.is_set():
            self._cancel_point()
            allowance = await self._rate_limited()
            if self._stopping.is_set():
                break
            await self._budget_room()
            if self._stopping.is_set():
                break
            # Blocks a shared thread at most POLL_BUSY; an idle poll's interval is waited below.
            polled = await self._in_source_lane(self.source.poll, allowance, POLL_BUSY)
            self._account(polled)
            self.meter.read(polled.next_offset, polled.high, bool(polled.rows),
                            polled.unreachable)
            self.meter.cpu_total += polled.cpu_seconds
            if polled.errors:
                self.meter.last_error = polled.errors[-1]
            if polled.rows:
                await self._q_pulled.put(polled)  # waits while downstream is busy: backpressure
            elif polled.wait_s > 0:   # idle: the rest of the poll interval, a stop ends it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), polled.wait_s)
        await self._q_pulled.put(_END)

    async def _transformed(self, polled: Polled) -> Done:
        loop = asyncio.get_running_loop()
        if self._inline:  # nothing to compute: a thread or worker hop would cost more
            out = transform_batch(self.plan, polled.rows)
        elif self.pool is not None:
            try:
                out = await loop.run_in_executor(self.pool, transform_batch, self.plan,
                                                 polled.rows)
            except BrokenExecutor as exc:  # a worker died: keep going in this process
                self.log.warning("process pool broken; transforming in a thread", error=str(exc))
                self.pool = None
                out = await asyncio.to_thread(transform_batch, self.plan, polled.rows)
        else:
            out = await asyncio.to_thread(transform_batch, self.plan, polled.rows)
        polled.rows = Rows()  # the raw values are no longer needed: free them early
        return polled, out

    async def _transform(self) -> None:
        """Dispatch: start transforming each batch as it arrives (up to the window in flight)."""
        while True:
            polled = await self._q_pulled.get()
            if isinstance(polled, _End):
                await self._q_inflight.put(_END)
                return
            await self._q_inflight.put(asyncio.ensure_future(self._transformed(polled)))

    async def _collect(self) -> None:
        """Hand transformed batches to the push stage in consumption order."""
        while True:
            fut = await self._q_inflight.get()
            if isinstance(fut, _End):
                await self._q_done.put(_END)
                return
            try:
                done = await fut
            except BaseException:
                self._cancel_inflight()
                raise
            await self._q_done.put(done)

    def _cancel_inflight(self) -> None:
        while not self._q_inflight.empty():
            fut = self._q_inflight.get_nowait()
            if not isinstance(fut, _End):
                fut.cancel()

    async def _push(self) -> None:
        assert self._batcher is not None
        batcher = self._batcher
        tick = min(1.0, (self.limits.max_seconds or 4.0) / 4)
        while True:
            self._cancel_point()
            try:
                item = await asyncio.wait_for(self._q_done.get(), timeout=tick)
            except TimeoutError:
                item = None
            if self._delivery is not None and self._delivery.done():
                await self._delivered()  # surfaces a failed delivery: the task fails
            if isinstance(item, _End):
                last = batcher.flush()
                if last is not None:
                    await self._handoff(last)
                await self._delivered()
                return
            if item is not None:
                polled, out = item
                self.meter.consumed(len(out.records) + len(out.dead) + out.dropped,
                                    out.in_bytes, out.cpu_seconds)
                self.meter.filtered_total += out.dropped
                await self._dead(out.dead, Stage.TRANSFORM)
                closed, cpu = await asyncio.wrap_future(self._push_lane.submit(
                    _timed, batcher.add, out, polled.next_offset, time.monotonic()))
                self.meter.cpu_total += cpu
                del item, polled, out  # the batch is in the chunk now: do not hold it meanwhile
                self._unhold()
                for chunk in closed:
                    await self._handoff(chunk)
            if batcher.due(time.monotonic()):
                due = batcher.flush()
                if due is not None:
                    await self._handoff(due)

    # -- delivery -------------------------------------------------------------------------

    async def _retry(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op` until it succeeds; retryable failures back off (exponential, jittered).
        While draining, give up at the drain deadline (the offsets stay uncommitted)."""
        attempt = 0
        while True:
            try:
                result = await op()
                if attempt:
                    self.log.info("recovered", what=what, attempts=attempt + 1)
                return result
            except (SinkError, Unavailable) as exc:
                if isinstance(exc, SinkError) and not exc.retryable:
                    raise
                self.meter.last_error = f"{what}: {exc.message}"
                if self._abort_at is not None and time.monotonic() > self._abort_at:
                    raise
                delay = backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap)
                self.log.warning("retrying", what=what, attempt=attempt, delay=round(delay, 3),
                                 error=exc.message)
                attempt += 1
                await asyncio.sleep(delay)

    async def _dead(self, records: list[DeadRecord], stage: Stage) -> None:
        """Dead-letter `records` of one stream (tasks/deadletter_rules.py): the destination
        writes only those not written already (by this owner or an earlier one)."""
        if records:
            async def write() -> None:
                self.fence.check("dead letter")
                await self.dead_letter.write(records, stage)
            # The push stage and a delivery (HTTP refusals) may both write: one at a time.
            async with self._dead_lock:
                await self._retry("dead-letter", write)
            self.meter.dead_letters_total += len(records)

    async def _handoff(self, chunk: Chunk) -> None:
        """Start delivering `chunk` once the previous delivery and its commit are done. The push
        stage goes on filling the next chunk meanwhile, so a file's fixed cost (write, fsync or
        PUT, commit) no longer stalls the task; the next upload still begins only after the
        previous chunk's commit, and at most two closed chunks exist per task."""
        await self._delivered()
        self._delivery = asyncio.create_task(self._deliver(chunk))

    async def _delivered(self) -> None:
        """Wait for the delivery in progress, if any; re-raises its failure."""
        if self._delivery is not None:
            delivery = self._delivery
            await delivery  # cancelling the push stage here cancels the delivery too
            self._delivery = None

    async def _deliver(self, chunk: Chunk) -> None:
        end = chunk.end_offset
        if self._start_to_commit is not None:
            start = self._start_to_commit
            await self._retry("commit", lambda: self._commit(start))
            self._start_to_commit = None
        try:
            # A sink that commits the offsets itself (Kafka) commits even an empty chunk's.
            if chunk.records or self.sink.commits_offsets:
                # Records the sink can never take (too large): dead letters before the write,
                # whose commit covers them; the write skips them.
                skipped = screened(self.sink, chunk)
                await self._dead(skipped, Stage.SINK)
                refused = await self._retry("sink", lambda: self.sink.write(chunk))
                await self._dead(refused, Stage.SINK)
                self.meter.exported_total += chunk.records - len(refused) - len(skipped)
        except ChunkClaimed as claimed:
            # Another owner claimed this chunk with other bounds: read it again, cut it as
            # claimed, and write (or complete) the same files.
            self.log.info("chunk claimed by another owner", key=claimed.key,
                          start=chunk.start_offset, ours_end=chunk.end_offset,
                          end=claimed.end_offset)
            raise _Resync(chunk.start_offset, cut_at=claimed.end_offset) from None
        except KeyTaken as taken:
            # Another owner's object starts here: records up to its end are exported. Our
            # retried write of our own object lands here too, with our own end.
            end = taken.end_offset
            self.log.info("chunk exported by another owner", key=taken.key,
                          start=chunk.start_offset, ours_end=chunk.end_offset, end=end)
        finally:
            chunk.release()
        if not self.sink.commits_offsets:
            await self._retry("commit", lambda: self._commit(end))
        self.meter.committed(end)
        if end != chunk.end_offset:
            raise _Resync(end)


def _timed(func: Callable[..., T], *args: Any) -> tuple[T, float]:
    """Call `func` and return its result with the thread CPU time it took."""
    cpu0 = time.thread_time()
    result = func(*args)
    return result, time.thread_time() - cpu0
