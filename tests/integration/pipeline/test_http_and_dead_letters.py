"""HTTP sink against a real receiver (500 retried, 400 dead-lettered, idempotency keys), and
malformed records dead-lettered to Kafka with their reasons while the rest flows."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from tasks.fence import WorkerFence
from tests.integration.pipeline.kit import (
    consume_all,
    create_topic,
    environment,
    job,
    json_records,
    lines,
    produce,
    run_until_committed,
    runner,
    unique,
    wait_for,
)
from tests.integration.pipeline.receiver import Receiver, Request

N = 300


async def test_http_retries_500_and_dead_letters_400(kafka: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("http"))
    produce(kafka, topic, json_records(0, N))

    def decide(req: Request, n: int) -> int:
        if n < 2:
            return 500            # the first two requests fail: retried
        if any(r["id"] == 120 for r in req.records):
            return 400            # the batch holding record 120 is refused: dead-lettered
        return 200

    dlq = tmp_path / "dlq"
    async with Receiver(decide) as receiver:
        spec = job(topic, {"type": "http", "url": receiver.url, "batch_records": 50},
                   transform={"parse": {"format": "json"}},
                   dead_letter={"type": "file", "directory": str(dlq)})
        r = runner(environment(kafka, tmp_path), spec)
        await run_until_committed(r, N)

    assert receiver.statuses[:2] == [500, 500]
    assert receiver.statuses.count(400) == 1
    keys = [req.key for req in receiver.accepted]
    # The key names the batch's offsets: the 500s' retries and the accepted POST share it.
    assert keys == [f"{r.task_id}:{o}-{o + 50}" for o in (0, 50, 150, 200, 250)]
    got = sorted(rec["id"] for req in receiver.accepted for rec in req.records)
    assert got == [i for i in range(N) if not 100 <= i < 150]
    dead = lines(p.read_bytes() for p in dlq.rglob("*.ndjson"))
    assert sorted(d["offset"] for d in dead) == list(range(100, 150))
    assert all(d["reason"].startswith("HTTP 400") and "poison" in d["reason"] for d in dead)
    assert r.stats().dead_letters_total == 50


async def test_a_header_secret_comes_from_the_servers_environment_not_the_spec(
        kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    topic = create_topic(kafka, unique("hsecret"))
    produce(kafka, topic, json_records(0, 100))
    monkeypatch.setenv("EXPORTD_SECRET_INGEST_TOKEN", "t0k'en")
    async with Receiver() as receiver:
        auth = {"Authorization": "Bearer ${env:EXPORTD_SECRET_INGEST_TOKEN}"}
        spec = job(topic, {"type": "http", "url": receiver.url, "batch_records": 50,
                           "headers": auth},
                   transform={"parse": {"format": "json"}})
        await run_until_committed(runner(environment(kafka, tmp_path), spec), 100)
    assert [req.authorization for req in receiver.accepted] == ["Bearer t0k'en"] * 2
    assert b"t0k'en" not in spec.to_json()   # what ZooKeeper stores and the API shows


async def test_malformed_records_go_to_the_dlq_topic_and_the_rest_flows(
        kafka: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("bad"))
    good = json_records(0, 100)
    values = [v if i % 10 else b"{not json" for i, v in enumerate(good)]
    produce(kafka, topic, values)
    out = tmp_path / "out"
    spec = job(topic, {"type": "file", "directory": str(out)},
               transform={"parse": {"format": "json"}, "select": "{id: id}"})
    r = runner(environment(kafka, tmp_path), spec)
    await run_until_committed(r, 100)

    exported = lines(p.read_bytes() for p in out.rglob("*.ndjson"))
    assert [e["id"] for e in exported] == [i for i in range(100) if i % 10]
    dead = consume_all(kafka, spec.dead_letter_topic, 10)
    assert len(dead) == 10
    for msg in dead:
        raw = msg.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        headers = {k: v if isinstance(v, bytes) else b"" for k, v in pairs}
        assert msg.value() == b"{not json"
        assert int(headers["source_offset"]) % 10 == 0
        assert headers["reason"].startswith(b"invalid JSON")
        assert msg.key() == r.task_id.encode()
    assert r.stats().dead_letters_total == 10
    assert r.stats().records_total == 100


async def test_no_post_once_the_lease_ran_out_and_every_owner_sends_the_same_keys(
        kafka: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("hfence"))
    produce(kafka, topic, json_records(0, 200))
    fence = WorkerFence()

    def decide(_req: Request, n: int) -> int:
        if n == 0:
            fence.revoke()  # the lease runs out while the first POST is answered
            return 503
        return 200

    async with Receiver(decide) as receiver:
        spec = job(topic, {"type": "http", "url": receiver.url, "batch_records": 50},
                   transform={"parse": {"format": "json"}})
        env = dataclasses.replace(environment(kafka, tmp_path), fence=fence)
        first = runner(env, spec)
        await first.start()
        try:
            await wait_for(lambda: "lease ran out" in first.stats().last_error,
                           "the retry refused by the lease")
            assert receiver.statuses == [503]   # no request started after the lease ran out
            fence.renew(math.inf)
            await wait_for(lambda: len(receiver.accepted) == 4, "the four batches")
        finally:
            await first.stop(drain=True)
        # Another owner re-sending from offset 0 (its own consumer group: nothing committed)
        # sends the same batches under the same keys: the receiver's way to drop them.
        again = spec.model_copy(update={"source": spec.source.model_copy(
            update={"consumer_group": unique("again")})})
        await run_until_committed(runner(environment(kafka, tmp_path), again), 200)

    keys = [req.key for req in receiver.accepted]
    expected = [f"{first.task_id}:{o}-{o + 50}" for o in (0, 50, 100, 150)]
    assert keys == expected * 2
