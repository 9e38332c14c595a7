"""Iceberg sink benchmark: `.venv/bin/python -m tools.bench.iceberg [--records N] [--rounds R]`.

Not a timed test: it prints a report (and the machine) for docs/benchmarks/iceberg.md.

Starts its own Kafka and moto S3 (tools.infra), fills a 4-partition topic with the pipeline
benchmark's JSON access-log records (~330 B a value), then runs, in `--rounds` interleaved rounds,
each phase in a fresh child process (tools/bench/pipeline.py's machinery: a WorkerPool of one
process per core; the phase ends when every task has drained its last file):

(n) the job writing NDJSON files (no compression) to S3;
(i) the same job writing an Iceberg table: Parquet zstd data files in the warehouse (moto), the
    table in pyiceberg's SQL catalog on SQLite, unpartitioned; then ONE leader commit round of
    everything the tasks reported (`master.iceberg` committer), timed on its own (`commit s`).

Reported: records/s of each phase's median run (Iceberg with and without its commit) and the
ratio i/n (the issue's goal: ≥ 0.7), CPU µs per record, and the table's row count read back.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tools.bench.pipeline import PARTITIONS, _run_tasks, machine, print_result, run_phase
from tools.bench.pipeline import fill as fill_topic

MODULE = "tools.bench.iceberg"
TRANSFORM = {"parse": {"format": "json"}}


def _bucket(s3: str) -> tuple[Any, str]:
    import boto3

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    client.create_bucket(Bucket=bucket)
    return client, bucket


def _empty(client: Any, bucket: str) -> None:
    """Outside the window: the next round's moto starts from the same memory."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


def phase_ndjson(kafka: str, topic: str, n: int, workdir: Path, s3: str,
                 workers: int) -> dict[str, Any]:
    client, bucket = _bucket(s3)
    result = asyncio.run(_run_tasks(kafka, topic, n, {"type": "s3", "bucket": bucket},
                                    TRANSFORM, {"type": "ndjson"}, s3, workers, workdir))
    _empty(client, bucket)
    return result


def _catalog_settings(s3: str, bucket: str, workdir: Path) -> Any:
    from tasks.iceberg.catalogs import CatalogSettings

    return CatalogSettings.model_validate({
        "type": "sql", "uri": f"sqlite:///{workdir / 'catalog.db'}",
        "warehouse": f"s3://{bucket}/wh",
        "s3": {"endpoint_url": s3, "access_key_id": "bench", "secret_access_key": "bench"}})


def phase_iceberg(kafka: str, topic: str, n: int, workdir: Path, s3: str,
                  workers: int) -> dict[str, Any]:
    from tasks.iceberg.catalogs import IcebergSettings, open_catalog

    client, bucket = _bucket(s3)
    settings = _catalog_settings(s3, bucket, workdir)
    sink = {"type": "iceberg", "catalog": "bench", "namespace": "bench", "table": "events"}
    result = asyncio.run(_run_tasks(
        kafka, topic, n, sink, TRANSFORM, {"type": "parquet", "compression": "zstd"}, s3,
        workers, workdir, env_extra={"iceberg": IcebergSettings(catalogs={"bench": settings})}))
    started = time.monotonic()
    committed = commit_once(settings, sink)
    result["commit_s"] = time.monotonic() - started
    table = open_catalog("bench", settings).load_table(("bench", "events"))
    result["table_rows"] = table.scan().to_arrow().num_rows
    result["committed_records"] = committed
    _empty(client, bucket)
    return result


def commit_once(settings: Any, sink: dict[str, Any]) -> int:
    """One leader commit round over everything reported; the records it appended."""
    from master.iceberg.committer import TableCommitter
    from tasks.iceberg.spec import IcebergSink

    committer = TableCommitter("bench", IcebergSink.model_validate(sink), settings, epoch=1)
    result = committer.round(lambda: None)
    if result.error or result.refused:
        raise RuntimeError(f"commit round failed: {result.error or result.refused}")
    return result.committed_records



def report(results: dict[str, list[dict[str, Any]]], n: int, avg: float) -> str:
    def median(phase: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[phase]))

    ndjson = n / median("n", "wall_s")
    files = n / median("i", "wall_s")
    table = n / (median("i", "wall_s") + median("i", "commit_s"))
    lines = [f"{n:,} JSON records (~{avg:.0f} B a value), {PARTITIONS} partitions, "
             f"{len(results['n'])} rounds (medians); {machine()}", "",
             "| phase | records/s | CPU µs/record | vs NDJSON |", "|---|---|---|---|",
             f"| (n) JSON → NDJSON (S3) | {ndjson:,.0f} | "
             f"{median('n', 'window_cpu_s') / n * 1e6:.1f} | 1.00 |",
             f"| (i) JSON → Iceberg data files + reports | {files:,.0f} | "
             f"{median('i', 'window_cpu_s') / n * 1e6:.1f} | {files / ndjson:.2f} |",
             f"| (i) the same, with the leader's commit | {table:,.0f} | — | "
             f"{table / ndjson:.2f} |", "",
             f"Commit round (all reports, one snapshot): {median('i', 'commit_s'):.2f} s; "
             f"rows read back: {[r['table_rows'] for r in results['i']]}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phase", choices=("n", "i"), help=argparse.SUPPRESS)
    parser.add_argument("--kafka", help=argparse.SUPPRESS)
    parser.add_argument("--s3", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        from tasks.logs import configure_logging

        configure_logging(level="warning")
        run = phase_ndjson if args.phase == "n" else phase_iceberg
        res = run(args.kafka, args.topic, args.records, Path(args.workdir), args.s3,
                    args.workers)
        print_result(res)
        return

    from tools.infra import start_infra

    with start_infra(("kafka", "s3")) as infra, tempfile.TemporaryDirectory() as tmp:
        topic = f"bench-ice-{uuid.uuid4().hex[:8]}"
        t0 = time.monotonic()
        _total, avg = fill_topic(infra.kafka, topic, args.records)
        print(f"produced {args.records:,} records (~{avg:.0f} B) in "
              f"{time.monotonic() - t0:.0f}s", file=sys.stderr)
        common = ["--records", str(args.records), "--kafka", infra.kafka, "--s3", infra.s3,
                  "--topic", topic, "--workers", str(args.workers)]
        results: dict[str, list[dict[str, Any]]] = {"n": [], "i": []}
        for round_ in range(1, args.rounds + 1):
            for phase in results:
                workdir = Path(tmp) / f"{phase}{round_}"
                workdir.mkdir()
                res = run_phase([*common, "--phase", phase, "--workdir", str(workdir)],
                                module=MODULE)
                if res["records"] != args.records:
                    raise SystemExit(f"phase {phase} read {res['records']} records")
                if phase == "i" and res["table_rows"] != args.records:
                    raise SystemExit(f"the table holds {res['table_rows']} rows, "
                                     f"not {args.records}")
                results[phase].append(res)
                print(f"round {round_} phase {phase}: {res}", file=sys.stderr)
    print(report(results, args.records, avg))


if __name__ == "__main__":
    main()
