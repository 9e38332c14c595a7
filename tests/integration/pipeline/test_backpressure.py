"""A slow sink slows the pull: what a task holds between Kafka and the sink stays bounded.

Stated bound (docs/architecture/pipeline.md): consumed-but-uncommitted records <=
(2 * queue_batches + transform_window + 3) * batch_size + two chunks' records (one being
delivered, the next one filled meanwhile), and the process grows by less than 64 MB while ~30 MB
wait in Kafka.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from tests.integration.pipeline.kit import (
    create_topic,
    environment,
    job,
    produce,
    runner,
    unique,
    wait_for,
)
from tests.integration.pipeline.receiver import Receiver

N = 30_000
BATCH = 200
BATCH_RECORDS = 100
BOUND_RECORDS = (2 * 2 + 2 + 3) * BATCH + 2 * BATCH_RECORDS
BOUND_RSS = 64 * 1024 * 1024


async def test_slow_http_sink_keeps_the_task_bounded(kafka: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("slow"))
    filler = "x" * 1000
    produce(kafka, topic, (f'{{"id": {i}, "pad": "{filler}"}}'.encode() for i in range(N)))
    me = psutil.Process()
    async with Receiver(delay=0.2) as receiver:
        spec = job(topic, {"type": "http", "url": receiver.url, "batch_records": BATCH_RECORDS},
                   transform={"parse": {"format": "json"}})
        r = runner(environment(kafka, tmp_path), spec)
        rss0 = me.memory_info().rss
        peak_held, peak_rss = 0, rss0
        await r.start()
        try:
            def sample() -> bool:
                nonlocal peak_held, peak_rss
                held = r.source.position - max(r.stats().committed_offset, 0)
                peak_held = max(peak_held, held)
                peak_rss = max(peak_rss, me.memory_info().rss)
                return len(receiver.accepted) >= 15
            await wait_for(sample, "15 slow requests")
        finally:
            await r.stop(drain=False)
    stats = r.stats()
    print(f"peak held: {peak_held} records (bound {BOUND_RECORDS}); "
          f"RSS growth: {(peak_rss - rss0) / 2**20:.1f} MiB")
    assert stats.consumer_lag > N // 2, stats          # the pull did not race ahead
    assert peak_held <= BOUND_RECORDS, (peak_held, BOUND_RECORDS)
    assert peak_rss - rss0 < BOUND_RSS, (peak_rss - rss0) / 1e6
