"""Serial lanes (tasks/lanes.py): one lane's calls in order and never concurrent, many lanes on
few threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

import pytest

from tasks.lanes import SerialLane, shared_pool

DEADLINE_S = 10.0


def test_a_lanes_calls_run_in_order_one_at_a_time_while_lanes_share_few_threads() -> None:
    pool = ThreadPoolExecutor(3)
    lanes = [SerialLane(pool) for _ in range(20)]
    running = [0] * len(lanes)
    overlap: list[int] = []
    seen: list[list[int]] = [[] for _ in lanes]
    threads: set[str] = set()
    guard = threading.Lock()

    def call(lane: int, i: int) -> int:
        with guard:
            running[lane] += 1
            if running[lane] > 1:
                overlap.append(lane)
            threads.add(threading.current_thread().name)
        time.sleep(0.0005)
        seen[lane].append(i)
        with guard:
            running[lane] -= 1
        return i * 2

    futures = [lane.submit(call, n, i) for i in range(30) for n, lane in enumerate(lanes)]
    _done, pending = wait(futures, timeout=DEADLINE_S)
    assert not pending
    assert [f.result() for f in futures] == [i * 2 for i in range(30) for _ in lanes]
    assert overlap == []
    assert all(s == list(range(30)) for s in seen)
    assert len(threads) <= 3
    pool.shutdown()


def test_errors_reach_the_caller_and_the_lane_goes_on() -> None:
    pool = ThreadPoolExecutor(1)
    lane = SerialLane(pool)

    def boom() -> None:
        raise ValueError("no")

    failed, after = lane.submit(boom), lane.submit(lambda: 7)
    with pytest.raises(ValueError, match="no"):
        failed.result(DEADLINE_S)
    assert after.result(DEADLINE_S) == 7
    pool.shutdown()


def test_shutdown_waits_for_the_calls_submitted_and_refuses_new_ones() -> None:
    pool = ThreadPoolExecutor(2)
    lane = SerialLane(pool)
    gate = threading.Event()
    ran: list[str] = []
    lane.submit(lambda: gate.wait(DEADLINE_S))
    lane.submit(lambda: ran.append("last"))
    waiter = threading.Thread(target=lane.shutdown, kwargs={"wait": True})
    waiter.start()
    waiter.join(0.05)
    assert waiter.is_alive() and ran == []   # still behind the first call
    with pytest.raises(RuntimeError):
        lane.submit(lambda: None)
    gate.set()
    waiter.join(DEADLINE_S)
    assert not waiter.is_alive() and ran == ["last"]
    pool.shutdown()


def test_a_cancelled_call_is_skipped() -> None:
    pool = ThreadPoolExecutor(1)
    lane = SerialLane(pool)
    gate = threading.Event()
    ran: list[int] = []
    first = lane.submit(lambda: gate.wait(DEADLINE_S))
    second = lane.submit(lambda: ran.append(2))
    third = lane.submit(lambda: ran.append(3))
    assert second.cancel()
    gate.set()
    third.result(DEADLINE_S)
    assert first.result(DEADLINE_S) and second.cancelled() and ran == [3]
    pool.shutdown()


def test_a_refusing_pool_fails_the_calls_instead_of_leaving_them_pending() -> None:
    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    lane = SerialLane(pool)
    future = lane.submit(lambda: 1)
    with pytest.raises(RuntimeError):
        future.result(DEADLINE_S)
    lane.shutdown(wait=True)   # idle again: returns at once


def test_the_shared_pool_is_one_per_name() -> None:
    assert shared_pool("test-lanes", 2) is shared_pool("test-lanes", 2)
    assert shared_pool("test-lanes", 2) is not shared_pool("test-lanes-other", 2)
