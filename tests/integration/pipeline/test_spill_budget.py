"""A full spill budget cuts files early and pauses the pull: the disk bound holds, nothing is lost.

Two tasks (two partitions) share one host budget with no memory for bodies at all, so every
body goes to disk, and a spill budget of 512 KiB. The rotation (64 MiB) would put each
partition's ~2.6 MB in one object; instead a body that the spill budget refuses closes its
chunk after the batch it holds, and a new body waits (the pull pauses) until a delivery gives
room back. Checked: spilled bytes never pass the budget by more than two batches per task, every
object is under the budget plus one batch, the objects chain (each starts where the previous
ended), and every record is exported exactly once. Real Kafka and moto S3.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tasks.spool import MemoryBudget
from tests.integration.pipeline.kit import (
    create_topic,
    environment,
    job,
    new_bucket,
    produce,
    runner,
    s3_client,
    s3_objects,
    unique,
    wait_for,
)

PER_PARTITION = 4000
BATCH = 200
SPILL = 512 * 1024
PAD = "x" * 600          # ~650-byte JSON records, as in the memory benchmark
BATCH_BYTES = BATCH * (len(PAD) + 60)


def record(partition: int, i: int) -> bytes:
    return json.dumps({"p": partition, "id": i, "pad": PAD}).encode()


async def test_a_full_spill_budget_cuts_files_early_and_loses_nothing(
        kafka: str, s3: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("spill"), partitions=2)
    for p in (0, 1):
        produce(kafka, topic, (record(p, i) for i in range(PER_PARTITION)), partition=p)
    bucket = new_bucket(s3)
    spec = job(topic, {"type": "s3", "bucket": bucket, "prefix": "spill"},
               rotation={"max_bytes": 64 * 2**20, "max_seconds": 600})
    budget = MemoryBudget(0, spill_limit=SPILL)
    env = dataclasses.replace(environment(kafka, tmp_path, s3), memory_budget=budget)
    runners = [runner(env, spec, partition=p) for p in (0, 1)]
    for r in runners:
        await r.start()
    try:
        await wait_for(lambda: all(r.stats().records_total >= PER_PARTITION for r in runners),
                       "every record consumed")
    finally:
        for r in runners:
            await r.stop(drain=True)
    assert [r.stats().committed_offset for r in runners] == [PER_PARTITION] * 2

    # The disk bound: at most two batches per task past the budget (the batch that cut a chunk,
    # and one a new body wrote after waiting SPILL_WAIT_S while that chunk was still being
    # uploaded), all of it given back.
    assert budget.spill_peak <= SPILL + 2 * 2 * BATCH_BYTES, (budget.spill_peak, SPILL)
    assert budget.spilled == 0 and budget.used == 0
    assert budget.spilled_total >= 2 * PER_PARTITION * len(PAD)   # everything went to disk
    assert budget.cuts_total >= 6 and budget.paused == 0              # counted for the metrics
    assert budget.pipeline == 0 < budget.pipeline_peak                # batches counted, released

    objects = s3_objects(s3, bucket)
    client = s3_client(s3)
    for p in (0, 1):
        keys = sorted(k for k in objects if f"+{p}+" in k)
        # Cut early: without the spill budget each partition is one 2.6 MB object.
        assert len(keys) >= 4, keys
        ends = []
        for key in keys:
            assert len(objects[key]) <= SPILL + BATCH_BYTES, (key, len(objects[key]))
            head = client.head_object(Bucket=bucket, Key=key)
            ends.append(int(head["Metadata"]["end-offset"]))
        starts = [int(k.rsplit("+", 1)[1].split(".")[0]) for k in keys]
        assert starts == [0, *ends[:-1]] and ends[-1] == PER_PARTITION   # one chain
        ids = [json.loads(line)["id"] for k in keys for line in objects[k].splitlines()]
        assert ids == list(range(PER_PARTITION))                          # each record once
