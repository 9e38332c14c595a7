"""Schema-aware pipeline benchmark: `.venv/bin/python -m tools.bench.schemas [--records N]`.

Not a timed test: it prints a report (and the machine) for docs/benchmarks/pipeline.md.

Starts its own Kafka, moto S3 and schema registry (Apicurio, tools.infra), fills a 4-partition
topic with Avro records in the Confluent wire format (the pipeline benchmark's access-log
record as an Avro schema, registered in the registry; ~110 B a value), then runs, in
`--rounds` interleaved rounds, each phase in a fresh child process (tools/bench/pipeline.py's
machinery: a WorkerPool of one process per core, CPU and peak RSS of the phase's own tree):

(a) raw consume: one consumer assigned to all partitions, records discarded;
(p) Avro by schema id → Parquet zstd to S3;
(n) Avro by schema id → NDJSON (no compression) to S3.

Reported: records/s of each phase's median run and the ratios p/a and n/a (goal ≥ 0.4 on 2
cores), CPU seconds per record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tools.bench.pipeline import (
    PARTITIONS,
    _run_tasks,
    machine,
    phase_baseline,
    print_result,
    run_phase,
)
from tools.bench.pipeline import fill as fill_topic

MODULE = "tools.bench.schemas"

SCHEMA = json.dumps({"type": "record", "name": "Access", "namespace": "exportd.bench",
                     "fields": [{"name": "time", "type": "string"},
                                {"name": "remote_addr", "type": "string"},
                                {"name": "method", "type": "string"},
                                {"name": "path", "type": "string"},
                                {"name": "protocol", "type": "string"},
                                {"name": "status", "type": "int"},
                                {"name": "body_bytes_sent", "type": "long"},
                                {"name": "referer", "type": "string"},
                                {"name": "user_agent", "type": "string"},
                                {"name": "request_time", "type": "double"}]})


def fill(bootstrap: str, registry: str, topic: str, n: int) -> float:
    """The pipeline benchmark's records, as Avro in the registry's wire format."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    serialize = AvroSerializer(SchemaRegistryClient({"url": registry}), SCHEMA)
    ctx = SerializationContext(topic, MessageField.VALUE)
    _total, avg = fill_topic(bootstrap, topic, n,
                             lambda value: serialize(json.loads(value), ctx) or b"")
    return avg


def phase_export(bootstrap: str, registry: str, topic: str, n: int, workdir: Path, s3: str,
                 workers: int, file_type: str) -> dict[str, Any]:
    import boto3

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    client.create_bucket(Bucket=bucket)
    transform = {"parse": {"format": "avro", "registry": {"url": registry}}}
    fmt = {"type": file_type, "compression": "zstd" if file_type == "parquet" else "none"}
    from tasks.egress import EgressSettings  # the registry is on loopback

    result = asyncio.run(_run_tasks(
        bootstrap, topic, n, {"type": "s3", "bucket": bucket}, transform, fmt, s3, workers,
        workdir, egress=EgressSettings(file_root=str(workdir),
                                       http_allow_networks=["127.0.0.0/8"])))
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)
    return result



def report(results: dict[str, list[dict[str, Any]]], n: int, avg: float) -> str:
    def median(phase: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[phase]))

    rates = {p: n / median(p, "wall_s") for p in results}
    lines = [f"{n:,} Avro records (~{avg:.0f} B a value), {PARTITIONS} partitions, "
             f"{len(results['a'])} rounds (medians); {machine()}", "",
             "| phase | records/s | CPU µs/record | vs raw consume |", "|---|---|---|---|"]
    names = {"a": "(a) raw consume", "p": "(p) Avro → Parquet zstd (S3)",
             "n": "(n) Avro → NDJSON (S3)"}
    for phase, name in names.items():
        cpu = median(phase, "window_cpu_s") / n * 1e6
        lines.append(f"| {name} | {rates[phase]:,.0f} | {cpu:.1f} | "
                     f"{rates[phase] / rates['a']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phase", choices=("a", "p", "n"), help=argparse.SUPPRESS)
    parser.add_argument("--kafka", help=argparse.SUPPRESS)
    parser.add_argument("--s3", help=argparse.SUPPRESS)
    parser.add_argument("--registry", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        from tasks.logs import configure_logging

        configure_logging(level="warning")
        if args.phase == "a":
            res = phase_baseline(args.kafka, args.topic, args.records)
        else:
            res = phase_export(args.kafka, args.registry, args.topic, args.records,
                               Path(args.workdir), args.s3, args.workers,
                               "parquet" if args.phase == "p" else "ndjson")
        print_result(res)
        return

    from tools.infra import start_infra
    from tools.infra.registry import start_registry

    with start_infra(("kafka", "s3")) as infra, tempfile.TemporaryDirectory() as tmp:
        registry_proc, registry = start_registry(Path(tmp))
        try:
            topic = f"bench-avro-{uuid.uuid4().hex[:8]}"
            t0 = time.monotonic()
            avg = fill(infra.kafka, registry, topic, args.records)
            print(f"produced {args.records:,} Avro records (~{avg:.0f} B) in "
                  f"{time.monotonic() - t0:.0f}s", file=sys.stderr)
            common = ["--records", str(args.records), "--kafka", infra.kafka, "--s3", infra.s3,
                      "--registry", registry, "--topic", topic, "--workers", str(args.workers)]
            results: dict[str, list[dict[str, Any]]] = {"a": [], "p": [], "n": []}
            run_phase([*common, "--phase", "a", "--workdir", tmp], module=MODULE)  # warms Kafka
            for round_ in range(1, args.rounds + 1):
                for phase in results:
                    workdir = Path(tmp) / f"{phase}{round_}"
                    workdir.mkdir()
                    res = run_phase([*common, "--phase", phase, "--workdir", str(workdir)],
                                    module=MODULE)
                    if phase != "a" and res["records"] != args.records:
                        raise SystemExit(f"phase {phase} read {res['records']} records")
                    results[phase].append(res)
                    print(f"round {round_} phase {phase}: {res}", file=sys.stderr)
        finally:
            registry_proc.stop()
    print(report(results, args.records, avg))


if __name__ == "__main__":
    main()
