"""Store codecs and sizes, the bounded task history, and the settings' defaults."""

from __future__ import annotations

import pytest

from master.api.ports import TaskEvent
from master.records import History
from master.settings import MasterSettings
from master.store import (
    AdminFlags,
    StoredAssignment,
    StoredJob,
    decode_admin,
    decode_job,
    decode_shard,
    encode_admin,
    encode_job,
    encode_shard,
    shard_of,
    split_shards,
)
from tasks.errors import ConfigError
from tasks.runner import task_id
from tasks.settings import load_settings
from tasks.spec import parse_job_spec


def test_job_round_trip() -> None:
    spec = parse_job_spec({"id": "j1", "source": {"topic": "t"},
                           "sink": {"type": "file", "directory": "/x"}})
    job = decode_job(encode_job(StoredJob(spec, 12.5)))
    assert job.spec == spec and job.created_unix == 12.5


def test_shards_round_trip_and_100k_tasks_fit_far_under_1mb() -> None:
    tasks = {task_id(f"job-{j}", "a-fairly-long-topic-name", p):
             StoredAssignment(f"server-{(j * 100 + p) % 1000:04d}", 3, None)
             for j in range(1000) for p in range(100)}
    shards = split_shards(tasks, 64)
    sizes = [len(encode_shard(items)) for items in shards.values()]
    assert max(sizes) < 100_000, max(sizes)
    decoded: dict[str, StoredAssignment] = {}
    for items in shards.values():
        decoded.update(decode_shard(encode_shard(items)))
    assert decoded == tasks
    assert all(shard_of(t, 64) == i for i, items in shards.items() for t in items)
    assert decode_shard(b"") == {}


def test_draining_survives_the_codec() -> None:
    items = {"j:t:0": StoredAssignment(None, 2, "a")}
    assert decode_shard(encode_shard(items)) == items


def test_admin_round_trip() -> None:
    flags = AdminFlags(cordoned=True, draining=True, drain_started_tasks=7)
    assert decode_admin(encode_admin(flags)) == flags
    assert decode_admin(b"") == AdminFlags()


def test_history_is_bounded_and_collapses_repeated_pending() -> None:
    history = History(3)
    for i in range(5):
        history.add("t", TaskEvent(float(i), "placed", f"r{i}"))
    history.add("t", TaskEvent(9.0, "pending", "no room"))
    history.add("t", TaskEvent(10.0, "pending", "no room"))
    events = history.of("t")
    assert len(events) == 3 and events[-1].kind == "pending" and events[0].reason == "r3"
    history.forget("t")
    assert history.of("t") == ()


def test_settings_defaults_and_durations() -> None:
    s = load_settings(MasterSettings, environ={}, overrides={
        "id": "m1", "zookeeper.session_timeout": "2s", "lease_ttl": "15s", "api.auth": "none"})
    assert s.zookeeper.session_timeout == 2.0 and s.lease_ttl == 15.0
    assert s.heartbeat_budget == 500 and s.api_settings().master_id == "m1"
    with pytest.raises(ConfigError):
        load_settings(MasterSettings, environ={}, overrides={"id": "a/b", "api.auth": "none"})
    with pytest.raises(ConfigError):
        load_settings(MasterSettings, environ={}, overrides={"lease_ttl": "1s", "api.auth": "none"})
