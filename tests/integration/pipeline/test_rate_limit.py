"""A job's rate_limit holds on real Kafka while an unlimited job beside it keeps its throughput.

The limited job's limit is 4,000 records/s over 2 tasks: this task's share is 2,000 records/s,
and over 30 s it must read within 10 % of 60,000 records. Meanwhile unlimited jobs in the same
process (the same server: one group) read a backlog back to back, round after round; the median
round must take no more than 1/0.75 of the median of three rounds alone just before. Bounded:
about a minute in all, every wait with a deadline.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from tasks.factory import build_runner
from tasks.pipeline import PipelineRunner
from tasks.runner import Assignment, task_id
from tasks.spec import JobSpec, parse_job_spec
from tests.integration.pipeline.kit import create_topic, environment, produce, unique, wait_for

SHARE = 2000.0          # records/s of the limited task: the job's 4,000 over its 2 tasks
WINDOW = 30.0
BACKLOG = 200_000       # records an unlimited job reads, in rounds alone and beside the limited one


def _job(topic: str, directory: Path, **extra: object) -> JobSpec:
    return parse_job_spec({"id": unique("job"), "source": {"topic": topic, "batch_size": 1000},
                           "sink": {"type": "file", "directory": str(directory)},
                           "rotation": {"max_records": 50_000}, **extra})


def _runner(tmp: Path, kafka: str, spec: JobSpec, job_tasks: int = 0) -> PipelineRunner:
    return build_runner(environment(kafka, tmp),
                        Assignment(task_id(spec.id, spec.source.topic, 0), 1, spec, 0,
                                   job_tasks=job_tasks))


async def _backlog_seconds(r: PipelineRunner) -> float:
    started = time.monotonic()
    await r.start()
    try:
        await wait_for(lambda: r.stats().records_total >= BACKLOG, "the backlog read", 120)
        return time.monotonic() - started
    finally:
        await r.stop(drain=False)


async def test_a_limited_job_holds_its_rate_and_an_unlimited_one_keeps_its_throughput(
        kafka: str, tmp_path: Path) -> None:
    limited_topic = create_topic(kafka, unique("limited"))
    busy_topic = create_topic(kafka, unique("busy"))
    value = b"x" * 100
    produce(kafka, limited_topic, (value for _ in range(int(SHARE * WINDOW * 1.5))))
    produce(kafka, busy_topic, (value for _ in range(BACKLOG)))

    busy = 0

    async def busy_round() -> float:
        nonlocal busy
        busy += 1
        spec = _job(busy_topic, tmp_path / f"busy-{busy}")   # a new job: reads from the start
        return await _backlog_seconds(_runner(tmp_path, kafka, spec))

    await busy_round()   # warm-up: the broker's and our caches
    alone = [await busy_round() for _ in range(3)]

    limited = _runner(tmp_path, kafka, _job(limited_topic, tmp_path / "l",
                                            rate_limit={"records_per_s": 2 * SHARE}),
                      job_tasks=2)
    await limited.start()
    try:
        started = time.monotonic()
        beside: list[float] = []
        while time.monotonic() - started < WINDOW - 5 and len(beside) < 100:
            beside.append(await busy_round())
        await wait_for(lambda: time.monotonic() - started >= WINDOW, "the window", WINDOW)
        stats = limited.stats()
    finally:
        await limited.stop(drain=False)
    rate = stats.records_total / WINDOW
    print(f"limited: {rate:.0f} records/s (share {SHARE:.0f}), waited {stats.rate_limited_s:.1f} s;"
          f" unlimited, {BACKLOG} records: {statistics.median(alone):.2f} s alone (median of 3),"
          f" {statistics.median(beside):.2f} s beside it (median of {len(beside)})")
    assert abs(rate - SHARE) <= 0.1 * SHARE, rate
    assert stats.rate_share_records_per_s == SHARE
    assert stats.rate_limited_s > WINDOW / 2, stats
    assert len(beside) >= 3, beside
    assert statistics.median(beside) <= statistics.median(alone) / 0.75, (alone, beside)
