"""The scheduler's load estimate respects a job's rate limit: a task's network estimate is never
above its share of the job's bytes/s (`Task.net_cap`), whether it comes from a hint, the default or
a measurement; the leader fills the cap from the spec (master/state.py)."""

from __future__ import annotations

from master.state import LiveState
from master.store import Snapshot, StoredJob
from scheduler.estimates import estimates
from scheduler.model import ClusterView, Config, Resources, Task
from tasks.spec import parse_job_spec


def _view(*tasks: Task) -> ClusterView:
    return ClusterView(now=0.0, servers=(), tasks=tasks,
                       config=Config(default_estimate=Resources(0.1, 5e6)))


def test_estimates_never_exceed_the_cap() -> None:
    got = estimates(_view(
        Task("hinted", "j", "g", hint=Resources(0.2, 9e6), net_cap=1e6),
        Task("default", "k", "g", net_cap=2e6),
        Task("measured", "m", "g", load=Resources(0.3, 3e6), measured=True, net_cap=2.5e6),
        Task("free", "n", "g")))
    assert (got["hinted"].net, got["hinted"].cpu) == (1e6, 0.2)
    assert got["default"].net == 2e6
    assert got["measured"].net == 2.5e6
    assert got["free"].net == 5e6


def test_the_leader_caps_each_task_at_its_share_of_the_job_limit() -> None:
    spec = parse_job_spec({"id": "orders", "source": {"topic": "orders"},
                           "rate_limit": {"bytes_per_s": 4e6},
                           "sink": {"type": "s3", "bucket": "bucket"}})
    state = LiveState(Snapshot(jobs={"orders": StoredJob(spec, 0.0)}, assignments={}, admin={},
                               servers={}, shards=4), now=0.0)
    state.add_partitions("orders", {"orders": 4}, 0.0)
    view = state.view(0.0, Config(default_estimate=Resources(0.1, 5e6)))
    assert {t.net_cap for t in view.tasks} == {1e6}
    assert {e.net for e in estimates(view).values()} == {1e6}
