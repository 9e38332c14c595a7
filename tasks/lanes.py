"""Serial lanes on shared thread pools: a task's calls in order, one at a time, without a thread
of its own.

Each task used to own two single-thread executors (its source's and its push stage's): with
librdkafka's four threads per consumer, ~6 threads per task (1,210 threads for 200 tasks). A
`SerialLane` keeps what those executors guaranteed — the calls submitted to one lane run one at
a time, in submission order, each seeing the effects of the one before (librdkafka calls of one
consumer never run concurrently; a chunk's release runs after the batch still being added) —
but runs them on a pool that every lane of the process shares (`shared_pool`), bounded in
threads whatever the number of tasks.

A lane holds a pool thread for one call at a time, then queues its next call behind the other
lanes' (fair: no lane keeps a thread while others wait). Calls must therefore be short or
bounded: a source's `poll` blocks at most `source.POLL_BUSY` in the thread (an idle task waits
out the rest of its poll interval on the event loop, tasks/pipeline.py), commits and opens are
bounded by their timeouts. A call that blocks for long delays the other lanes of its pool, never
deadlocks them: nothing run in a lane waits for another lane's call.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Threads of the pool every task's source lane shares, per process. Sources block at most 10 ms
# per poll (more for a commit or an open); 16 let that many consumers wait on the broker at once.
SOURCE_THREADS = 16
# The push stages' pool (cutting and compressing chunks: zlib-ng/zstd release the GIL): more
# threads than cores would only wait for one.
PUSH_THREADS = max(2, min(8, os.cpu_count() or 2))

_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def shared_pool(name: str, max_workers: int) -> ThreadPoolExecutor:
    """The process's pool called `name` (made on first use; its threads are created as calls
    need them, up to `max_workers`, and named `name_N`)."""
    with _pools_lock:
        pool = _pools.get(name)
        if pool is None:
            pool = _pools[name] = ThreadPoolExecutor(max_workers, thread_name_prefix=name)
        return pool


def source_lane() -> SerialLane:
    """A lane for one task's consumer: open, poll, seek, commit, close."""
    return SerialLane(shared_pool("source", SOURCE_THREADS))


def push_lane() -> SerialLane:
    """A lane for one task's push stage: adding batches to its chunks, releasing them."""
    return SerialLane(shared_pool("push", PUSH_THREADS))


_Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class SerialLane(Executor):
    """An Executor whose calls run one at a time, in submission order, on a shared pool."""

    def __init__(self, pool: Executor) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        self._calls: collections.deque[_Call] = collections.deque()
        self._running = False          # a call of this lane is queued on, or runs in, the pool
        self._shut = False
        self._idle = threading.Event()
        self._idle.set()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._calls.append((future, fn, args, kwargs))
            if self._running:
                return future
            self._running = True
            self._idle.clear()
        self._next()
        return future

    def _next(self) -> None:
        """Queue the lane's next call on the pool; a pool that refuses (the interpreter is
        exiting) fails the calls still queued instead of leaving them pending forever."""
        try:
            self._pool.submit(self._run_one)
        except RuntimeError as exc:
            with self._lock:
                calls, self._calls = list(self._calls), collections.deque()
                self._running = False
                self._idle.set()
            for future, *_ in calls:
                if future.set_running_or_notify_cancel():
                    future.set_exception(exc)

    def _run_one(self) -> None:
        with self._lock:
            future, fn, args, kwargs = self._calls.popleft()
        if future.set_running_or_notify_cancel():
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # as ThreadPoolExecutor: the caller gets it
                future.set_exception(exc)
            else:
                future.set_result(result)
        with self._lock:
            if not self._calls:
                self._running = False
                self._idle.set()
                return
        self._next()   # behind the other lanes' calls: one call per turn

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; with `wait`, return once the calls already submitted have run."""
        with self._lock:
            self._shut = True
            if cancel_futures:
                for future, *_ in self._calls:
                    future.cancel()
        if wait:
            self._idle.wait()
