"""The Kafka sink's transactions on a real broker: a chunk becomes visible to read_committed
readers only together with its offset commit; a zombie holding a chunk in flight is fenced when
the task's next owner starts, and its late write never becomes visible; a failed delivery or a
lease that ran out before the commit aborts the transaction and the re-sent chunk is read once.

Faults are injected by wrapping the sink's producer (`Held`): its flush / commit waits while the
test holds it (a process paused mid-chunk), or a delivery report says an ack was lost although
the broker wrote the record.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from tasks.fence import WorkerFence
from tasks.pipeline import PipelineRunner
from tasks.runner import TaskState
from tasks.sinks.kafka import COMMIT_ATTEMPTS
from tasks.spec import JobSpec
from tests.integration.pipeline.kit import (
    DEADLINE,
    create_topic,
    environment,
    job,
    json_records,
    produce,
    run_until_committed,
    runner,
    unique,
    wait_for,
)

N = 1000
CHUNK = 100


class Held:
    """Wraps a Kafka sink's producer. Once more than `hold_after` records were produced, the
    next call named in `hold_at` waits until `release` is set (a write held in flight); the
    record numbered `lose_ack` (1-based) is delivered, but its delivery report says it failed;
    once more than `fail_after` records were produced, the next `fail_commits` commits time out
    (a retriable error, the commit not even sent)."""

    def __init__(self, inner: Any, *, hold_after: int | None = None,
                 hold_at: tuple[str, ...] = ("flush", "commit_transaction"),
                 lose_ack: int | None = None, fail_after: int = 0,
                 fail_commits: int = 0) -> None:
        self.inner, self.hold_after, self.lose_ack = inner, hold_after, lose_ack
        self.hold_at = hold_at
        self.fail_after, self.fail_commits = fail_after, fail_commits
        self.failed_commits = 0
        self.produced = 0
        self.holding = threading.Event()
        self.release = threading.Event()

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.produced += 1
        if self.produced == self.lose_ack:
            report = kwargs["on_delivery"]
            lost = KafkaError(KafkaError._MSG_TIMED_OUT, "injected: the ack was lost")

            def lose(err: KafkaError | None, msg: Message) -> None:
                report(err or lost, msg)

            kwargs["on_delivery"] = lose
        self.inner.produce(*args, **kwargs)

    def _gate(self, call: str) -> None:
        if (self.hold_after is not None and self.produced > self.hold_after
                and call in self.hold_at and not self.release.is_set()):
            self.holding.set()
            if not self.release.wait(DEADLINE):
                raise RuntimeError("the test never released the held write")

    def flush(self, *args: Any) -> int:
        self._gate("flush")
        return int(self.inner.flush(*args))

    def commit_transaction(self, *args: Any) -> None:
        self._gate("commit_transaction")
        if self.produced > self.fail_after and self.failed_commits < self.fail_commits:
            self.failed_commits += 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "injected: commit timed out",
                                            retriable=True))
        self.inner.commit_transaction(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def held(r: PipelineRunner, **kwargs: Any) -> Held:
    sink: Any = r.sink
    wrapper = Held(sink._producer, **kwargs)
    sink._producer = wrapper
    return wrapper


def read(kafka: str, topic: str, isolation: str) -> list[int]:
    """The ids in partition 0 up to its end as a reader with this isolation level sees it
    (read_committed: up to the last stable offset)."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": unique("reader"),
                         "enable.auto.commit": False, "isolation.level": isolation,
                         "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    ids: list[int] = []
    deadline = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.5):
                err = m.error()
                if err is None:
                    ids.append(json.loads(m.value() or b"null")["id"])
                elif err.code() == KafkaError._PARTITION_EOF:
                    return ids
        raise AssertionError(f"{topic}: no end of partition within {DEADLINE}s")
    finally:
        consumer.close()


def committed(kafka: str, spec: JobSpec) -> int:
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": spec.consumer_group})
    try:
        tp = TopicPartition(spec.source.topic, 0)
        return int(consumer.committed([tp], timeout=10)[0].offset)
    finally:
        consumer.close()


def setup(kafka: str) -> tuple[JobSpec, str]:
    topic = create_topic(kafka, unique("in"))
    target = create_topic(kafka, unique("out"))
    produce(kafka, topic, json_records(0, N))
    spec = job(topic, {"type": "kafka", "topic": target},
               transform={"parse": {"format": "json"}, "select": "{id: id}"},
               rotation={"max_records": CHUNK})
    return spec, target


def assert_once(ids: list[int]) -> None:
    counts = collections.Counter(ids)
    assert sorted(counts) == list(range(N)), f"{N - len(counts)} ids missing"
    doubled = sum(1 for c in counts.values() if c > 1)
    assert doubled == 0, f"{doubled} ids read more than once"


async def test_a_chunk_is_visible_to_read_committed_only_with_its_offset_commit(
        kafka: str, tmp_path: Path) -> None:
    spec, target = setup(kafka)
    r = runner(environment(kafka, tmp_path), spec)
    hold = held(r, hold_after=2 * CHUNK)
    await r.start()
    try:
        await wait_for(hold.holding.is_set, "the third chunk held before its commit")
        # Its records are in the log (a reader of uncommitted data sees them) ...
        await wait_for(lambda: len(read(kafka, target, "read_uncommitted")) > 2 * CHUNK,
                       "the held chunk's records in the log")
        # ... but neither they nor their offset are committed.
        assert read(kafka, target, "read_committed") == list(range(2 * CHUNK))
        assert committed(kafka, spec) == 2 * CHUNK
        hold.release.set()
        await wait_for(lambda: committed(kafka, spec) == N, f"the commit of offset {N}")
    finally:
        hold.release.set()
        await r.stop(drain=True)
    assert_once(read(kafka, target, "read_committed"))


# Held before the flush (records sent, no offsets yet), or before the commit (the offsets are in
# the transaction too: the successor's start must abort them before it reads its offset).
@pytest.mark.parametrize("hold_at", ["flush", "commit_transaction"])
async def test_a_zombie_is_fenced_by_the_next_owner_and_its_late_write_never_shows(
        kafka: str, tmp_path: Path, hold_at: str) -> None:
    spec, target = setup(kafka)
    env = environment(kafka, tmp_path)
    zombie = runner(env, spec, generation=1)
    hold = held(zombie, hold_after=2 * CHUNK, hold_at=(hold_at,))
    await zombie.start()
    try:
        await wait_for(hold.holding.is_set, "the zombie's third chunk held in flight")
        # The task moves on (lease lapsed) while the zombie is paused mid-chunk.
        await run_until_committed(runner(env, spec, generation=2), N - 2 * CHUNK, end=N)
        hold.release.set()  # the zombie resumes: its commit must be refused
        await wait_for(lambda: (zombie.stats().state is TaskState.FAILED
                                or zombie.stats().committed_offset > 2 * CHUNK),
                       "the zombie failing, or its late chunk committed")
        assert_once(read(kafka, target, "read_committed"))
        assert committed(kafka, spec) == N
        assert zombie.stats().state is TaskState.FAILED, zombie.stats()
        assert "fenced" in zombie.stats().last_error, zombie.stats()
    finally:
        hold.release.set()
        await zombie.stop(drain=False)


async def test_a_failed_delivery_aborts_and_the_resent_chunk_is_read_once(
        kafka: str, tmp_path: Path) -> None:
    spec, target = setup(kafka)
    r = runner(environment(kafka, tmp_path), spec)
    hold = held(r, lose_ack=2 * CHUNK + 50)
    await run_until_committed(r, N)
    assert r.stats().exported_total == N
    assert_once(read(kafka, target, "read_committed"))
    # The broker did write the first copy: only the abort keeps it from readers.
    assert len(read(kafka, target, "read_uncommitted")) > N
    assert hold.produced > N


async def test_a_restart_after_a_commit_refused_by_the_lease_resends_once(
        kafka: str, tmp_path: Path) -> None:
    spec, target = setup(kafka)
    fence = WorkerFence()
    first = runner(dataclasses.replace(environment(kafka, tmp_path), fence=fence), spec)
    hold = held(first, hold_after=2 * CHUNK)
    await first.start()
    try:
        await wait_for(hold.holding.is_set, "the third chunk held before its commit")
        fence.revoke()      # the lease runs out while the chunk is in flight
        hold.release.set()  # the sink finds the lease gone before the commit: it aborts
        await wait_for(lambda: "lease" in first.stats().last_error,
                       "the commit refused for the lapsed lease")
    finally:
        hold.release.set()
        await first.stop(drain=False)
    assert committed(kafka, spec) == 2 * CHUNK
    await run_until_committed(runner(environment(kafka, tmp_path), spec, generation=2),
                              N - 2 * CHUNK, end=N)
    assert committed(kafka, spec) == N
    assert_once(read(kafka, target, "read_committed"))
    assert len(read(kafka, target, "read_uncommitted")) > N  # the aborted copy


async def test_a_commit_that_timed_out_once_is_retried_not_aborted(
        kafka: str, tmp_path: Path) -> None:
    spec, target = setup(kafka)
    r = runner(environment(kafka, tmp_path), spec)
    hold = held(r, fail_after=2 * CHUNK, fail_commits=1)
    await run_until_committed(r, N)
    assert hold.failed_commits == 1
    assert_once(read(kafka, target, "read_committed"))
    assert len(read(kafka, target, "read_uncommitted")) == N   # nothing aborted, nothing re-sent


async def test_a_commit_whose_outcome_stays_unknown_ends_the_producer_and_the_restart_resends(
        kafka: str, tmp_path: Path) -> None:
    spec, target = setup(kafka)
    first = runner(environment(kafka, tmp_path), spec)
    hold = held(first, fail_after=2 * CHUNK, fail_commits=COMMIT_ATTEMPTS)
    await first.start()
    try:
        await wait_for(lambda: first.stats().state is TaskState.FAILED, "the task failing")
        assert "outcome unknown" in first.stats().last_error, first.stats()
    finally:
        await first.stop(drain=False)
    assert hold.failed_commits == COMMIT_ATTEMPTS
    assert committed(kafka, spec) == 2 * CHUNK
    await run_until_committed(runner(environment(kafka, tmp_path), spec, generation=2),
                              N - 2 * CHUNK, end=N)
    assert_once(read(kafka, target, "read_committed"))
