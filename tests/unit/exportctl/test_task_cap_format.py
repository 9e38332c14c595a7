"""`exportctl servers` shows a server's tasks against its task cap (issue 17)."""

from __future__ import annotations

from tools.exportctl import format as fmt

NOW = 10_000.0


def test_tasks_column_shows_the_cap_when_there_is_one() -> None:
    base = {"group": "default", "alive": True, "cordoned": False, "draining": False,
            "cpu_utilisation": 0.1, "net_utilisation": 0.1, "last_report_unix": NOW - 1}
    capped = {**base, "id": "srv-a", "tasks": ["j:t:0", "j:t:1"], "max_tasks": 8}
    free = {**base, "id": "srv-b", "tasks": ["j:t:2"], "max_tasks": None}
    text = fmt.servers_table([capped, free], NOW)
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:]}
    assert "2/8" in rows["srv-a"]
    assert "1" in rows["srv-b"] and not any("/" in cell for cell in rows["srv-b"])
    assert all(len(line) <= 80 for line in text.splitlines()), text
