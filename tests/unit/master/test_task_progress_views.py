"""What servers report about a task's progress reaches the API's view (master/state.py ->
master/views.py): totals are kept, a stalled report makes the state `stalled` with its reason,
and a task that no longer runs shows no records/s and no ages."""

from __future__ import annotations

from master import views
from master.api.ports import TaskFilter
from master.state import LiveState
from master.store import Snapshot, StoredAssignment, StoredJob
from proto import exportd_pb2 as pb
from tasks.spec import parse_job_spec

TID = "orders:orders:0"


def _state() -> LiveState:
    spec = parse_job_spec({"id": "orders", "source": {"topic": "orders"},
                           "sink": {"type": "s3", "bucket": "bucket"}})
    snapshot = Snapshot(jobs={"orders": StoredJob(spec, 0.0)},
                        assignments={TID: StoredAssignment("s1", 1, None)},
                        admin={}, servers={}, shards=4)
    return LiveState(snapshot, now=0.0)


def _report(**status: object) -> pb.Report:
    return pb.Report(server_id="s1", group="default", seq=1, tasks=[pb.TaskStatus(
        task_id=TID, generation=1, state=pb.TASK_STATE_RUNNING, **status)])  # type: ignore[arg-type]


def test_totals_ages_and_stalled_reach_the_view() -> None:
    state = _state()
    state.ingest_report(_report(records_per_s=12.0, consumer_lag=300, committed_offset=0,
                                last_error="sink: S3 NoSuchBucket", last_commit_age_s=40.0,
                                freshness_s=39.0, stalled="no commit for 40s (limit 11s)",
                                records_total=300, bytes_total=9000, exported_total=0,
                                dead_letters_total=2), now=1.0, now_unix=1.0)
    view = views.get_task(state, TID)
    assert view.state == "stalled"
    assert view.stalled_reason == "no commit for 40s (limit 11s)"
    assert (view.consumer_lag, view.committed_offset, view.records_per_s) == (300, 0, 12.0)
    assert (view.records_total, view.bytes_total, view.exported_total,
            view.dead_letters_total) == (300, 9000, 0, 2)
    assert (view.last_commit_age_s, view.freshness_s) == (40.0, 39.0)
    assert [v.id for v in views.list_tasks(state, TaskFilter(state="stalled"))] == [TID]


def test_a_running_task_is_not_stalled_and_a_stopped_one_shows_no_rate() -> None:
    state = _state()
    state.ingest_report(_report(records_per_s=50.0, consumer_lag=0, last_commit_age_s=1.0),
                        now=1.0, now_unix=1.0)
    view = views.get_task(state, TID)
    assert (view.state, view.stalled_reason, view.records_per_s) == ("running", "", 50.0)
    # The job is paused: the leader takes the task off the server (no longer desired there).
    rec = state.tasks[TID]
    rec.server = None
    view = views.get_task(state, TID)
    assert view.state == "stopped"
    assert (view.records_per_s, view.last_commit_age_s, view.freshness_s) == (0.0, -1.0, 0.0)
