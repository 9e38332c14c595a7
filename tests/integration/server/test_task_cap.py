"""A server reports its task cap to the leader (Report.max_tasks, issue 17): a real
`exportd-server` process derives it from its memory budget and logs it at start; a setting
overrides it."""

from __future__ import annotations

import json
from pathlib import Path

from server.host import ServerHost
from tests.integration.server.conftest import server_settings
from tests.integration.server.harness import (
    Coordinator,
    FakeFactory,
    process_settings,
    server_process,
    wait_until,
)


async def test_a_server_process_reports_the_slots_of_its_memory_budget(
        zookeeper: str, cluster: str, coordinator: Coordinator, tmp_path: Path) -> None:
    settings = {**process_settings("cap-server", zookeeper, cluster, tmp_path),
                "memory_budget": "64MiB", "log_format": "json"}
    log_path = tmp_path / "server.log"
    async with server_process(settings, log_path) as proc:
        await wait_until(lambda: proc.returncode is None and len(coordinator.reports) >= 2,
                         "2 reports")
    assert {r.max_tasks for r in coordinator.reports} == {32}, log_path.read_text()[-3000:]
    events = [json.loads(line) for line in log_path.read_text().splitlines()
              if line.startswith("{") and '"max_tasks"' in line]
    cap = [e for e in events if e.get("event") == "max_tasks"]
    assert cap and cap[0]["max_tasks"] == 32 and cap[0]["source"] == "memory_budget"
    assert cap[0]["memory_budget"] == 64 * 1024 * 1024


async def test_the_max_tasks_setting_is_what_the_host_reports(
        zookeeper: str, cluster: str, coordinator: Coordinator) -> None:
    host = ServerHost(server_settings(zookeeper, cluster, max_tasks=2), FakeFactory())
    await host.start()
    try:
        await wait_until(lambda: len(coordinator.reports) >= 1, "a report")
    finally:
        await host.close()
    assert {r.max_tasks for r in coordinator.reports} == {2}
