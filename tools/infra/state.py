"""The state file of a detached `python -m tools.infra up`: which processes, where, their logs.

`status` and `down` run in other invocations, so they find the servers through this file
(`.cache/infra/state.json`) and check each pid still runs the command we started before acting.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools.infra.jars import CACHE_DIR
from tools.infra.servers import Infra

STATE_FILE = CACHE_DIR / "infra" / "state.json"
MARKERS = {"zookeeper": "zoo.cfg", "kafka": "kafka.properties", "s3": "moto.server"}


@dataclass
class ProcessRecord:
    name: str
    pid: int
    endpoint: str
    log: str
    marker: str  # a string in the process's command line: proves the pid is still ours


@dataclass
class InfraState:
    workdir: str
    processes: list[ProcessRecord] = field(default_factory=list)

    @staticmethod
    def of(infra: Infra) -> InfraState:
        """The record of running servers, so `status` and `down` find them from elsewhere."""
        state = InfraState(workdir=str(infra.workdir))
        for name, proc in infra.processes.items():
            marker = MARKERS[name] if name != "s3" else f"-p {infra.s3.rsplit(':', 1)[1]}"
            state.processes.append(
                ProcessRecord(name, proc.pid, getattr(infra, name), str(proc.log_path), marker)
            )
        return state

    def save(self, path: Path = STATE_FILE) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @staticmethod
    def load(path: Path = STATE_FILE) -> InfraState | None:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return InfraState(
            workdir=raw["workdir"], processes=[ProcessRecord(**p) for p in raw["processes"]]
        )


def pid_runs(record: ProcessRecord) -> bool:
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return record.marker.encode() in cmdline


def terminate(record: ProcessRecord, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL after `grace` seconds."""
    if not pid_runs(record):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_runs(record):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record.pid, signal.SIGKILL)
