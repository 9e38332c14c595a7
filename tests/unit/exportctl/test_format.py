"""The pure rendering functions of exportctl, on plain JSON-shaped data."""

from __future__ import annotations

from typing import Any

from tools.exportctl import format as fmt
from tools.exportctl.client import describe_error, master_urls

NOW = 10_000.0


def _server(sid: str, group: str = "default", cpu: float = 0.5, net: float = 0.25,
            tasks: tuple[str, ...] = (), **flags: Any) -> dict[str, Any]:
    return {"id": sid, "group": group, "alive": True, "cordoned": False, "draining": False,
            "cpu_utilisation": cpu, "net_utilisation": net, "tasks": list(tasks),
            "last_report_unix": NOW - 3, **flags}


def _task(tid: str, server: str | None, state: str = "running", **more: Any) -> dict[str, Any]:
    return {"id": tid, "job": tid.split(":")[0], "group": "default", "topic": "t",
            "partition": int(tid.rsplit(":", 1)[1]), "server": server, "generation": 1,
            "state": state, "pending_reason": "", "records_per_s": 12.0, "consumer_lag": -1,
            **more}


def test_bar_and_meter() -> None:
    assert fmt.bar(0.0, 10) == "[----------]"
    assert fmt.bar(0.42, 10) == "[####------]"
    assert fmt.bar(1.0, 10) == "[##########]"
    assert fmt.bar(1.7, 10) == "[#########!]"
    assert fmt.bar(None, 4) == "[????]"
    assert fmt.bar(-0.2, 4) == "[----]"
    assert fmt.meter(0.42, 10) == "[####------]  42%"


def test_ago_clock_rate() -> None:
    assert fmt.ago(NOW - 5, NOW) == "5s ago"
    assert fmt.ago(NOW - 125, NOW) == "2m ago"
    assert fmt.ago(NOW - 7300, NOW) == "2h ago"
    assert fmt.ago(None, NOW) == "never"
    assert fmt.clock(0) == "1970-01-01 00:00:00Z"
    assert fmt.rate(1_500_000) == "1.5 MB/s"
    assert fmt.rate(12) == "12 B/s"


def test_table_fits_width_by_cutting_the_id_column() -> None:
    rows = [("x" * 100, "default", "ok")]
    text = fmt.table(("ID", "GROUP", "STATE"), rows, width=40)
    assert all(len(line) <= 40 for line in text.splitlines())
    assert "…" in text
    assert fmt.table(("A", "B"), [("1", "22")]) == "A  B\n1  22"


def test_servers_table_fits_80_columns() -> None:
    servers = [_server("srv-a", tasks=("j:t:0",)),
               _server("a-rather-long-server-name-01.example", cordoned=True),
               _server("srv-dead", alive=False, cpu=1.3)]
    text = fmt.servers_table(servers, NOW)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "cordoned" in text and "dead" in text and "3s ago" in text
    assert fmt.servers_table([], NOW) == "no servers registered"


def test_placement_map() -> None:
    placement = {
        "servers": [_server("srv-a", tasks=tuple(f"orders:orders:{p}" for p in range(12))),
                    _server("srv-b", cpu=0.1, draining=True),
                    _server("srv-h", group="heavy", cpu=0.95, net=0.7)],
        "tasks": [*(_task(f"orders:orders:{p}", "srv-a", "draining" if p == 0 else "running")
                    for p in range(12)),
                  _task("big:big:0", None, "pending",
                        pending_reason="no server in group heavy under the high watermark")],
        "groups": [{"group": g, "servers_alive": 2, "utilisation": 0.3, "imbalance": 0.1,
                    "servers_wanted": 2, "tasks": 12, "tasks_pending": 1, "reason": ""}
                   for g in ("default", "heavy")],
    }
    text = fmt.placement_map(placement)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    assert lines[0] == "group default: 2 servers, util 30%, imbalance 10%, 12 tasks (1 pending)"
    assert lines[1] == ("  servers wanted 2: 2 server(s) would bring mean utilisation to the "
                        "target")
    assert "  srv-a            cpu [####----]  50%  net [##------]  25%   12 tasks" in lines
    assert any(line.endswith("0 tasks drained") for line in lines)
    assert "orders:orders:0 (draining)" in text
    assert "pending (1):" in lines
    assert any("big:big:0" in line and "no server in group heavy" in line for line in lines)


def test_explain_task() -> None:
    task = _task("orders:orders:1", "srv-b", cpu=0.1, net=2000.0, measured=True,
                 since_unix=NOW - 60, history=[
                     {"at_unix": 0, "kind": "placed", "reason": "lowest score",
                      "server": "srv-a", "generation": 1},
                     {"at_unix": 60, "kind": "moved", "reason": "drain of srv-a",
                      "server": "srv-b", "generation": 2}])
    text = fmt.explain_task(task, NOW)
    assert "runs on srv-b (running, generation 1) since" in text
    assert "(1m ago)" in text
    assert "load 0.10 cpu, 2.0 kB/s (measured)" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "  1970-01-01 00:01:00Z  moved  srv-b  gen 2\n      drain of srv-a" in text
    long = fmt.explain_task({**task, "history": [{"at_unix": 0, "kind": "revoked",
                                                   "reason": "word " * 40}]}, NOW)
    assert all(len(line) <= 80 for line in long.splitlines())
    pending = fmt.explain_task(_task("x:t:0", None, "pending", pending_reason="no room"), NOW)
    assert "not placed (pending): no room" in pending
    assert "history: none recorded" in pending


def test_plan_drain_leader_jobs() -> None:
    assert fmt.plan_text({"changes": [], "groups": []}) == "no changes: nothing to rebalance now"
    plan = fmt.plan_text({"changes": [{"kind": "move", "task": "j:t:0", "source": "a",
                                       "target": "b", "reason": "imbalance"}], "groups": []})
    assert "1 change(s)" in plan and "move  j:t:0  a     b   imbalance" in plan
    line = fmt.drain_line({"server": "srv-a", "tasks_at_start": 4, "tasks_left": 1}, 8)
    assert line == "drain srv-a [######--] 3/4 moved, 1 left"
    assert "[########] 0/0" in fmt.drain_line({"server": "s", "tasks_at_start": 0,
                                               "tasks_left": 0}, 8)
    leader = fmt.leader_text({"id": "m1", "epoch": 3, "since_unix": NOW - 10, "http": "h",
                              "grpc": "g", "this_master": "m2", "this_master_leads": False}, NOW)
    assert leader.startswith("leader m1, epoch 3, since") and "by m2 (a standby)" in leader
    assert all(len(line) <= 80 for line in leader.splitlines())
    jobs = fmt.jobs_table([{"spec": {"id": "j", "source": {"topic": "t"},
                                     "sink": {"type": "s3"}}, "state": "paused",
                            "tasks": ["j:t:0"]}])
    assert jobs.splitlines()[1].split() == ["j", "default", "paused", "1", "t", "s3"]


def test_describe_error_and_master_urls() -> None:
    body = {"error": "invalid", "message": "source.topic: bad",
            "details": {"problems": [{"field": "source.topic", "reason": "bad"},
                                     {"field": "sink.type", "reason": "unknown"}, {}]}}
    assert describe_error(400, body).splitlines() == [
        "invalid: 3 problems (HTTP 400):", "  source.topic: bad", "  sink.type: unknown",
        "  (spec): invalid"]
    assert describe_error(400, {"error": "invalid", "message": "x: bad",
                                "details": {"problems": [{}]}}) == "invalid: x: bad (HTTP 400)"
    assert describe_error(502, "<html>\n bad gateway</html>") == \
        "HTTP 502: <html> bad gateway</html>"
    assert master_urls(["m1:8080", "http://m2/"], {}) == ["https://m1:8080", "http://m2"]
    assert master_urls([], {"EXPORTD_MASTERS": "a:1, b:2,"}) == ["https://a:1", "https://b:2"]
    assert master_urls(None, {}) == ["https://127.0.0.1:8080"]


def test_servers_drained_and_aged_out() -> None:
    servers = [_server("srv-a", tasks=("j:t:0",)),
               _server("srv-b", draining=True),
               _server("srv-c", draining=True, tasks=("j:t:1",), cordoned=True),
               _server("srv-d", cordoned=True, draining=True),
               _server("srv-gone", alive=False, last_report_unix=NOW - 3600),
               _server("srv-x", alive=False, last_report_unix=NOW - 30)]
    text = fmt.servers_table(servers, NOW)
    states = {line.split()[0]: line.split()[2] for line in text.splitlines()[1:7]
              if line.startswith("srv-")}
    assert states == {"srv-a": "ok", "srv-b": "drained", "srv-c": "draining+cordoned",
                      "srv-d": "drained+cordoned", "srv-x": "dead"}
    assert "1 dead server(s) silent for over 10 min not shown (--all shows them)" in text
    assert "uncordon" in text
    every = fmt.servers_table(servers, NOW, show_all=True)
    assert sum(line.startswith("srv") for line in every.splitlines()) == 6


def test_dry_run_does_not_count_pending_as_changes() -> None:
    plan = {"changes": [
        {"kind": "move", "task": "j:t:0", "source": "a", "target": "b", "reason": "imbalance"},
        {"kind": "pending", "task": "j:t:1", "source": None, "target": None,
         "reason": "no server in group g"}], "groups": []}
    text = fmt.plan_text(plan)
    assert text.startswith("a rebalance round now would make 1 change(s)")
    assert "1 task(s) would stay pending (not changes):" in text
    only_pending = {"changes": plan["changes"][1:], "groups": []}
    assert fmt.plan_text(only_pending).startswith("no changes: nothing to rebalance now")


def test_explain_without_since_says_so() -> None:
    task = _task("orders:orders:1", "srv-b", since_unix=None, history=[])
    text = fmt.explain_task(task, NOW)
    assert "since when: not recorded" in text and "(never)" not in text
