"""Server settings loading, counter rates, reconnect back-off, and proto translation."""

from __future__ import annotations

import random
from collections import deque
from pathlib import Path

import pytest

from proto import exportd_pb2 as pb
from server.host import advertised_host
from server.sampler import (
    MIN_RATE_WINDOW_S,
    RATE_WINDOW_S,
    Counters,
    cpu_cores,
    rate,
    window_base,
    worker_processes,
)
from server.session import backoff_delay
from server.settings import CapacitySettings, HttpSettings, ServerSettings, default_server_id
from server.wire import assignment_from_proto, task_status
from tasks.errors import ConfigError, ValidationError
from tasks.runner import TaskState, TaskStats
from tasks.settings import load_settings
from tasks.spec import FileSink, JobSpec, Source


def test_default_id_is_hostname_plus_suffix_and_unique() -> None:
    first, second = default_server_id(), default_server_id()
    assert first != second
    assert "/" not in first and len(first.rsplit("-", 1)[1]) == 6
    assert ServerSettings().id != ServerSettings().id


def test_rates_cover_at_least_a_window_of_samples() -> None:
    history = deque([Counters(0.0, 0, 0, 0.0)])
    bases = []
    for at in (0.03, 0.23, 0.43, 0.63, 0.83, 1.03, 1.23, 1.43, 3.0):
        bases.append(window_base(history, at).at)
        history.append(Counters(at, 0, 0, 0.0))
    # Until a second has passed, from the first sample; then from the newest one a second old
    # (0.03 at 1.03, 0.43 at 1.43); after a long gap, from the previous sample.
    assert bases == [0.0, 0.0, 0.0, 0.0, 0.0, 0.03, 0.23, 0.43, 1.43]
    assert [c.at for c in history] == [1.43, 3.0]
    assert RATE_WINDOW_S > MIN_RATE_WINDOW_S > 0.03  # the first report (~30 ms in) shows no rate


def test_settings_from_yaml_env_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "server.yaml"
    cfg.write_text("id: s1\ngroup: gpu\nzookeeper:\n  hosts: zk:2181\n  session_timeout: 6s\n"
                   "lease:\n  margin: 1500ms\nlabels:\n  zone: a\n")
    env = {"EXPORTD_CAPACITY__NET_BYTES_PER_S": "1e9", "EXPORTD_HTTP__PORT": "9000"}
    got = load_settings(ServerSettings, config_file=cfg, environ=env,
                        overrides={"zookeeper.cluster": "prod", "http.port": 0})
    assert (got.id, got.group, got.labels) == ("s1", "gpu", {"zone": "a"})
    assert got.zookeeper.hosts == "zk:2181" and got.zookeeper.cluster == "prod"
    assert got.zookeeper.session_timeout == 6.0
    assert got.lease.margin == 1.5
    assert got.capacity.net_bytes_per_s == 1e9
    assert got.http.port == 0


@pytest.mark.parametrize("bad", [{"id": "a/b"}, {"http.port": 70000}, {"nope": 1},
                                 {"capacity.cpu_cores": 0}])
def test_bad_settings_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load_settings(ServerSettings, environ={}, overrides=bad)


def test_capacity_and_workers() -> None:
    assert cpu_cores(CapacitySettings(cpu_cores=3.5)) == 3.5
    assert cpu_cores(CapacitySettings()) >= 1
    assert worker_processes(CapacitySettings(cpu_cores=3.5)) == 3
    assert worker_processes(CapacitySettings(cpu_cores=0.5)) == 1
    assert worker_processes(CapacitySettings(worker_processes=7)) == 7


@pytest.mark.parametrize(("prev", "cur", "elapsed", "expected"),
                         [(0, 100, 2.0, 50.0), (100, 100, 1.0, 0.0), (100, 50, 1.0, 0.0),
                          (0, 100, 0.0, 0.0)])
def test_rate(prev: int, cur: int, elapsed: float, expected: float) -> None:
    assert rate(prev, cur, elapsed) == expected


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    for attempt in range(40):
        delay = backoff_delay(attempt, 0.2, 5.0, rng)
        assert 0.2 <= delay <= min(5.0, 0.2 * 2 ** attempt)
    delays = {round(backoff_delay(10, 0.2, 5.0, rng), 6) for _ in range(20)}
    assert len(delays) > 1


def test_advertised_host() -> None:
    def on(**http: str) -> str:
        return advertised_host(ServerSettings(http=HttpSettings(**http)))  # type: ignore[arg-type]

    assert on(host="10.0.0.5") == "10.0.0.5"
    assert on(host="0.0.0.0", advertise_host="pod-1.svc") == "pod-1.svc"
    assert on(host="0.0.0.0") not in ("", "0.0.0.0")


def test_task_status_from_stats() -> None:
    status = task_status("j:t:0", 3, TaskStats(TaskState.DRAINING, records_per_s=5.0,
                                               consumer_lag=-1, committed_offset=10,
                                               last_error="x", records_total=99))
    assert status.state == pb.TASK_STATE_DRAINING
    assert (status.generation, status.committed_offset, status.consumer_lag) == (3, 10, -1)
    assert (status.last_error, status.records_total) == ("x", 99)
    assert {task_status("a:b:0", 1, TaskStats(s)).state for s in TaskState} == {
        pb.TASK_STATE_STARTING, pb.TASK_STATE_RUNNING, pb.TASK_STATE_DRAINING,
        pb.TASK_STATE_STOPPED, pb.TASK_STATE_FAILED}


def test_assignment_from_proto() -> None:
    spec = JobSpec(id="j", source=Source(topic="t"), sink=FileSink(directory="/d"))
    got = assignment_from_proto(pb.TaskAssignment(task_id="j:t:4", generation=2, job_id="j",
                                                  topic="t", partition=4,
                                                  spec_json=spec.to_json()))
    assert (got.task_id, got.generation, got.partition, got.topic) == ("j:t:4", 2, 4, "t")
    assert got.job == spec
    with pytest.raises(ValidationError):
        assignment_from_proto(pb.TaskAssignment(task_id="x", spec_json=b"{}"))
