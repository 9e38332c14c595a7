"""Election, failover and fencing with real ZooKeeper: `exportd-master` processes killed with
SIGKILL and stopped with SIGTERM, and a deposed leader's late write rejected after a forced
session expiry."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kazoo.client import KazooClient

from master import metrics
from master.election import SetData, current_leader
from tasks.cluster import LeaderInfo, ZkPaths
from tasks.errors import Fenced
from tests.integration.master.conftest import StartMaster, until
from tests.pki import tls_block
from tools.infra.zkauth import session_credentials

BIN = Path(sys.executable).parent


class Proc:
    def __init__(self, master_id: str, config: Path, log: Path) -> None:
        self.id = master_id
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen([str(BIN / "exportd-master"), "--config", str(config)],
                                          stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=30)


@pytest.fixture
def procs(zookeeper: str, kafka: str, cluster: str, tmp_path: Path) -> Iterator[list[Proc]]:
    started: list[Proc] = []
    for master_id in ("p1", "p2"):
        config = tmp_path / f"{master_id}.yaml"
        config.write_text(yaml.safe_dump({
            "id": master_id,
            "zookeeper": {"hosts": zookeeper, "cluster": cluster, "session_timeout": "2s",
                          **session_credentials().master()},
            "grpc": {"host": "127.0.0.1", "port": 0},
            "http": {"host": "127.0.0.1", "port": 0},
            "tls": tls_block(cluster, "master", master_id),
            "kafka": {"bootstrap_servers": kafka},
            "api": {"auth": "none"},   # loopback; these tests do not call the API
            "log_format": "json",
        }))
        started.append(Proc(master_id, config, tmp_path / f"{master_id}.log"))
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()


def _leader(zk: KazooClient, paths: ZkPaths) -> LeaderInfo | None:
    return current_leader(zk, paths)


async def test_kill_9_of_the_leader_elects_the_other_with_a_higher_epoch(
        procs: list[Proc], zk: KazooClient, paths: ZkPaths) -> None:
    first = await until(lambda: _leader(zk, paths), 60, "a leader")
    leader = next(p for p in procs if p.id == first.id)
    other = next(p for p in procs if p.id != first.id)
    await until(lambda: b"leadership_won" in leader.log.read_bytes(), 30, "leader logged")
    os.kill(leader.popen.pid, signal.SIGKILL)
    leader.popen.wait(timeout=30)
    second = await until(lambda: (info := _leader(zk, paths)) and info.id == other.id and info,
                         60, "the other master leading")
    assert second.epoch > first.epoch


async def test_sigterm_hands_over_at_once(procs: list[Proc], zk: KazooClient,
                                          paths: ZkPaths) -> None:
    first = await until(lambda: _leader(zk, paths), 60, "a leader")
    await until(lambda: all(b"master_started" in p.log.read_bytes() for p in procs), 60,
                "both masters up")
    leader = next(p for p in procs if p.id == first.id)
    started = time.monotonic()
    leader.popen.send_signal(signal.SIGTERM)
    second = await until(lambda: (info := _leader(zk, paths)) and info.id != first.id and info,
                         60, "the standby leading")
    handover = time.monotonic() - started
    assert second.epoch > first.epoch
    assert leader.popen.wait(timeout=30) == 0
    # Well under the 2 s session timeout: the lock was released, not expired.
    print(f"SIGTERM hand-over {handover:.3f}s")


async def test_deposed_leader_write_is_fenced_after_session_expiry(
        start_master: StartMaster, zookeeper: str, paths: ZkPaths) -> None:
    a = await start_master("a")
    lead_a = await a.wait_leading(30)
    b = await start_master("b")
    old_term = lead_a.term
    fenced_before = metrics.FENCED_WRITES._value.get()

    # Expire a's session from outside: a second client on the same session id closes it.
    session_id, password = a.client.client_id
    killer = KazooClient(hosts=zookeeper, client_id=(session_id, password), timeout=2.0)
    await asyncio.to_thread(killer.start, 30)
    await asyncio.to_thread(killer.stop)
    killer.close()

    lead_b = await b.wait_leading(60)
    assert lead_b.term.epoch > old_term.epoch
    await until(lambda: old_term.lost, 30, "a noticed it lost its session")
    await until(lambda: a.client.connected, 30, "a reconnected with a new session")
    with pytest.raises(Fenced):
        await asyncio.to_thread(old_term.commit, [SetData(paths.jobs, b"late")])
    assert metrics.FENCED_WRITES._value.get() == fenced_before + 1
    raw, _ = await asyncio.to_thread(a.client.get, paths.jobs)
    assert raw != b"late"
