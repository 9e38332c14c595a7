"""Pipeline benchmark: `.venv/bin/python -m tools.bench.pipeline [--records N] [--json]`.

Not a timed test: it prints a report (and the machine) for docs/benchmarks/pipeline.md.

Starts its own Kafka and moto S3 (tools.infra), fills a 4-partition topic with nginx-style JSON
records (~250 B each), then runs three phases, each in a fresh child process so CPU and peak RSS
are its own (pool workers included):

(a) baseline: one confluent-kafka consumer assigned to all partitions, batch `consume`, records
    discarded;
(b) exportd passthrough: one task per partition (raw → NDJSON) to the file sink;
(c) exportd transform: json parse + JMESPath `where` and `select` + NDJSON gzip to S3 (moto).

The exportd phases run their tasks the way exportd-server does: in a WorkerPool (tasks/workers)
of one process per core (`--workers`), the phase's own process only starting and watching them.

Before the phases, one unmeasured read of the whole topic warms the broker (its JIT, and the
log segments in the page cache): without it the first phase paid for the broker's warm-up, 2-3x
its later CPU for the same reads. Then (a), (b), (c) run in `--rounds` interleaved rounds (3):
the broker shares the machine and a VM's speed drifts, so one run of each said little (the same
bare read took 0.94-1.33M records/s within one run of the script). The ratios are of the median
runs; the ratio against the fastest (a) — the harder comparison — is printed too.

With `--before TREE` (a checkout of an earlier commit, e.g. `git worktree add /tmp/before
a551b63`), each round also runs (b) and (c) from that tree — "b0", "c0" — interleaved with this
tree's, against the same broker, topic and S3: the report adds b/b0 and c/c0 (the cost of a
change, e.g. create-only writes and worker fencing, measured in one run).

Reported: records/s, MB/s (of consumed values), CPU seconds (the phase's processes over their
lifetime, and within the measured window only, per record too), the Kafka broker's CPU seconds
during the phase (it shares the cores), peak RSS, and the ratios b/a and c/a.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import resource
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
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

PARTITIONS = 4
BATCH = 5000
PHASE_TIMEOUT = 1800.0
# Files of ~25 MB: each file costs a fixed ~50 ms (write + fsync or PUT, then a synchronous
# commit) before the next may start, so the spec default of 10,000 records caps a task at
# ~200k records/s. Exports to files and objects use large files anyway.
ROTATION = {"max_records": 100_000, "max_bytes": 64 * 1024 * 1024}
WHERE = "status < `500`"
SELECT = "{t: time, ip: remote_addr, m: method, p: path, s: status, b: body_bytes_sent}"


def record(rand: random.Random, i: int) -> bytes:
    status = rand.choice((200, 200, 200, 200, 200, 200, 301, 404, 404, 500))
    return json.dumps({
        "time": f"2026-11-22T07:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z",
        "remote_addr": f"10.{i % 256}.{i // 256 % 256}.{rand.randrange(256)}",
        "method": rand.choice(("GET", "GET", "GET", "POST", "PUT")),
        "path": f"/api/items/{rand.randrange(10**6)}",
        "protocol": "HTTP/1.1", "status": status, "body_bytes_sent": rand.randrange(100000),
        "referer": "https://example.com/",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0",
        "request_time": round(rand.random(), 3),
    }, separators=(",", ":")).encode()


def fill(bootstrap: str, topic: str, n: int,
         encode: Callable[[bytes], bytes] | None = None) -> tuple[int, float]:
    """Create the topic and produce n records round-robin; `encode` turns each JSON record into
    what is produced (tools/bench/schemas.py: Avro in the registry's wire format)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the request
    admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                         "batch.num.messages": 10000, "queue.buffering.max.kbytes": 262144})
    rand, total = random.Random(7), 0
    for i in range(n):
        value = record(rand, i) if encode is None else encode(record(rand, i))
        total += len(value)
        while True:
            try:
                producer.produce(topic, value=value, partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10000 == 0:
            producer.poll(0)
    if producer.flush(300) != 0:
        raise RuntimeError("producing the benchmark data did not finish")
    return total, total / n


class TreeMemory:
    """Peak RSS of this process and its worker processes together, sampled every 100 ms in a
    thread until stopped. The pids come from the pool: scanning /proc for descendants each time
    would take CPU from the phase being measured."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.peak = 0
        self._pids = pids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        procs: dict[int, psutil.Process] = {}
        while not self._stop.wait(0.1):
            total = 0
            for pid in self._pids():
                with contextlib.suppress(psutil.Error):   # a process that just exited
                    total += procs.setdefault(pid, psutil.Process(pid)).memory_info().rss
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def usage() -> dict[str, float]:
    """CPU of the process and its (exited, joined) worker processes; peak RSS of the process
    alone (getrusage), which the exportd phases replace with the whole tree's."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
            "peak_rss_mb": me.ru_maxrss / 1024}


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def phase_baseline(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                         "enable.auto.commit": False, "queued.max.messages.kbytes": 8192,
                         "fetch.queue.backoff.ms": 20})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen, nbytes = 0, 0
    me = [psutil.Process()]
    cpu0 = _cpu(me)
    start = time.monotonic()
    while seen < n and time.monotonic() - start < PHASE_TIMEOUT:
        for msg in consumer.consume(BATCH, 0.5):
            if msg.error() is None:
                seen += 1
                nbytes += len(msg.value() or b"")
    wall = time.monotonic() - start
    window_cpu = _cpu(me) - cpu0
    consumer.close()
    return {"records": seen, "bytes": nbytes, "wall_s": wall, "window_cpu_s": window_cpu,
            "window": [start, start + wall]}


def partition_sizes(bootstrap: str, topic: str, n: int) -> list[int]:
    """Records per partition of the benchmark topic (its first n records, filled round-robin)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    try:
        sizes = []
        for p in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            sizes.append(high - low)
    finally:
        consumer.close()
    if sum(sizes) != n:
        raise SystemExit(f"topic {topic} holds {sum(sizes)} records, not {n}")
    return sizes


async def _run_tasks(bootstrap: str, topic: str, n: int, sink: dict[str, Any],
                     transform: dict[str, Any], fmt: dict[str, Any], s3: str | None,
                     workers: int, workdir: Path, *, egress: Any = None,
                     env_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from tasks.factory import TaskEnvironment
    from tasks.runner import Assignment, TaskRunner, task_id
    from tasks.spec import parse_job_spec
    from tasks.workers.pool import WorkerPool

    job = parse_job_spec({"id": f"bench-{uuid.uuid4().hex[:8]}",
                          "source": {"topic": topic, "batch_size": BATCH}, "sink": sink,
                          "transform": transform, "format": fmt, "rotation": ROTATION})
    from tasks.egress import EgressSettings

    env = TaskEnvironment(kafka_bootstrap=bootstrap, state_dir=workdir, s3_endpoint=s3,
                          s3_access_key="bench", s3_secret_key="bench",
                          egress=egress or EgressSettings(file_root=str(workdir)),
                          **(env_extra or {}))
    # spawn: the workers are this process's children, so getrusage counts their CPU once
    # they are joined. Stats every 10 ms: each task's end is seen from them (the baseline sees
    # its end at once; a 50 ms period added up to ~60 ms to a 2 s phase).
    pool = WorkerPool(env, workers, log_level="warning", start_method="spawn",
                      stats_period_s=0.01)
    pool.start()
    memory = TreeMemory(lambda: [os.getpid(), *(w.process.pid or 0 for w in pool.workers)])
    await pool.wait_ready()   # process start-up is not part of the phase
    runners = [pool.factory(Assignment(task_id(job.id, topic, p), 1, job, p))
               for p in range(PARTITIONS)]
    procs = [psutil.Process(pid) for pid in
             [os.getpid(), *(w.process.pid or 0 for w in pool.workers)]]
    expected = partition_sizes(bootstrap, topic, n)
    try:
        cpu0 = _cpu(procs)
        start = time.monotonic()
        await asyncio.gather(*(r.start() for r in runners))
        started = time.monotonic()

        async def finish(runner: TaskRunner, records: int) -> float:
            """Drain a task once it has read its partition; when it had read it all."""
            while (runner.stats().records_total < records
                   and time.monotonic() - start < PHASE_TIMEOUT):
                await asyncio.sleep(0.01)
            consumed_at = time.monotonic()
            await runner.stop(drain=True)
            return consumed_at

        # Each task is stopped as soon as it has read its own partition, as a baseline consumer
        # stops when it has seen its records; the window ends with the last drained commit.
        consumed = max(await asyncio.gather(*(finish(r, expected[p])
                                              for p, r in enumerate(runners))))
        wall = time.monotonic() - start
        window_cpu = _cpu(procs) - cpu0
    finally:
        await pool.aclose()
    stats = [r.stats() for r in runners]
    return {"records": sum(s.records_total for s in stats), "wall_s": wall,
            "start_s": started - start, "drain_s": wall - (consumed - start),
            "window": [start, start + wall],  # CLOCK_MONOTONIC: for `perf report --time`
            "bytes": sum(s.bytes_total for s in stats),
            "exported": sum(s.exported_total for s in stats),
            "committed": sum(s.committed_offset for s in stats),
            "errors": [s.last_error for s in stats if s.last_error],
            "window_cpu_s": window_cpu,
            "tree_peak_rss_mb": memory.stop()}


def phase_passthrough(bootstrap: str, topic: str, n: int, workdir: Path,
                      workers: int) -> dict[str, Any]:
    sink = {"type": "file", "directory": str(workdir / "files")}
    return asyncio.run(_run_tasks(bootstrap, topic, n, sink, {}, {}, None, workers, workdir))


def phase_transform(bootstrap: str, topic: str, n: int, workdir: Path, s3: str,
                    workers: int, gzip_level: int | None = None) -> dict[str, Any]:
    import boto3

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    client.create_bucket(Bucket=bucket)
    sink = {"type": "s3", "bucket": bucket}
    transform = {"parse": {"format": "json"}, "where": WHERE, "select": SELECT}
    fmt: dict[str, Any] = {"type": "ndjson", "compression": "gzip"}
    if gzip_level is not None:
        fmt["compression_level"] = gzip_level
    result = asyncio.run(_run_tasks(bootstrap, topic, n, sink, transform, fmt, s3, workers,
                                    workdir))
    # Outside the window: the next round's moto starts from the same memory (see main()).
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)
    return result


def run_phase(argv: list[str], tree: str | None = None,
              module: str = "tools.bench.pipeline") -> dict[str, Any]:
    """Run one phase of a benchmark `module` in a child process (from another checkout's code
    with `tree`: `-m` puts the working directory first on the path); it prints its result as
    one JSON line (`print_result`)."""
    out = subprocess.run([sys.executable, "-m", module, *argv], check=False,
                         capture_output=True, text=True, timeout=PHASE_TIMEOUT + 120, cwd=tree)
    if out.returncode != 0:
        raise RuntimeError(f"phase {argv} failed ({out.returncode}): {out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def print_result(res: dict[str, Any]) -> None:
    """A phase's result with this process's usage, as the one JSON line `run_phase` reads."""
    used = usage()
    if "tree_peak_rss_mb" in res:
        used["peak_rss_mb"] = res.pop("tree_peak_rss_mb")
    print(json.dumps({**res, **used}))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


PHASE_NAMES = {"a": "(a) bare consumer", "b": "(b) passthrough → file",
               "c": "(c) json + where + select → NDJSON gzip → S3",
               "b0": "(b0) (b) from --before", "c0": "(c0) (c) from --before"}
TARGETS = {"b": 0.8, "c": 0.5}


def rate(res: dict[str, Any]) -> float:
    return float(res["records"] / res["wall_s"])


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the lower middle one of an even number)."""
    return sorted(runs, key=rate)[(len(runs) - 1) // 2]


def report(results: dict[str, list[dict[str, Any]]], n: int, avg: float) -> str:
    phases = [p for p in ("a", "b", "c", "b0", "c0") if results.get(p)]
    rounds = max(len(results[p]) for p in phases)
    lines = [f"records: {n:,} of ~{avg:.0f} B in {PARTITIONS} partitions; machine: {machine()}",
             "", "| round | " + " | ".join(f"{PHASE_NAMES[p][:3]} rec/s" for p in phases)
             + "".join(f" | {p}/a" for p in phases if p != "a") + " |",
             "|---" * (1 + len(phases) + len(phases) - 1) + "|"]
    for i in range(rounds):
        got = {p: rate(results[p][i]) for p in phases if i < len(results[p])}
        cells = [f"{got[p]:,.0f}" if p in got else "" for p in phases]
        ratios = [f"{got[p] / got['a']:.2f}" if p in got and "a" in got else ""
                  for p in phases if p != "a"]
        lines.append(f"| {i + 1} | " + " | ".join(cells + ratios) + " |")
    lines += ["", "The median run of each phase:", "",
              "| phase | records | wall s | records/s | MB/s | CPU s | CPU s in window "
              "| µs/record | broker CPU s | S3 (moto) CPU s | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in phases:
        res = median_run(results[p])
        window = res.get("window_cpu_s", 0.0)
        lines.append(f"| {PHASE_NAMES[p]} | {res['records']:,} | {res['wall_s']:.2f} | "
                     f"{rate(res):,.0f} | {res['bytes'] / res['wall_s'] / 1e6:.1f} | "
                     f"{res['cpu_s']:.1f} | {window:.2f} | "
                     f"{window / max(res['records'], 1) * 1e6:.2f} | "
                     f"{res.get('broker_cpu_s', 0.0):.2f} | {res.get('s3_cpu_s', 0.0):.2f} | "
                     f"{res['peak_rss_mb']:.0f} |")
    lines.append("")
    if "a" in phases:
        base, fastest = rate(median_run(results["a"])), max(map(rate, results["a"]))
        for p in phases:
            if p in TARGETS:
                ratio = rate(median_run(results[p])) / base
                verdict = "met" if ratio >= TARGETS[p] else "MISSED"
                lines.append(f"{p}/a = {ratio:.2f} (medians; target ≥ {TARGETS[p]}: {verdict}); "
                             f"{rate(median_run(results[p])) / fastest:.2f} against the fastest "
                             "(a)")
    for p in ("b", "c"):
        if results.get(p) and results.get(f"{p}0"):
            pairs = [rate(new) / rate(old)
                     for new, old in zip(results[p], results[f"{p}0"], strict=False)]
            medians = rate(median_run(results[p])) / rate(median_run(results[f"{p}0"]))
            lines.append(f"{p}/{p}0 = {medians:.3f} (medians); per round: "
                         + ", ".join(f"{r:.3f}" for r in pairs))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of (a), (b), (c), interleaved; the report uses medians")
    parser.add_argument("--gzip-level", type=int, choices=range(1, 10), metavar="1-9",
                        help="the job's format.compression_level in (c); default: gzip's 6")
    parser.add_argument("--before", metavar="TREE",
                        help="also run (b) and (c) from this checkout each round (b0, c0)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--phase", choices=("a", "b", "c"), help=argparse.SUPPRESS)
    parser.add_argument("--kafka", help=argparse.SUPPRESS)
    parser.add_argument("--s3", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:  # a child: run one phase, print its JSON
        from tasks.logs import configure_logging

        configure_logging(level="warning")
        workdir = Path(args.workdir)
        if args.phase == "a":
            res = phase_baseline(args.kafka, args.topic, args.records)
        elif args.phase == "b":
            res = phase_passthrough(args.kafka, args.topic, args.records, workdir, args.workers)
        else:
            res = phase_transform(args.kafka, args.topic, args.records, workdir, args.s3,
                                  args.workers, args.gzip_level)
        print_result(res)
        return

    from tools.infra import start_infra

    with start_infra(("kafka", "s3")) as infra, tempfile.TemporaryDirectory() as tmp:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        t0 = time.monotonic()
        _total, avg = fill(infra.kafka, topic, args.records)
        print(f"produced {args.records:,} records (~{avg:.0f} B) in {time.monotonic() - t0:.0f}s",
              file=sys.stderr)
        common = ["--records", str(args.records), "--kafka", infra.kafka, "--s3", infra.s3,
                  "--topic", topic, "--workers", str(args.workers),
                  *(["--gzip-level", str(args.gzip_level)] if args.gzip_level else [])]
        results: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "c": [], "b0": [],
                                                    "c0": []}
        phases = ("a", "b", "c", *(("b0", "c0") if args.before else ()))
        broker = psutil.Process(infra.processes["kafka"].pid)
        s3 = psutil.Process(infra.processes["s3"].pid)  # moto shares the cores too
        warm = Path(tmp) / "warm-up"
        warm.mkdir()
        run_phase([*common, "--phase", "a", "--workdir", str(warm)])
        for round_ in range(1, args.rounds + 1):
            for phase in phases:
                workdir = Path(tmp) / f"{phase}{round_}"
                workdir.mkdir()
                before = _cpu([broker, *broker.children(recursive=True)])
                s3_before = _cpu([s3])
                res = run_phase([*common, "--phase", phase[0], "--workdir", str(workdir)],
                                tree=args.before if phase.endswith("0") else None)
                res["broker_cpu_s"] = _cpu([broker, *broker.children(recursive=True)]) - before
                res["s3_cpu_s"] = _cpu([s3]) - s3_before
                results[phase].append(res)
                print(f"round {round_} phase {phase}: {res}", file=sys.stderr)
                # Each phase starts with the page cache as the last one left it: in a VM,
                # writing into memory the guest has never touched cost ~10x (560 MB: 1.77 s of
                # CPU, then 0.12 s into pages freed before), and every round's files kept
                # 560 MB cached, so (b) slowed each round (1.02M, 0.87M, 0.72M records/s).
                shutil.rmtree(workdir)
    if args.json:
        print(json.dumps({"records": args.records, "avg_bytes": avg, "results": results,
                          "machine": machine()}, indent=2))
    else:
        print(report(results, args.records, avg))


if __name__ == "__main__":
    main()
