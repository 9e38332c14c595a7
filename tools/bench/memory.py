"""Memory benchmark: `.venv/bin/python -m tools.bench.memory --partitions 20 50 [--before TREE]`.

Not a timed test: it prints a report (and the machine) for docs/benchmarks/memory.md.

Starts its own Kafka and moto S3 (tools.infra). For each partition count it fills a topic with a
backlog of `--backlog-mb` of ~650-byte JSON records per partition, then runs one server's worth
of tasks — one per partition, in a WorkerPool of `--workers` processes as exportd-server runs
them — in a fresh child process, into S3 (moto) with 64 MiB rotation (and `--max-seconds`, so
files close during the run):

1. catch-up: every task starts on its backlog at once; until all of it is consumed;
2. rest: `--rest-s` seconds idle after the catch-up (memory given back or not);
3. steady: a producer process adds `--rate` records/s over all partitions for `--steady-s`;
4. drain: every task drains (the last files upload together), then the pool closes.

Peak RSS of the process tree (the child, which plays the server's main process, and its worker
processes; psutil, every 100 ms) is reported per phase, with the RSS at the end of the rest.
Then every object is read back: every record (partition, id) must be there exactly once.

With `--before TREE` (`git worktree add /tmp/old-mem a551b63`) each partition count also runs
from that tree's code (the child imports `tasks` from TREE), interleaved, against the same
broker and S3: that tree has no memory budget and sizes prefetch per task.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
PAD = "x" * 560          # records of ~650 B
BATCH = 1000
PHASE_TIMEOUT = 900.0
MiB = 1024 * 1024


def record(partition: int, i: int) -> bytes:
    return json.dumps({"p": partition, "id": i, "time": "2026-12-05T12:00:00.000Z",
                       "pad": PAD}).encode()


def produce(bootstrap: str, topic: str, partitions: int, start: int, count: int,
            rate: float | None = None) -> None:
    """`count` records per partition, ids start..start+count; at `rate` records/s overall."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "queue.buffering.max.kbytes": 65536})
    t0, sent = time.monotonic(), 0
    for i in range(start, start + count):
        for p in range(partitions):
            for _ in range(1000):   # bounded: the queue drains while we poll
                try:
                    producer.produce(topic, value=record(p, i), partition=p)
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += 1
        producer.poll(0)
        if rate is not None:
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    if producer.flush(300) != 0:
        raise RuntimeError("producing did not finish")


class TreeMemory:
    """Peak RSS of the given processes together, sampled every 100 ms in a thread."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.peak = self.now = 0
        self._pids = pids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        procs: dict[int, psutil.Process] = {}
        while not self._stop.wait(0.1):
            total = 0
            for pid in self._pids():
                with contextlib.suppress(psutil.Error):
                    total += procs.setdefault(pid, psutil.Process(pid)).memory_info().rss
            self.now = total
            self.peak = max(self.peak, total)

    def reset(self) -> float:
        """The peak since the last reset, in MiB; starts a new one."""
        peak, self.peak = self.peak, self.now
        return peak / MiB

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def thread_names(pids: list[int]) -> dict[str, int]:
    """The threads of the processes by name (/proc/<pid>/task/*/comm), numbers folded: which
    threads a task owns (librdkafka's rdk:*, the pipeline's executors, the clients')."""
    names: collections.Counter[str] = collections.Counter()
    for pid in pids:
        for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
            with contextlib.suppress(OSError):
                names[re.sub(r"[0-9]+", "N", comm.read_text().strip())] += 1
    return dict(names.most_common())


async def _server(args: argparse.Namespace) -> dict[str, Any]:
    """The child: one server's tasks in a worker pool, through the phases."""
    from tasks.factory import TaskEnvironment
    from tasks.runner import Assignment, task_id
    from tasks.spec import parse_job_spec
    from tasks.spool import MemoryBudget
    from tasks.workers.pool import WorkerPool

    job = parse_job_spec({
        "id": f"mem-{uuid.uuid4().hex[:8]}", "source": {"topic": args.topic, "batch_size": BATCH},
        "sink": {"type": "s3", "bucket": args.bucket},
        "format": {"type": "ndjson", "compression": args.compression},
        "rotation": {"max_records": None, "max_bytes": 64 * MiB,
                     "max_seconds": args.max_seconds}})
    extra: dict[str, Any] = {}
    budgeted = hasattr(MemoryBudget, "for_host")
    if budgeted:
        extra["memory_budget"] = MemoryBudget.for_host(args.budget_mb * MiB,
                                                       args.spill_mb * MiB)
    if "egress" in {f.name for f in dataclasses.fields(TaskEnvironment)}:   # not in a551b63
        from tasks.egress import EgressSettings

        extra["egress"] = EgressSettings(file_root=args.workdir)
    env = TaskEnvironment(kafka_bootstrap=args.kafka, state_dir=Path(args.workdir),
                          s3_endpoint=args.s3, s3_access_key="bench", s3_secret_key="bench",
                          **extra)
    pool_extra: dict[str, Any] = {}
    if budgeted:
        pool_extra["trim_period_s"] = args.trim_s
        if args.malloc_arenas >= 0:
            pool_extra["malloc_arenas"] = args.malloc_arenas
    pool = WorkerPool(env, args.workers, log_level="warning", start_method="spawn",
                      stats_period_s=0.1, **pool_extra)
    pool.start()
    memory = TreeMemory(lambda: [os.getpid(), *(w.process.pid or 0 for w in pool.workers)])
    await pool.wait_ready()
    res: dict[str, Any] = {"budgeted": budgeted, "idle_mb": memory.now / MiB}
    memory.reset()
    runners = [pool.factory(Assignment(task_id(job.id, args.topic, p), 1, job, p))
               for p in range(args.partitions)]
    threads = max(len(psutil.Process(w.process.pid or 0).threads()) for w in pool.workers)

    async def until(records: int, what: str, t0: float) -> float:
        while any(r.stats().records_total < records for r in runners):
            if time.monotonic() - t0 > PHASE_TIMEOUT:
                raise RuntimeError(f"timed out: {what}")
            await asyncio.sleep(0.1)
        return time.monotonic() - t0

    try:
        t0 = time.monotonic()
        await asyncio.gather(*(r.start() for r in runners))
        res["catchup_s"] = await until(args.backlog, "catch-up", t0)
        res["catchup_peak_mb"] = memory.reset()
        await asyncio.sleep(args.rest_s)
        res["after_rest_mb"] = memory.now / MiB
        memory.reset()
        steady_each = int(args.rate * args.steady_s / args.partitions)
        producer = multiprocessing.get_context("spawn").Process(
            target=produce, args=(args.kafka, args.topic, args.partitions, args.backlog,
                                  steady_each, args.rate))
        producer.start()
        await until(args.backlog + steady_each, "steady", time.monotonic())
        producer.join(60)
        res["steady_peak_mb"] = memory.reset()
        res["threads_per_worker"] = max(
            threads, *(len(psutil.Process(w.process.pid or 0).threads()) for w in pool.workers))
        res["thread_names"] = thread_names([w.process.pid or 0 for w in pool.workers])
        await asyncio.gather(*(r.stop(drain=True) for r in runners))
        res["drain_peak_mb"] = memory.reset()
        res["records"] = args.backlog + steady_each
    finally:
        memory.stop()
        await pool.aclose()
    stats = [r.stats() for r in runners]
    res["committed"] = sum(s.committed_offset for s in stats)
    res["errors"] = sorted({s.last_error for s in stats if s.last_error})[:3]
    if budgeted:
        snap = env.memory_budget.snapshot()
        res["spilled_total_mb"] = snap["spilled_total"] / MiB
        res["spill_peak_mb"] = env.memory_budget.spill_peak / MiB
        res["bodies_peak_mb"] = env.memory_budget.peak / MiB
        res["early_cuts"] = snap["cuts_total"]
    return res


def check_exactly_once(s3: str, bucket: str, partitions: int, per_partition: int) -> str:
    import boto3

    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    seen = [bytearray(per_partition) for _ in range(partitions)]
    dup = extra = objects = 0
    from tasks.formats import decompress

    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            if "/.exportd/" in obj["Key"]:
                continue
            objects += 1
            data = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            for line in decompress(data, "gzip" if obj["Key"].endswith(".gz") else "none"
                                   ).splitlines():
                rec = json.loads(line)
                if rec["id"] >= per_partition:
                    extra += 1
                elif seen[rec["p"]][rec["id"]]:
                    dup += 1
                else:
                    seen[rec["p"]][rec["id"]] = 1
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    missing = sum(len(s) - sum(s) for s in seen)
    ok = missing == dup == extra == 0
    return (f"{'OK' if ok else 'FAILED'}: {objects} objects, missing {missing}, duplicates "
            f"{dup}, unexpected {extra}")


def run_child(argv: list[str], tree: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run([sys.executable, str(HERE), *argv], check=False, capture_output=True,
                         text=True, timeout=PHASE_TIMEOUT * 3, env=env, cwd=tree)
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}): {out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--backlog-mb", type=float, default=4.0, help="per partition")
    parser.add_argument("--rate", type=float, default=5000, help="records/s, steady phase")
    parser.add_argument("--steady-s", type=float, default=30)
    parser.add_argument("--rest-s", type=float, default=8)
    parser.add_argument("--max-seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget-mb", type=int, default=512)
    parser.add_argument("--spill-mb", type=int, default=4096)
    parser.add_argument("--trim-s", type=float, default=5.0, help="malloc_trim period; 0: off")
    parser.add_argument("--malloc-arenas", type=int, default=-1,
                        help="mallopt(M_ARENA_MAX) in the workers; 0: glibc's default; "
                             "-1: exportd's (tasks/workers/tuning.py)")
    parser.add_argument("--compression", default="none", choices=("none", "gzip"))
    parser.add_argument("--before", metavar="TREE")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kafka", help=argparse.SUPPRESS)
    parser.add_argument("--s3", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--backlog", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        from tasks.logs import configure_logging

        configure_logging(level="warning")
        args.partitions = args.partitions[0]
        print(json.dumps(asyncio.run(_server(args))))
        return

    import boto3
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    from tools.infra import start_infra

    per_partition = int(args.backlog_mb * MiB / len(record(0, 0)))
    trees = [("new", str(ROOT)), *([("a551b63", args.before)] if args.before else [])]
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()}", file=sys.stderr)
    with start_infra(("kafka", "s3")) as infra, tempfile.TemporaryDirectory() as tmp:
        client = boto3.client("s3", endpoint_url=infra.s3, region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")
        for n in args.partitions:
            for name, tree in trees:
                topic, bucket = f"mem-{uuid.uuid4().hex[:8]}", f"mem-{uuid.uuid4().hex[:8]}"
                admin = AdminClient({"bootstrap.servers": infra.kafka})
                admin.create_topics([NewTopic(topic, num_partitions=n, replication_factor=1)]
                                    )[topic].result(30)
                client.create_bucket(Bucket=bucket)
                produce(infra.kafka, topic, n, 0, per_partition)
                load = os.getloadavg()[0]
                workdir = Path(tmp) / f"{name}-{n}"
                workdir.mkdir()
                res = run_child(["--child", "--partitions", str(n), "--kafka", infra.kafka,
                                 "--s3", infra.s3, "--topic", topic, "--bucket", bucket,
                                 "--workdir", str(workdir), "--backlog", str(per_partition),
                                 *(f"--{k}={v}" for k, v in (
                                     ("rate", args.rate), ("steady-s", args.steady_s),
                                     ("rest-s", args.rest_s), ("max-seconds", args.max_seconds),
                                     ("workers", args.workers), ("budget-mb", args.budget_mb),
                                     ("spill-mb", args.spill_mb), ("trim-s", args.trim_s),
                                     ("malloc-arenas", args.malloc_arenas),
                                     ("compression", args.compression)))], tree)
                res["check"] = check_exactly_once(infra.s3, bucket, n, res["records"])
                res["load_1m"] = load
                res["load_after_1m"] = os.getloadavg()[0]
                # The backlog is GBs at 200 partitions: give the disk back before the next run.
                admin.delete_topics([topic])[topic].result(60)
                client.delete_bucket(Bucket=bucket)
                shutil.rmtree(workdir, ignore_errors=True)
                print(json.dumps({"tree": name, "partitions": n, **res}))
                sys.stdout.flush()


if __name__ == "__main__":
    main()
