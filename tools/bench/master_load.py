"""Benchmark (b): the leader's load from heartbeats.

1,000 simulated servers x 50 tasks (50,000 tasks stored beforehand) each hold a heartbeat
stream to one `exportd-master` process and report at the interval the leader hands out (from
its budget: 1,000 servers / 500 reports/s = 2 s). After every server has its directive and the
leader's interval, the leader's CPU is measured over a window (psutil, user + system), with the
report -> ack latency seen by the leader (its histogram: receipt to ack queued) and by the
clients (send to ack received, which includes this busy client process's own delays).
Targets (issue 4): leader <= 50 % of one core, p99 report -> ack <= 50 ms.

`--tls` runs the session over mTLS as in production: every simulated server holds its own
certificate from a throwaway CA, so it has its own connection (`--channels 0`: one per server,
which a plaintext run can use too, for a like-for-like comparison). Issue 15's goal: leader CPU
with mTLS within 1.3x of plaintext.

    .venv/bin/python -m tools.bench.master_load --servers 1000 --tasks 50 --window 30
    .venv/bin/python -m tools.bench.master_load --servers 1000 --tasks 50 --window 30 --tls
    .venv/bin/python -m tools.bench.master_load --servers 1000 --tasks 50 --window 30 --channels 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc.aio
import psutil
from prometheus_client.parser import text_string_to_metric_families

from master.election import current_leader
from tasks.cluster import ZkPaths
from tools.bench.master_sim import (
    MasterProcess,
    SimServer,
    bench_client,
    seed_cluster,
    sim_tls,
    until,
)
from tools.infra import start_infra
from tools.pki import write_dev_pki

CHANNELS = 20     # streams are spread over a few HTTP/2 connections, like many hosts would


def scrape(http: str, name: str) -> tuple[dict[float, float], float, float]:
    """(cumulative buckets, sum, count) of histogram `name` from the leader's /metrics."""
    with urllib.request.urlopen(http + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    buckets: dict[float, float] = {}
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets[float(sample.labels["le"])] = sample.value
                elif sample.name.endswith("_sum"):
                    total = sample.value
                elif sample.name.endswith("_count"):
                    count = sample.value
    return buckets, total, count


def quantile_from_buckets(before: dict[float, float], after: dict[float, float],
                          q: float) -> float:
    """Upper bound of the bucket holding quantile `q` of the observations between two scrapes."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0.0
    for le, cumulative in counts:
        if total and cumulative >= q * total:
            return le
    return float("inf")


async def run(servers: int, tasks: int, window: float, tls: bool = False,
              channel_count: int = CHANNELS) -> dict[str, Any]:
    """`tls`: mTLS, one connection per server; `channel_count` 0: one per server."""
    infra = start_infra(("zookeeper",))
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    cluster = f"load{int(time.time())}"
    paths = ZkPaths.for_cluster(cluster)
    zk = bench_client(infra.zookeeper)
    zk.start(30)
    names = [f"srv-{i:04d}" for i in range(servers)]
    proc: MasterProcess | None = None
    sims: list[SimServer] = []
    channels: list[grpc.aio.Channel] = []
    try:
        await asyncio.to_thread(seed_cluster, zk, paths, jobs=servers, partitions=tasks,
                                servers=names)
        pki = write_dev_pki(workdir / "pki", cluster=cluster, masters=["load-1"],
                            servers=names) if tls else None
        proc = MasterProcess("load-1", infra.zookeeper, cluster, workdir,
                             extra={"lease_ttl": "15s", "heartbeat_budget": 500}, pki=pki)
        leader = await until(lambda: current_leader(zk, paths), 60, "leader")
        if pki is None and channel_count > 0:
            channels = [grpc.aio.insecure_channel(leader.grpc) for _ in range(channel_count)]
        for i, name in enumerate(names):
            sim = SimServer(name, paths, zk,
                            channel=channels[i % len(channels)] if channels else None,
                            tls=sim_tls(pki, cluster, name) if pki is not None else None,
                            tls_cluster=cluster)
            await asyncio.to_thread(sim.register)
            sims.append(sim)
            sim.start()
        await until(lambda: all(s.directives and s.interval >= 1.0 for s in sims), 180,
                    "every server directed and on the leader's interval")
        interval = sims[0].interval
        await asyncio.sleep(2 * interval)   # let the first rounds of reports settle
        leader_proc = psutil.Process(proc.popen.pid)
        hist_before = scrape(leader.http, "exportd_report_ack_seconds")[0]
        cpu_before = leader_proc.cpu_times()
        own_before = psutil.Process().cpu_times()
        acks_before = sum(s.acks for s in sims)
        for s in sims:
            s.ack_latencies.clear()
        started = time.monotonic()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - started
        cpu_after = leader_proc.cpu_times()
        own_after = psutil.Process().cpu_times()
        hist_after = scrape(leader.http, "exportd_report_ack_seconds")[0]
        _, plan_sum, plan_count = scrape(leader.http, "exportd_plan_seconds")
        acks = sum(s.acks for s in sims) - acks_before
        latencies = sorted(x for s in sims for x in s.ack_latencies)
        cpu = (cpu_after.user - cpu_before.user + cpu_after.system - cpu_before.system)
        return {
            "tls": tls, "connections": len(channels) or servers,
            "servers": servers, "tasks": servers * tasks, "interval_s": interval,
            "window_s": round(elapsed, 1), "reports_per_s": round(acks / elapsed, 1),
            "leader_cpu_fraction_of_one_core": round(cpu / elapsed, 3),
            "leader_p99_report_ack_s_bucket": quantile_from_buckets(hist_before, hist_after,
                                                                    0.99),
            "leader_mean_plan_round_s": round(plan_sum / plan_count, 3) if plan_count else None,
            "client_process_cpu_fraction": round(
                (own_after.user - own_before.user + own_after.system - own_before.system)
                / elapsed, 3),
            "client_p50_report_ack_s": round(statistics.median(latencies), 4),
            "client_p99_report_ack_s": round(latencies[int(0.99 * (len(latencies) - 1))], 4),
            "client_share_over_50ms": round(sum(x > 0.05 for x in latencies) / len(latencies), 4),
        }
    finally:
        for sim in sims:
            await sim.stop()
        for channel in channels:
            await channel.close(None)
        if proc is not None:
            proc.stop()
        zk.stop()
        zk.close()
        infra.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--tls", action="store_true", help="mTLS, one connection per server")
    parser.add_argument("--channels", type=int, default=CHANNELS,
                        help="plaintext connections shared by the servers; 0: one per server")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.servers, args.tasks, args.window, args.tls,
                                     args.channels)), indent=2))


if __name__ == "__main__":
    main()
