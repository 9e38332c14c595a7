"""SUSPENDED pauses a leader (no streams, no directives, no writes) and CONNECTED on the same
session resumes it. The state events are fed to the election's listener directly (cutting a real
connection without expiring the session is not reliable on a shared ZooKeeper); everything else
is real."""

from __future__ import annotations

import pytest
from kazoo.client import KazooState

from tasks.errors import Unavailable
from tests.integration.master.conftest import StartMaster, StartSim, job_spec, until


async def test_suspended_leader_pauses_and_resumes_on_the_same_session(
        start_master: StartMaster, start_sim: StartSim, topic: str) -> None:
    master = await start_master("m1")
    lead = await master.wait_leading(30)
    sim = await start_sim("srv-a")
    await until(lambda: sim.acks, 30, "server acknowledged")
    assert master.elector is not None

    master.elector._on_state(KazooState.SUSPENDED)
    assert lead.term.suspended and not master.control.is_leader()
    assert not master.control.readiness().ready
    with pytest.raises(Unavailable):
        await lead.create_job(job_spec("while-suspended", topic))
    await until(lambda: "srv-a" not in master.sessions._conns, 30, "the stream closed")
    acks, refused = sim.acks, sim.refused
    directives = len(sim.directives)
    await until(lambda: sim.refused >= refused + 2, 30, "new streams refused")
    assert sim.acks == acks, "acknowledged while suspended"

    master.elector._on_state(KazooState.CONNECTED)       # the same session: resume
    assert lead.term.active and not lead.term.lost
    await until(lambda: sim.acks > acks, 30, "acks again after resuming")
    await master.control.create_job(job_spec("after", topic))
    await until(lambda: len(sim.directives) > directives and sim.desired, 30,
                "directives again after resuming")
    assert master.leadership is lead, "resuming kept the term"


async def test_lost_session_ends_the_term(start_master: StartMaster) -> None:
    master = await start_master("m1")
    lead = await master.wait_leading(30)
    assert master.elector is not None
    master.elector._on_state(KazooState.LOST)
    await until(lambda: master.leadership is not lead, 30, "the term ended")
    # The session is in fact fine: the master contends again and wins a new epoch.
    again = await master.wait_leading(30)
    assert again.term.epoch > lead.term.epoch
