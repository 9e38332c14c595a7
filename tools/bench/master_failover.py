"""Benchmark (a): leader failover as a connected server sees it.

Two `exportd-master` processes (ZooKeeper session timeout 2 s) and one simulated server. Each
round stops the leader — `kill -9`, or SIGTERM — and measures the time until the server receives
its first directive from the new leader (higher epoch). The killed master is started again as
the next standby. Targets (issue 4): kill -9 <= 3 s, SIGTERM hand-over <= 0.5 s. The session is
mTLS (certificates from a throwaway CA) unless `--plaintext` (tls.insecure) is given.
`--servers N` connects N simulated servers (each its own connection and certificate): then
`last_*` is the time until the last of them has the new leader's directive, every one having
made a new TLS handshake with the new leader.

    .venv/bin/python -m tools.bench.master_failover --rounds 3 [--plaintext] [--servers 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import time
from typing import Any

from kazoo.client import KazooClient

from master.election import current_leader
from tasks.cluster import ZkPaths
from tools.bench.master_sim import (
    MasterProcess,
    SimServer,
    bench_zookeeper,
    print_result,
    sim_tls,
    until,
)


async def run(rounds: int, plaintext: bool = False, servers: int = 1) -> dict[str, Any]:
    async with bench_zookeeper("failover") as env:
        zk, paths = env.zk, env.paths
        procs: dict[str, MasterProcess] = {}
        pki = None if plaintext else env.pki
        sims = [SimServer(f"sim-{i + 1}", paths, zk,
                          tls=None if pki is None else sim_tls(pki, env.cluster, f"sim-{i + 1}"),
                          tls_cluster=env.cluster) for i in range(servers)]
        sim = sims[0]
        results: dict[str, list[float]] = {"kill9": [], "sigterm": []}
        if servers > 1:
            results |= {"last_kill9": [], "last_sigterm": []}
        try:
            for mid in ("m1", "m2"):
                procs[mid] = MasterProcess(mid, env.infra.zookeeper, env.cluster, env.workdir,
                                           pki=pki)
            await until(lambda: current_leader(zk, paths), 60, "first leader")
            for each in sims:
                await asyncio.to_thread(each.register)
                each.start()
            await until(lambda: all(each.directives for each in sims), 120, "first directives")
            for kind in ["kill9"] * rounds + ["sigterm"] * rounds:
                leader = current_leader(zk, paths)
                assert leader is not None
                await until(lambda: _contending(zk, paths) >= 2, 60, "two masters contending")
                sig = signal.SIGKILL if kind == "kill9" else signal.SIGTERM
                elapsed, stopped_at = await _failover(sim, leader.epoch, procs[leader.id], sig)
                results[kind].append(elapsed)
                if servers > 1:
                    results[f"last_{kind}"].append(await _last(sims, leader.epoch, stopped_at))
                procs.pop(leader.id).stop()
                procs[leader.id] = MasterProcess(leader.id, env.infra.zookeeper, env.cluster,
                                                 env.workdir, pki=pki)
        finally:
            for each in sims:
                await each.stop()
            for proc in procs.values():
                proc.stop()
    return {k: {"runs": [round(v, 3) for v in vs], "median_s": round(statistics.median(vs), 3),
                "max_s": round(max(vs), 3)} for k, vs in results.items() if vs}


async def _failover(sim: SimServer, epoch: int, leader: MasterProcess,
                    sig: int) -> tuple[float, float]:
    """Stop the leader with `sig`; (seconds until the server's first new-epoch directive, when
    the leader was stopped on the monotonic clock)."""
    await until(lambda: sim.directives and sim.directives[-1].epoch == epoch, 60,
                "directive from the current leader")
    started = time.monotonic()
    leader.kill(sig)
    got = await until(lambda: next((d for d in sim.directives if d.epoch > epoch), None), 60,
                      "new leader directive")
    return float(got.at - started), started


async def _last(sims: list[SimServer], epoch: int, stopped_at: float) -> float:
    """Seconds from the leader's stop until every server has a directive of a higher epoch."""
    def first_new(each: SimServer) -> float | None:
        return next((d.at for d in each.directives if d.epoch > epoch), None)

    await until(lambda: all(first_new(each) is not None for each in sims), 120,
                "every server directed by the new leader")
    return max(float(first_new(each) or 0.0) for each in sims) - stopped_at


def _contending(zk: KazooClient, paths: ZkPaths) -> int:
    return len(zk.get_children(paths.election)) if zk.exists(paths.election) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plaintext", action="store_true", help="tls.insecure: no mTLS")
    parser.add_argument("--servers", type=int, default=1)
    args = parser.parse_args()
    print_result(run(args.rounds, args.plaintext, args.servers))


if __name__ == "__main__":
    main()
