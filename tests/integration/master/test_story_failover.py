"""A task's story survives a leader change: explain a task on the leader, stop the leader,
explain it again on the new one -> the same moves with their reasons, its last error, and
since when it runs where it runs.

Seen failing on the code before the fix (60e2d89): the new leader's history was empty (explain:
`since - (never)`, `history: none recorded`)."""

from __future__ import annotations

import asyncio
import io

from master.process import Master
from tasks.errors import ExportdError
from tests.integration.master.conftest import StartMaster, StartSim, job_spec, until
from tests.pki import session_pki
from tools.exportctl.main import run

DEADLINE = 30.0


async def explain(master: Master, task: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    env = {"EXPORTD_MASTERS": master.http_url, "EXPORTD_CA": str(session_pki().ca_file)}
    code = await asyncio.to_thread(run, ["explain", task], stdout=out, stderr=err, environ=env)
    assert code == 0, err.getvalue()
    return out.getvalue()


async def test_explain_after_failover_keeps_the_story(start_master: StartMaster,
                                                      start_sim: StartSim, topic: str) -> None:
    fast = {"story_flush_interval": 0.2}
    m1 = await start_master("m1", **fast)
    await m1.wait_leading(30)
    m2 = await start_master("m2", **fast)
    a = await start_sim("srv-a", task_error="s3: NoSuchBucket: export-missing")
    await until(lambda: a.acks, DEADLINE, "srv-a acknowledged")
    await m1.control.create_job(job_spec("story", topic))
    task = f"story:{topic}:0"
    await until(lambda: task in a.desired, DEADLINE, "the task on srv-a")
    await until(lambda: "error" in {e.kind for e in m1.control.get_task(task).history},
                DEADLINE, "srv-a's error recorded in the story")
    b = await start_sim("srv-b")
    await until(lambda: b.acks, DEADLINE, "srv-b acknowledged")
    await m1.control.drain("srv-a")
    await until(lambda: task in b.desired, DEADLINE, "the task moved to srv-b")
    wanted = {"created", "placed", "revoked", "stopped", "moved", "error"}
    await until(lambda: wanted <= {e.kind for e in m1.control.get_task(task).history},
                DEADLINE, "created, placed, error, revoked, stopped, moved in the history")
    before = m1.control.get_task(task)
    assert before.since_unix is not None
    text_before = await explain(m1, task)
    # A standby's view (ZooKeeper only) has the story as the leader last wrote it.

    def standby_story() -> bool:
        try:
            return m2.control.get_task(task).history[:len(before.history)] == before.history
        except ExportdError:   # no view yet, or not the task yet
            return False

    await until(standby_story, DEADLINE, "the standby's view with the story")
    await m1.stop()
    await m2.wait_leading(DEADLINE)
    after = m2.control.get_task(task)
    assert after.history[:len(before.history)] == before.history
    assert after.since_unix == before.since_unix
    text_after = await explain(m2, task)
    assert "history: none recorded" not in text_after and "since -" not in text_after
    assert text_after.split("history:")[1].startswith(text_before.split("history:")[1])
    assert "NoSuchBucket" in text_after
