"""`make dev` (tools/devcluster) notices a process that died, once, with its exit code, log file
and last lines; a live one is not reported; the work dir (logs) outlives stop()."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tools.devcluster.cluster import DeathWatch, LocalCluster
from tools.infra.process import ManagedProcess


def test_a_dead_process_is_reported_once(tmp_path: Path) -> None:
    dying = ManagedProcess("server-2", [sys.executable, "-c",
                                        "print('tasks: 3'); print('boom: disk full'); "
                                        "raise SystemExit(3)"], tmp_path / "server-2.log")
    living = ManagedProcess("server-1", [sys.executable, "-c", "import time; time.sleep(60)"],
                            tmp_path / "server-1.log")
    try:
        deadline = time.monotonic() + 30
        while dying.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        watch = DeathWatch()
        told = watch.check([living, dying])
        assert len(told) == 1
        assert told[0].startswith(f"!! server-2 died (exit code 3); its log: "
                                  f"{tmp_path / 'server-2.log'}")
        assert "   | boom: disk full" in told[0]
        assert watch.check([living, dying]) == []
    finally:
        living.stop(grace=5)
        dying.stop(grace=5)


def test_stop_keeps_the_logs_when_asked(tmp_path: Path) -> None:
    cluster = LocalCluster(workdir=tmp_path / "dev", keep_workdir=True)
    (cluster.workdir / "logs").mkdir(parents=True)
    (cluster.workdir / "logs" / "master-1.log").write_text("hello\n")
    cluster.stop()
    assert (cluster.workdir / "logs" / "master-1.log").read_text() == "hello\n"
