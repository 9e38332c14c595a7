"""The drain lifecycle on a real master, real ZooKeeper and real `exportd-server` processes:
`drain --wait`, SIGTERM, start again -> the server takes work again by itself (a rolling
upgrade needs no manual step); `uncordon` ends a drain; a cordon outlives a restart.

Seen failing on the code before the fix (a01a2a2): after the restart the server stayed
`draining` with 0 tasks forever ("timed out ... waiting for s1's drain ended when it registered
again")."""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from master.api.ports import TaskFilter
from master.process import Master
from tests.integration.master.conftest import PARTITIONS, StartMaster, job_spec, until
from tests.integration.server.harness import process_settings, server_process
from tests.pki import session_pki
from tools.exportctl.main import run

DEADLINE = 60.0


async def ctl(master: Master, *argv: str) -> tuple[int, str, str]:
    """exportctl against this master (blocking urllib, so in a thread)."""
    out, err = io.StringIO(), io.StringIO()
    env = {"EXPORTD_MASTERS": master.http_url, "EXPORTD_CA": str(session_pki().ca_file)}
    code = await asyncio.to_thread(run, list(argv), stdout=out, stderr=err, environ=env)
    return code, out.getvalue(), err.getvalue()


@contextlib.asynccontextmanager
async def server(server_id: str, zookeeper: str, cluster: str,
                 tmp: Path, run_no: int) -> AsyncIterator[asyncio.subprocess.Process]:
    settings = {**process_settings(server_id, zookeeper, cluster, tmp / server_id),
                "runner_factory": "tests.integration.server.harness:fake_factory",
                "lease.initial_heartbeat_interval": "0.2"}
    (tmp / server_id).mkdir(exist_ok=True)
    async with server_process(settings, tmp / f"{server_id}-{run_no}.log") as proc:
        yield proc


def holders(master: Master) -> dict[str, str | None]:
    return {t.id: t.server for t in master.control.list_tasks(TaskFilter())
            if t.state == "running"}


def flags(master: Master, server_id: str) -> tuple[bool, bool]:
    view = master.control.get_server(server_id)
    return view.draining, view.cordoned


async def restart(stack: contextlib.AsyncExitStack, proc: asyncio.subprocess.Process,
                  server_id: str, zookeeper: str, cluster: str, tmp: Path,
                  run_no: int) -> asyncio.subprocess.Process:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
    return await stack.enter_async_context(server(server_id, zookeeper, cluster, tmp, run_no))


async def test_drain_restart_takes_work_again_uncordon_ends_drain(
        start_master: StartMaster, zookeeper: str, cluster: str, topic: str,
        tmp_path: Path) -> None:
    m1 = await start_master("m1")
    await m1.wait_leading(30)
    async with contextlib.AsyncExitStack() as stack:
        s1 = await stack.enter_async_context(server("s1", zookeeper, cluster, tmp_path, 1))
        await stack.enter_async_context(server("s2", zookeeper, cluster, tmp_path, 1))
        await until(lambda: {s.id for s in m1.control.list_servers()
                             if s.alive and s.last_report_unix} == {"s1", "s2"},
                    DEADLINE, "both servers reporting")
        await m1.control.create_job(job_spec("lifecycle", topic))
        await until(lambda: len(holders(m1)) == PARTITIONS, DEADLINE, "every task running")

        code, out, err = await ctl(m1, "drain", "s1", "--wait", "--timeout", "60")
        assert code == 0, err
        assert set(holders(m1).values()) == {"s2"}
        code, out, err = await ctl(m1, "servers")
        assert code == 0, err
        assert "drained" in next(line for line in out.splitlines() if line.startswith("s1"))

        # Rolling upgrade: SIGTERM, start again -> back to work with no manual step.
        s1 = await restart(stack, s1, "s1", zookeeper, cluster, tmp_path, 2)
        await until(lambda: flags(m1, "s1") == (False, False), DEADLINE,
                    "s1's drain ended when it registered again")
        code, _, err = await ctl(m1, "drain", "s2")
        assert code == 0, err
        await until(lambda: set(holders(m1).values()) == {"s1"}
                    and len(holders(m1)) == PARTITIONS, DEADLINE, "every task moved to s1")

        # `uncordon` ends the drain of a server that did not restart.
        assert flags(m1, "s2") == (True, False)
        code, out, err = await ctl(m1, "uncordon", "s2")
        assert code == 0, err
        assert flags(m1, "s2") == (False, False)
        assert "drain" in out, out
        code, _, err = await ctl(m1, "drain", "s1", "--wait", "--timeout", "60")
        assert code == 0, err
        assert set(holders(m1).values()) == {"s2"}

        # A cordon outlives the restart; the drain does not.
        code, _, err = await ctl(m1, "cordon", "s1")
        assert code == 0, err
        await restart(stack, s1, "s1", zookeeper, cluster, tmp_path, 3)
        await until(lambda: flags(m1, "s1") == (False, True), DEADLINE,
                    "s1 registered again: drain ended, still cordoned")
        code, out, err = await ctl(m1, "servers")
        assert "cordoned" in next(line for line in out.splitlines() if line.startswith("s1"))
        assert set(holders(m1).values()) == {"s2"}
