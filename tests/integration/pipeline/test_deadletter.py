"""Poison records never wedge a partition (issue 16, failure 3), on a real Kafka and moto S3.

A record too large for the dead-letter topic is dead-lettered truncated, with its reason and
coordinates, and the records behind it are exported; a task restarted in the middle (stopped
without drain, nothing committed: the next owner re-reads everything) leaves each dead letter in
the topic exactly once, as a read_committed reader sees it.
"""

from __future__ import annotations

import collections
import json
import time
import uuid
from pathlib import Path

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tasks.deadletter import marks_group
from tasks.pipeline import PipelineRunner
from tasks.spec import JobSpec
from tests.integration.pipeline.kit import (
    DEADLINE,
    environment,
    job,
    json_records,
    lines,
    new_bucket,
    run_until_committed,
    runner,
    s3_objects,
    unique,
    wait_for,
)
from tests.integration.pipeline.test_recovery import committed as committed_now
from tests.integration.pipeline.test_recovery import task_process

BIG = 1_500_000          # over the dead-letter topic's (broker default) ~1 MB message limit
TOPIC_LIMIT = 4 * 1024 * 1024
SENTINEL = b"sentinel"


def big_topic(bootstrap: str, name: str) -> str:
    """A source topic that takes messages of up to 4 MiB (the dead-letter topic does not)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(name, num_partitions=1, replication_factor=1,
                     config={"max.message.bytes": str(TOPIC_LIMIT)})
    admin.create_topics([topic])[name].result(30)
    return name


def produce_values(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "message.max.bytes": TOPIC_LIMIT})
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    for value in values:
        producer.produce(topic, value=value, partition=0, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors[:3]


def dead_letters(bootstrap: str, topic: str) -> list[Message]:
    """Everything a read_committed reader sees in the dead-letter topic: a sentinel is appended
    after the tasks stopped, and the topic is read up to it (its one partition, in order)."""
    produce_values(bootstrap, topic, [SENTINEL])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("dlq-reader"),
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[Message] = []
    deadline = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(100, 0.5) if m.error() is None]
            if any(m.value() == SENTINEL for m in batch):
                return out + [m for m in batch if m.value() != SENTINEL]
            out.extend(batch)
    finally:
        consumer.close()
    raise AssertionError(f"no sentinel in {topic} after {DEADLINE}s ({len(out)} read)")


def committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offset of the topic's partition 0; -1 while the broker cannot
    say yet (a group coordinator still loading answers NOT_COORDINATOR)."""
    try:
        return committed_now(bootstrap, group, topic)
    except KafkaException:
        return -1


def headers(msg: Message) -> dict[str, bytes]:
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v if isinstance(v, bytes) else b"" for k, v in pairs}


async def crash_after_dead_letters(first: PipelineRunner, dead: int) -> None:
    """Run until `dead` dead letters are written, then stop without drain: nothing committed
    (the rotation is far off), so the next owner re-reads every record."""
    await first.start()
    try:
        await wait_for(lambda: first.stats().dead_letters_total >= dead,
                       f"{dead} dead letters (stats: {first.stats()})")
    finally:
        await first.stop(drain=False)


def s3_job(topic: str, bucket: str) -> JobSpec:
    return job(topic, {"type": "s3", "bucket": bucket},
               transform={"parse": {"format": "json"}, "select": "{id: id}"})


async def test_a_record_too_large_for_the_dead_letter_topic_is_truncated_and_the_rest_flows(
        kafka: str, s3: str, tmp_path: Path) -> None:
    topic = big_topic(kafka, unique("poison"))
    n, big_at, small_bad = 200, 100, (120, 150, 180)
    poison = b"{" + uuid.uuid4().hex.encode() * (BIG // 32)   # not JSON, 1.5 MB
    values = [poison if i == big_at else b"{not json" if i in small_bad else v
              for i, v in enumerate(json_records(0, n))]
    produce_values(kafka, topic, values)
    bucket = new_bucket(s3)
    spec = s3_job(topic, bucket)
    env = environment(kafka, tmp_path, s3)

    await crash_after_dead_letters(runner(env, spec, generation=1), 1 + len(small_bad))
    second = runner(env, spec, generation=2)
    await run_until_committed(second, n)

    exported = lines(s3_objects(s3, bucket).values())
    counts = collections.Counter(e["id"] for e in exported)
    assert sorted(counts) == [i for i in range(n) if i != big_at and i not in small_bad]
    assert set(counts.values()) == {1}

    dead = dead_letters(kafka, spec.dead_letter_topic)
    by_offset = collections.Counter(int(headers(m)["source_offset"]) for m in dead)
    assert by_offset == {o: 1 for o in (big_at, *small_bad)}, by_offset   # once each
    [big] = [m for m in dead if int(headers(m)["source_offset"]) == big_at]
    h = headers(big)
    value = big.value() or b""
    assert 0 < len(value) < 1_000_000
    assert poison.startswith(value)                       # the head of the record, cut
    assert h["source_topic"] == topic.encode() and h["source_partition"] == b"0"
    assert h["original_size"] == str(len(poison)).encode()
    assert h["reason"].startswith(b"invalid JSON")
    assert h["truncated"].startswith(f"kept {len(value)} of {len(poison)} bytes".encode())
    for m in dead:
        if m is not big:
            assert m.value() == b"{not json" and "truncated" not in headers(m)
    assert second.stats().dead_letters_total == 1 + len(small_bad)


async def test_a_restart_writes_no_dead_letter_twice(kafka: str, s3: str, tmp_path: Path) -> None:
    topic = big_topic(kafka, unique("dlqonce"))
    n = 300
    values = [b"{not json" if i % 10 == 3 else v for i, v in enumerate(json_records(0, n))]
    produce_values(kafka, topic, values)
    bucket = new_bucket(s3)
    spec = s3_job(topic, bucket)
    env = environment(kafka, tmp_path, s3)
    bad = [i for i in range(n) if i % 10 == 3]

    # Two owners in turn stop without committing; the third re-reads all and drains.
    await crash_after_dead_letters(runner(env, spec, generation=1), len(bad) // 2)
    await crash_after_dead_letters(runner(env, spec, generation=2), len(bad))
    await run_until_committed(runner(env, spec, generation=3), n)

    dead = dead_letters(kafka, spec.dead_letter_topic)
    offsets = [int(headers(m)["source_offset"]) for m in dead]
    assert sorted(offsets) == bad, collections.Counter(offsets).most_common(3)
    exported = sorted(e["id"] for e in lines(s3_objects(s3, bucket).values()))
    assert exported == [i for i in range(n) if i % 10 != 3]


async def test_a_zombie_writes_no_dead_letter_once_the_next_owner_started(
        kafka: str, s3: str, tmp_path: Path) -> None:
    topic = big_topic(kafka, unique("dlqzombie"))
    bad_first, bad_later = [b"{not json"] * 5, [b"{later"] * 5
    produce_values(kafka, topic, json_records(0, 20) + bad_first)
    bucket = new_bucket(s3)
    spec = s3_job(topic, bucket)
    env = environment(kafka, tmp_path, s3)
    zombie, owner = runner(env, spec, generation=1), runner(env, spec, generation=2)
    await zombie.start()
    try:
        await wait_for(lambda: zombie.stats().dead_letters_total == 5, "the zombie's first 5")
        # The next owner starts while the first still runs (it lost its lease but does not
        # know yet): its first dead letter fences the first owner's dead-letter producer.
        await owner.start()
        try:
            await wait_for(lambda: owner.stats().dead_letters_total == 5, "the owner's first 5")
            produce_values(kafka, topic, bad_later)
            await wait_for(lambda: owner.stats().dead_letters_total == 10, "the owner's next 5")
            await wait_for(lambda: "fenced" in zombie.stats().last_error,
                           f"the zombie fenced ({zombie.stats()})")
            assert zombie.stats().dead_letters_total == 5
        finally:
            await owner.stop(drain=True)
    finally:
        await zombie.stop(drain=False)

    dead = dead_letters(kafka, spec.dead_letter_topic)
    assert sorted(int(headers(m)["source_offset"]) for m in dead) == list(range(20, 30))


async def test_a_file_dead_letter_is_not_repeated_after_a_restart_or_a_torn_line(
        kafka: str, tmp_path: Path) -> None:
    topic = big_topic(kafka, unique("dlqfile"))
    n = 200
    values = [b"{not json" if i % 10 == 3 else v for i, v in enumerate(json_records(0, n))]
    produce_values(kafka, topic, values)
    spec = job(topic, {"type": "file", "directory": "out"},
               transform={"parse": {"format": "json"}, "select": "{id: id}"},
               dead_letter={"type": "file", "directory": "dlq"})
    env = environment(kafka, tmp_path)
    bad = [i for i in range(n) if i % 10 == 3]

    await crash_after_dead_letters(runner(env, spec, generation=1), len(bad))
    [path] = (tmp_path / "dlq").rglob("*.ndjson")
    written = path.read_bytes()
    last = written.splitlines()[-1]
    # A crash in the middle of the last append: half its line is on disk.
    path.write_bytes(written[:-len(last) - 1] + last[:len(last) // 2])
    await run_until_committed(runner(env, spec, generation=2), n)

    dead = lines([path.read_bytes()])
    assert [d["offset"] for d in dead] == bad
    assert {d["stage"] for d in dead} == {"transform"}


async def test_kill_9_while_dead_letters_are_written_leaves_each_once(
        kafka: str, s3: str, tmp_path: Path) -> None:
    """A task's process killed with -9 (an open dead-letter transaction, nothing drained) and
    started again: the new producer's init aborts what was open, the marks say what is written."""
    n = 6000
    topic = big_topic(kafka, unique("dlqkill"))
    values = [b"{not json" if i % 3 == 0 else v for i, v in enumerate(json_records(0, n))]
    produce_values(kafka, topic, values)
    bucket = new_bucket(s3)
    spec = job(topic, {"type": "s3", "bucket": bucket},
               transform={"parse": {"format": "json"}, "select": "{id: id}"},
               rotation={"max_records": 500})
    spec_file = tmp_path / "spec.json"
    spec_file.write_bytes(spec.to_json())
    marks = marks_group(spec.consumer_group)

    first = task_process(spec_file, kafka, s3, tmp_path, 1)
    try:
        await wait_for(lambda: committed(kafka, marks, topic) > 0, "the first dead letters")
        first.proc.kill()   # kill -9: no drain, no abort, no close
        first.proc.wait(10)
    finally:
        first.stop()
    at_kill = -1
    for _ in range(100):   # bounded: the coordinator may still be loading the group
        at_kill = committed(kafka, marks, topic)
        if at_kill >= 0:
            break
    assert 0 < at_kill < n, "the first run finished: nothing was tested"

    second = task_process(spec_file, kafka, s3, tmp_path, 2)
    try:
        await wait_for(lambda: committed(kafka, spec.consumer_group, topic) >= n,
                       f"commit of {n} after the restart", 90)
    finally:
        second.stop()   # SIGTERM: drains

    dead = dead_letters(kafka, spec.dead_letter_topic)
    offsets = collections.Counter(int(headers(m)["source_offset"]) for m in dead)
    assert sorted(offsets) == list(range(0, n, 3))
    assert set(offsets.values()) == {1}, offsets.most_common(3)
    exported = collections.Counter(e["id"] for e in lines(s3_objects(s3, bucket).values()))
    assert sorted(exported) == [i for i in range(n) if i % 3] and set(exported.values()) == {1}


async def test_a_record_too_large_for_the_kafka_sink_is_dead_lettered_and_the_rest_flows(
        kafka: str, tmp_path: Path) -> None:
    topic = big_topic(kafka, unique("sinkpoison"))
    target = unique("sinkout")     # created by the broker: its default limit (~1 MB)
    n, big_at = 60, 30
    big = json.dumps({"id": big_at, "pad": "x" * BIG}).encode()   # valid JSON, 1.5 MB
    values = [big if i == big_at else v for i, v in enumerate(json_records(0, n))]
    produce_values(kafka, topic, values)
    spec = job(topic, {"type": "kafka", "topic": target}, transform={"parse": {"format": "json"}})
    r = runner(environment(kafka, tmp_path), spec)
    await run_until_committed(r, n)

    exported = [json.loads(m.value() or b"")["id"] for m in dead_letters(kafka, target)]
    assert sorted(exported) == [i for i in range(n) if i != big_at]
    [dead] = dead_letters(kafka, spec.dead_letter_topic)
    h = headers(dead)
    assert h["source_offset"] == str(big_at).encode()
    assert h["reason"].startswith(b"record of ") and b"Kafka sink" in h["reason"]
    assert "truncated" in h     # and cut to fit the dead-letter topic
    assert r.stats().dead_letters_total == 1 and r.stats().exported_total == n - 1


async def test_a_dead_letter_destination_that_keeps_failing_is_retried_in_place_and_shown(
        kafka: str, tmp_path: Path) -> None:
    """No restart loop: the task stays running, backs off, shows the error, and goes on once
    the destination works again."""
    topic = big_topic(kafka, unique("dlqdown"))
    values = [b"{not json" if i % 10 == 3 else v for i, v in enumerate(json_records(0, 50))]
    produce_values(kafka, topic, values)
    spec = job(topic, {"type": "file", "directory": "out"},
               transform={"parse": {"format": "json"}},
               dead_letter={"type": "file", "directory": "dlq"})
    blocker = tmp_path / "dlq" / spec.id
    blocker.parent.mkdir()
    blocker.write_bytes(b"")          # a file where the job's directory should be
    r = runner(environment(kafka, tmp_path), spec)
    await r.start()
    try:
        await wait_for(lambda: "dead-letter: cannot append" in r.stats().last_error,
                       "the dead-letter error in the task's stats")
        assert r.stats().state.value == "running" and r.stats().dead_letters_total == 0
        blocker.unlink()
        await wait_for(lambda: r.stats().dead_letters_total == 5, "the dead letters, later")
    finally:
        await r.stop(drain=True)
    assert r.stats().committed_offset == 50
    dead = lines(p.read_bytes() for p in (tmp_path / "dlq").rglob("*.ndjson"))
    assert [d["offset"] for d in dead] == [3, 13, 23, 33, 43]
