"""A rate-limited job's tasks show their share and their waits: the leader's view (master/views.py)
divides the job's rate_limit by its task count, takes the waits from the server's report, and
`exportctl explain` prints both; an unlimited job's tasks say nothing about it."""

from __future__ import annotations

import dataclasses

from master import views
from master.state import LiveState
from master.store import Snapshot, StoredAssignment, StoredJob
from proto import exportd_pb2 as pb
from tasks.runner import task_id
from tasks.spec import parse_job_spec
from tools.exportctl import format as fmt


def _state(**spec: object) -> LiveState:
    job = parse_job_spec({"id": "orders", "source": {"topics": ["a", "b"]},
                          "sink": {"type": "s3", "bucket": "bucket"}, **spec})
    tasks = {task_id("orders", t, p): StoredAssignment("s1", 1, None)
             for t, n in (("a", 1), ("b", 3)) for p in range(n)}
    return LiveState(Snapshot(jobs={"orders": StoredJob(job, 0.0)}, assignments=tasks, admin={},
                              servers={}, shards=4), now=0.0)


def test_the_share_and_the_waits_reach_explain() -> None:
    state = _state(rate_limit={"records_per_s": 8000, "bytes_per_s": 4e6})
    tid = task_id("orders", "b", 2)
    state.ingest_report(pb.Report(server_id="s1", group="default", seq=1, tasks=[pb.TaskStatus(
        task_id=tid, generation=1, state=pb.TASK_STATE_RUNNING, rate_limited_s=95.0)]),
        now=1.0, now_unix=1.0)
    view = views.get_task(state, tid)
    assert (view.rate_share_records_per_s, view.rate_share_bytes_per_s) == (2000.0, 1e6)
    assert (view.job_tasks, view.rate_limited_s) == (4, 95.0)
    text = fmt.explain_task(dataclasses.asdict(view), 1.0)
    assert ("rate limit: 2000 records/s and 1.0 MB/s (its share of the job's limit, over 4 "
            "tasks); waited 1m on it") in text


def test_an_unlimited_job_says_nothing_about_limits() -> None:
    view = views.get_task(_state(), task_id("orders", "a", 0))
    assert view.rate_share_records_per_s == view.rate_share_bytes_per_s == 0.0
    assert "rate limit" not in fmt.explain_task(dataclasses.asdict(view), 1.0)


def test_jobs_list_shows_a_list_or_a_pattern() -> None:
    def row(source: dict[str, object]) -> str:
        job = {"spec": {"id": "j", "source": source, "sink": {"type": "s3"}}, "state": "running"}
        return fmt.jobs_table([job]).splitlines()[-1]

    assert "/orders\\..+/" in row({"topic": "", "topic_pattern": "orders\\..+"})
    assert "a,b" in row({"topic": "", "topics": ["a", "b"]})
    assert " t " in row({"topic": "t"})
