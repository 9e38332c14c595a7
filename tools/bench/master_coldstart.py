"""Benchmark (c): cold start of a leader with 100,000 tasks stored.

ZooKeeper holds 100 jobs x 1,000 partitions assigned over 100 servers (64 packed shards). A
simulated server (one of the 100, holding 1,000 tasks) waits for the `leader` node; then one
`exportd-master` process starts. Measured: lock won (the leader's `since_unix`, set right after
the epoch bump) -> the server's first directive, wall clock on one machine. Target (issue 4):
<= 2 s. Also reported: the stored size per shard.

    .venv/bin/python -m tools.bench.master_coldstart --jobs 100 --partitions 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient

from master.election import current_leader
from tasks.cluster import ZkPaths
from tools.bench.master_sim import MasterProcess, SimServer, seed_cluster, until
from tools.infra import start_infra


async def run(jobs: int, partitions: int, servers: int) -> dict[str, Any]:
    infra = start_infra(("zookeeper",))
    workdir = Path(tempfile.mkdtemp(prefix="bench-coldstart-"))
    cluster = f"cold{int(time.time())}"
    paths = ZkPaths.for_cluster(cluster)
    zk = KazooClient(hosts=infra.zookeeper, timeout=5.0)
    zk.start(30)
    proc: MasterProcess | None = None
    names = [f"srv-{i:04d}" for i in range(servers)]
    sim = SimServer(names[0], paths, zk)
    try:
        seeded = time.monotonic()
        by_server = await asyncio.to_thread(seed_cluster, zk, paths, jobs=jobs,
                                            partitions=partitions, servers=names)
        seed_s = time.monotonic() - seeded
        sizes = [len(zk.get(f"{paths.assignments}/{c}")[0])
                 for c in zk.get_children(paths.assignments)]
        for name in names:     # every server registered, as in a running cluster
            SimServer(name, paths, zk).register()
        sim.start()
        proc = MasterProcess("cold-1", infra.zookeeper, cluster, workdir)
        leader = await until(lambda: current_leader(zk, paths), 60, "leader")
        got = await until(lambda: sim.directives[0] if sim.directives else None, 60,
                          "first directive")
        assert got.desired == by_server[names[0]], "the directive is the stored set"
        return {
            "tasks": jobs * partitions, "servers": servers,
            "shards": len(sizes), "largest_shard_bytes": max(sizes),
            "seed_s": round(seed_s, 2),
            "lock_won_to_first_directive_s": round(got.at_unix - leader.since_unix, 3),
            "directive_tasks": len(got.desired),
        }
    finally:
        await sim.stop()
        if proc is not None:
            proc.stop()
        zk.stop()
        zk.close()
        infra.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.jobs, args.partitions, args.servers)), indent=2))


if __name__ == "__main__":
    main()
