"""Issue 16, failure 3, on a real `exportd-server`: one record of 1.5 MB (over the dead-letter
topic's ~1 MB) among good ones no longer stops its partition, and the task's worker process
killed after the dead letters were written (nothing committed: the restarted task re-reads
everything) leaves each dead letter in the topic once."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import uuid
from pathlib import Path

from proto import exportd_pb2 as pb
from tasks.runner import task_id
from tests.integration.pipeline.kit import job, json_records, unique
from tests.integration.pipeline.test_deadletter import (
    BIG,
    big_topic,
    dead_letters,
    headers,
    produce_values,
)
from tests.integration.server.harness import (
    Coordinator,
    assignment,
    exported_ids,
    last_status,
    process_settings,
    server_process,
    wait_until,
)
from tests.integration.server.test_real_task import worker_pids


async def test_a_poison_record_neither_wedges_the_partition_nor_repeats_after_a_restart(
        kafka: str, zookeeper: str, cluster: str, coordinator: Coordinator,
        tmp_path: Path) -> None:
    n, big_at, small_bad = 400, 150, (20, 170, 390)
    poison = b"{" + uuid.uuid4().hex.encode() * (BIG // 32)    # not JSON, 1.5 MB
    topic = big_topic(kafka, unique("srvpoison"))
    values = [poison if i == big_at else b"{not json" if i in small_bad else v
              for i, v in enumerate(json_records(0, n))]
    produce_values(kafka, topic, values)
    out = tmp_path / "out"
    spec = job(topic, {"type": "file", "directory": str(out)},
               transform={"parse": {"format": "json"}, "select": "{id: id}"},
               source={"topic": topic, "batch_size": 50})   # one file at the drain
    tid = task_id(spec.id, topic, 0)
    coordinator.desired = [assignment(tid, 1, spec)]
    settings = {**process_settings("poison-server", zookeeper, cluster, tmp_path),
                "kafka.bootstrap_servers": kafka, "session.restart_backoff": "0.2s"}
    log_path = tmp_path / "server.log"
    dead = 1 + len(small_bad)
    async with server_process(settings, log_path) as proc:
        def status() -> pb.TaskStatus:
            return last_status(coordinator, tid, proc, log_path) or pb.TaskStatus()

        await wait_until(lambda: status().records_total >= n
                         and status().dead_letters_total >= dead,
                         "every record read and its dead letters written", timeout=90)
        assert status().committed_offset <= 0, "nothing committed yet: the restart re-reads"
        (victim,) = worker_pids(proc.pid)
        os.kill(victim, signal.SIGKILL)
        await wait_until(lambda: status().state == pb.TASK_STATE_FAILED, "the task failed")
        await wait_until(lambda: status().state == pb.TASK_STATE_RUNNING
                         and status().records_total >= n and status().dead_letters_total >= dead,
                         "the restarted task through every record", timeout=90)
        proc.send_signal(signal.SIGTERM)          # drains: the one file, and its commit
        assert await asyncio.wait_for(proc.wait(), 90) == 0, log_path.read_text()[-3000:]
    final = {t.task_id: t for t in coordinator.reports[-1].tasks}[tid]
    assert final.committed_offset == n

    assert exported_ids(out) == [i for i in range(n) if i != big_at and i not in small_bad]
    letters = dead_letters(kafka, spec.dead_letter_topic)
    offsets = collections.Counter(int(headers(m)["source_offset"]) for m in letters)
    assert offsets == {o: 1 for o in (big_at, *small_bad)}, offsets
    [big] = [m for m in letters if int(headers(m)["source_offset"]) == big_at]
    assert headers(big)["original_size"] == str(len(poison)).encode()
    assert "truncated" in headers(big) and poison.startswith(big.value() or b"")
