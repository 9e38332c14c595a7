"""The host budget: sizing from cgroup text, the split, per-task prefetch, and counters shared by
the processes of a host (a real child process, started the way worker processes are)."""

from __future__ import annotations

import multiprocessing
import pickle

from confluent_kafka import Consumer

from tasks import budget
from tasks.spool import MemoryBudget

MiB = budget.MiB


def test_container_limit_reads_cgroup_v2_then_v1_and_no_limit_is_none() -> None:
    assert budget.container_limit("1073741824\n", None) == 1 << 30
    assert budget.container_limit("max\n", "536870912\n") == 1 << 29
    assert budget.container_limit("max\n", "9223372036854771712\n") is None   # v1: unlimited
    assert budget.container_limit(None, None) is None


def test_default_budget_is_half_the_container_else_a_quarter_of_ram() -> None:
    assert budget.default_budget(2 << 30, 64 << 30) == 1 << 30
    assert budget.default_budget(None, 16 << 30) == 4 << 30
    assert budget.default_budget(10 * MiB, 16 << 30) == budget.MIN_BUDGET


def test_split_adds_up_to_the_total() -> None:
    parts = budget.split(512 * MiB)
    assert parts.prefetch + parts.bodies + parts.uploads + parts.pipeline <= parts.total
    assert parts.total - (parts.prefetch + parts.bodies + parts.uploads + parts.pipeline) < 4


def test_prefetch_is_an_even_part_never_more_than_is_left_and_clamped() -> None:
    share = 200 * MiB
    assert budget.prefetch_bytes(share, 1, 0) == budget.PREFETCH_MAX
    assert budget.prefetch_bytes(share, 200, 0) == share // 200
    assert budget.prefetch_bytes(share, 10, share - MiB) == MiB            # what is left
    assert budget.prefetch_bytes(share, 10_000, 0) == budget.PREFETCH_MIN  # the floor


def test_prefetch_properties_are_accepted_by_librdkafka() -> None:
    for n in (budget.PREFETCH_MIN, 3 * MiB, budget.PREFETCH_MAX):
        props = budget.prefetch_properties(n)
        assert props["queued.max.messages.kbytes"] * 1024 + props["fetch.max.bytes"] <= max(
            n, 512 * 1024)
        Consumer({"group.id": "g", "bootstrap.servers": "127.0.0.1:9", **props}).close()


def test_spill_decisions() -> None:
    assert not budget.spill_full(10, None) and not budget.cut_early(10, None)
    assert budget.spill_full(10, 10) and not budget.cut_early(10, 10)
    assert budget.cut_early(11, 10)


def test_reservations_sum_to_the_share_and_are_given_back() -> None:
    b = MemoryBudget.for_host(100 * MiB)
    assert b.prefetch_share is not None
    for _ in range(50):
        b.task_started()
    props = [b.reserve_prefetch(i) for i in range(50)]
    assert all(p["queued.max.messages.kbytes"] > 0 for p in props)
    assert b.prefetch <= b.prefetch_share
    for i in range(50):
        b.release_prefetch(i)
    assert b.prefetch == 0


def _child(b: MemoryBudget, conn: multiprocessing.connection.Connection) -> None:
    conn.send((b.take(100), b.spill(50), b.used, b.spilled))


def test_worker_processes_share_the_counters() -> None:
    b = MemoryBudget(150, spill_limit=40)
    assert b.take(100)
    ctx = multiprocessing.get_context("forkserver")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_child, args=(b, there))
    child.start()
    try:
        took, cut, used, spilled = here.recv()
    finally:
        child.join(30)
    assert (took, cut, used, spilled) == (False, True, 100, 50)   # the parent's 100 counted
    assert b.spilled == 50 and b.spilled_total == 50


def test_pickled_outside_a_process_start_is_a_fresh_budget() -> None:
    b = MemoryBudget(150, spill_limit=40)
    b.take(100)
    copy = pickle.loads(pickle.dumps(b))
    assert (copy.limit, copy.spill_limit, copy.used) == (150, 40, 0)


def test_a_dead_workers_reservations_are_given_back() -> None:
    b = MemoryBudget.for_host(100 * MiB)
    b.owner = 3
    b.task_started()
    b.reserve_prefetch("a")
    b.reserve_prefetch("b")
    assert b.prefetch > 0
    b.forget_owner(3)          # the worker died: its process-local ledger is gone with it
    assert b.prefetch == 0
