"""`make dev`: a real local cluster exporting real data, until Ctrl-C.

ZooKeeper, Kafka and S3 (moto), 2 masters, 3 servers in 2 isolation groups (two `default`,
one `heavy`), a demo producer writing nginx access-log lines to a 6-partition topic, and the demo
job `examples/nginx-to-s3.yaml` (parse → filter → project → gzipped NDJSON in S3); beside it a
schema registry (Apicurio), Avro orders on a 2-partition topic and the job
`examples/orders-avro-to-parquet.yaml` (Avro by schema id → Parquet in S3), and the nginx logs
again into an Iceberg table (`examples/nginx-to-iceberg.yaml`, `python -m tools.devcluster
table demo.access_logs` queries it). It prints where
to look, then a status line every few seconds, and says at once when a master or server died
(exit code, log file, its last lines). `python -m tools.devcluster objects` lists what the
running cluster exported so far. Ctrl-C (or SIGTERM) stops every process it started and keeps the
work directory with every process's log, printing where it is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import yaml
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tools.devcluster.cluster import BIN, DeathWatch, LocalCluster, http_json, wait_for
from tools.devcluster.producer import AvroOrderProducer, DemoProducer
from tools.infra.jars import CACHE_DIR
from tools.infra.registry import start_registry

REPO = Path(__file__).resolve().parents[2]
STATE = CACHE_DIR / "devcluster.json"
TOPIC, PARTITIONS, BUCKET = "access-logs", 6, "exportd-demo"
JOB_FILE = REPO / "examples" / "nginx-to-s3.yaml"
ORDERS_TOPIC, ORDERS_PARTITIONS = "orders", 2
ORDERS_JOB_FILE = REPO / "examples" / "orders-avro-to-parquet.yaml"
ICEBERG_JOB_FILE = REPO / "examples" / "nginx-to-iceberg.yaml"
ICEBERG_TABLE = "demo.access_logs"


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="dev", aws_secret_access_key="dev")


def count_objects(endpoint: str, bucket: str = BUCKET) -> int:
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(page.get("KeyCount", 0) for page in pages)


def prepare_data(cluster: LocalCluster) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.endpoints["kafka"]})
    for name, partitions in ((TOPIC, PARTITIONS), (ORDERS_TOPIC, ORDERS_PARTITIONS)):
        admin.create_topics([NewTopic(name, num_partitions=partitions,
                                      replication_factor=1)])[name].result(30)
    s3_client(cluster.endpoints["s3"]).create_bucket(Bucket=BUCKET)


def submit_demo_job(leader: str, path: Path = JOB_FILE,
                    registry: str | None = None) -> dict[str, Any]:
    spec = yaml.safe_load(path.read_text())
    if registry is not None:
        spec["transform"]["parse"]["registry"]["url"] = registry
    job: dict[str, Any] = http_json(leader + "/api/v1/jobs", method="POST", body=spec)
    return job


def exportctl(cluster: LocalCluster, *args: str) -> str:
    env = {**cluster.ctl_env(), "PATH": str(BIN)}
    result = subprocess.run([str(BIN / "exportctl"), *args], capture_output=True, text=True,
                            env=env, timeout=30, check=False)
    return result.stdout + result.stderr


def banner(cluster: LocalCluster, registry: str) -> str:
    ctl = cluster.ctl_env()
    ep = cluster.endpoints
    return f"""
exportd dev cluster is up (work dir {cluster.workdir}; logs in {cluster.workdir}/logs)

  ZooKeeper  {ep['zookeeper']}
  Kafka      {ep['kafka']}      topic {TOPIC} ({PARTITIONS} partitions), demo producer running
  S3 (moto)  {ep['s3']}      bucket {BUCKET}
  Registry   {registry}      topic {ORDERS_TOPIC}: Avro orders
  API        {'  '.join(cluster.master_urls())}   (GET /api/v1/openapi.json)
             https with the cluster's throwaway CA; every call but /healthz, /readyz,
             /metrics and the API document needs the token (named `dev`, admin)

Try, in another terminal:
  export EXPORTD_MASTERS={ctl['EXPORTD_MASTERS']}
  export EXPORTD_TOKEN={ctl['EXPORTD_TOKEN']}
  export EXPORTD_CA={ctl['EXPORTD_CA']}
  .venv/bin/exportctl placement
  .venv/bin/exportctl tasks --job nginx-to-s3
  .venv/bin/exportctl explain nginx-to-s3:{TOPIC}:0
  .venv/bin/exportctl tasks --job orders-avro        # Avro -> Parquet
  .venv/bin/exportctl drain server-1 --wait
  .venv/bin/exportctl leader
  .venv/bin/python -m tools.devcluster objects      # what has been exported to S3
  .venv/bin/exportctl jobs get nginx-to-iceberg       # the table: last commit, pending
  .venv/bin/python -m tools.devcluster table {ICEBERG_TABLE}   # query the Iceberg table

Ctrl-C stops everything.
"""


def run(rate: float) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Logs outlive the cluster: after Ctrl-C they are what explains what happened.
    cluster = LocalCluster(record_infra=True, keep_workdir=True)
    watch = DeathWatch()
    print("starting ZooKeeper, Kafka, S3, a schema registry, 2 masters and 3 servers ...",
          flush=True)
    with cluster, contextlib.ExitStack() as stack:
        registry_proc, registry = start_registry(cluster.workdir)
        stack.callback(registry_proc.stop)   # after the producers' stop below, before the cluster
        prepare_data(cluster)
        producer = DemoProducer(cluster.endpoints["kafka"], TOPIC, rate=rate,
                                max_records=5_000_000, max_seconds=7 * 24 * 3600)
        producer.start()
        orders = AvroOrderProducer(cluster.endpoints["kafka"], ORDERS_TOPIC, registry=registry,
                                   rate=max(rate / 5, 1.0), max_records=1_000_000,
                                   max_seconds=7 * 24 * 3600)
        orders.start()
        leader = cluster.leader_url()
        assert leader is not None
        for path, url in ((JOB_FILE, None), (ORDERS_JOB_FILE, registry),
                          (ICEBERG_JOB_FILE, None)):
            job = submit_demo_job(leader, path, url)
            print(f"submitted job {job['job']['spec']['id']} with {len(job['tasks'])} tasks",
                  flush=True)
        STATE.parent.mkdir(parents=True, exist_ok=True)
        STATE.write_text(json.dumps({"masters": cluster.master_urls(), **cluster.endpoints,
                                     "iceberg": cluster.iceberg()}))
        try:
            wait_for(lambda: count_objects(cluster.endpoints["s3"]) > 0, 90,
                     "exporting to S3")
            print(banner(cluster, registry), flush=True)
            print(exportctl(cluster, "placement"), flush=True)
            ticks = 0
            while not stop.wait(2):
                for line in watch.check(cluster.processes()):
                    print(line, flush=True)
                ticks += 1
                if ticks % 5 == 0:
                    print(status_line(cluster, producer.produced), flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            print("stopping ...", flush=True)
            producer.stop()
            orders.stop()
            STATE.unlink(missing_ok=True)
    print("stopped: nothing of the dev cluster is left running", flush=True)
    print(f"logs kept in {cluster.workdir / 'logs'} (remove the work dir with "
          f"rm -rf {cluster.workdir})", flush=True)
    return 0


def status_line(cluster: LocalCluster, produced: int) -> str:
    dead = [p.name for p in cluster.processes() if not p.alive()]
    line = (f"produced {produced} lines; {count_objects(cluster.endpoints['s3'])} objects in "
            f"s3://{BUCKET}")
    return line + (f"; DEAD: {', '.join(dead)}" if dead else "")


def list_objects() -> int:
    if not STATE.is_file():
        print("no dev cluster running (start one with `make dev`)", file=sys.stderr)
        return 1
    endpoint = json.loads(STATE.read_text())["s3"]
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    for page in pages:
        for obj in page.get("Contents", []):
            print(f"{obj['Size']:>9}  s3://{BUCKET}/{obj['Key']}")
    return 0


def show_table(name: str) -> int:
    """A running dev cluster's Iceberg table: snapshots, rows, files, schema, a few rows."""
    if not STATE.is_file():
        print("no dev cluster running (start one with `make dev`)", file=sys.stderr)
        return 1
    from tasks.iceberg.catalogs import IcebergSettings, open_catalog
    from tools.devcluster.cluster import ICEBERG_CATALOG

    settings = IcebergSettings.model_validate(json.loads(STATE.read_text())["iceberg"])
    catalog = open_catalog(ICEBERG_CATALOG, settings.catalog(ICEBERG_CATALOG))
    namespace, _, table_name = name.rpartition(".")
    if not catalog.table_exists((namespace, table_name)):
        print(f"no table {name} yet: its job's tasks create it with their first file",
              file=sys.stderr)
        return 1
    table = catalog.load_table((namespace, table_name))
    rows = table.scan().to_arrow()
    files = table.inspect.files()
    current = table.current_snapshot()
    print(f"table {name} at {table.location()}")
    summary = dict(current.summary.additional_properties) if current and current.summary else {}
    print(f"  {len(table.snapshots())} snapshots; current "
          f"{current.snapshot_id if current else '-'} {summary}")
    print(f"  {rows.num_rows} rows in {files.num_rows} data files")
    print(f"  schema: {', '.join(f'{f.name} {f.field_type}' for f in table.schema().fields)}")
    for row in rows.slice(max(rows.num_rows - 5, 0)).to_pylist():
        print(f"  {row}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.devcluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "objects", "table"])
    parser.add_argument("table", nargs="?", default=ICEBERG_TABLE,
                        help="`table`: the Iceberg table, namespace.table")
    parser.add_argument("--rate", type=float, default=50.0, help="demo lines per second")
    args = parser.parse_args(argv)
    if args.command == "objects":
        return list_objects()
    if args.command == "table":
        return show_table(args.table)
    try:
        return run(args.rate)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
