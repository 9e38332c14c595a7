"""A just-submitted job's tasks say they wait for placement (`pending`, with the reason), not
`stopped` (which reads as if someone stopped them). Seen failing before the fix (on 84462ef):
every task of a job answered `stopped` until the first round placed it."""

from __future__ import annotations

from master.api.ports import TaskFilter
from tests.integration.master.conftest import PARTITIONS, StartMaster, job_spec


async def test_submitted_tasks_are_pending_not_stopped(start_master: StartMaster,
                                                      topic: str) -> None:
    m1 = await start_master("m1")
    await m1.wait_leading(30)
    await m1.control.create_job(job_spec("fresh", topic))
    # No round has run yet (create_job returns before the loop gets to one).
    tasks = m1.control.list_tasks(TaskFilter(job="fresh"))
    assert len(tasks) == PARTITIONS
    assert {t.state for t in tasks} == {"pending"}, [(t.id, t.state) for t in tasks]
    assert all("waiting for" in t.pending_reason for t in tasks)
    # Paused before its first round: stopped, not waiting for placement.
    await m1.control.set_job_state("fresh", "paused")
    assert {t.state for t in m1.control.list_tasks(TaskFilter(job="fresh"))} == {"stopped"}
    paused = job_spec("paused", topic, state="paused")
    await m1.control.create_job(paused)
    assert {t.state for t in m1.control.list_tasks(TaskFilter(job="paused"))} == {"stopped"}
