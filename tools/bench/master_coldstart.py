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
import time
from typing import Any

from master.election import current_leader
from tools.bench.master_sim import (
    MasterProcess,
    SimServer,
    bench_zookeeper,
    print_result,
    seed_cluster,
    sim_tls,
    until,
)


async def run(jobs: int, partitions: int, servers: int) -> dict[str, Any]:
    async with bench_zookeeper("cold") as env:
        zk, paths = env.zk, env.paths
        names = [f"srv-{i:04d}" for i in range(servers)]
        seeded = time.monotonic()
        by_server = await asyncio.to_thread(seed_cluster, zk, paths, jobs=jobs,
                                            partitions=partitions, servers=names)
        seed_s = time.monotonic() - seeded
        sizes = [len(zk.get(f"{paths.assignments}/{c}")[0])
                 for c in zk.get_children(paths.assignments)]
        for name in names:     # every server registered, as in a running cluster
            SimServer(name, paths, zk).register()
        sim = SimServer(names[0], paths, zk, tls=sim_tls(env.pki, env.cluster, names[0]),
                        tls_cluster=env.cluster)
        sim.start()
        proc = MasterProcess("cold-1", env.infra.zookeeper, env.cluster, env.workdir,
                             pki=env.pki)
        try:
            leader = await until(lambda: current_leader(zk, paths), 60, "leader")
            got = await until(lambda: sim.directives[0] if sim.directives else None, 60,
                              "first directive")
        finally:
            await sim.stop()
            proc.stop()
        assert got.desired == by_server[names[0]], "the directive is the stored set"
        return {
            "tasks": jobs * partitions, "servers": servers,
            "shards": len(sizes), "largest_shard_bytes": max(sizes),
            "seed_s": round(seed_s, 2),
            "lock_won_to_first_directive_s": round(got.at_unix - leader.since_unix, 3),
            "directive_tasks": len(got.desired),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=100)
    args = parser.parse_args()
    print_result(run(args.jobs, args.partitions, args.servers))


if __name__ == "__main__":
    main()
