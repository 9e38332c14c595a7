"""`python -m tools.infra up|down|status|jars`: the local ZooKeeper, Kafka and S3 by hand.

`up` starts them detached and returns (state in .cache/infra/state.json); `up --foreground` keeps
them until Ctrl-C or SIGTERM and then stops them; `status` checks each one is healthy (exit 1 if
not); `down` stops them; `jars` only fetches the jars they run from (`make` calls it). A missing
java or mvn is one line naming what to install.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path

from tools.infra.errors import InfraError, PrerequisiteMissing
from tools.infra.health import healthy
from tools.infra.jars import main as fetch_jars
from tools.infra.servers import start_infra
from tools.infra.state import STATE_FILE, InfraState, pid_runs, terminate


def _print_endpoints(state: InfraState) -> None:
    for rec in state.processes:
        print(f"  {rec.name:<10} {rec.endpoint:<28} pid {rec.pid:<7} log {rec.log}")


def cmd_up(foreground: bool) -> int:
    existing = InfraState.load()
    if existing and any(pid_runs(p) for p in existing.processes):
        print("infra already running (python -m tools.infra down first):")
        _print_endpoints(existing)
        return 1
    infra = start_infra(tied_to_parent=foreground)
    state = InfraState.of(infra)
    state.save()
    print("infra up:")
    _print_endpoints(state)
    if not foreground:
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        infra.stop()
        STATE_FILE.unlink(missing_ok=True)
        print("infra stopped")
    return 0


def cmd_status() -> int:
    state = InfraState.load()
    if state is None:
        print("infra: not running (no state file)")
        return 1
    ok = True
    for rec in state.processes:
        alive = pid_runs(rec)
        good = alive and healthy(rec.name, rec.endpoint)
        ok = ok and good
        verdict = "healthy" if good else ("unhealthy" if alive else "not running")
        print(f"  {rec.name:<10} {rec.endpoint:<28} pid {rec.pid:<7} {verdict}")
    return 0 if ok else 1


def cmd_down() -> int:
    state = InfraState.load()
    if state is None:
        print("infra: not running")
        return 0
    for rec in reversed(state.processes):
        terminate(rec)
        print(f"  stopped {rec.name} (pid {rec.pid})")
    shutil.rmtree(Path(state.workdir), ignore_errors=True)
    STATE_FILE.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.infra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start ZooKeeper, Kafka and S3 on free loopback ports")
    up.add_argument("--foreground", action="store_true", help="run until Ctrl-C, then stop all")
    sub.add_parser("status", help="show whether each server is healthy")
    sub.add_parser("down", help="stop everything `up` started")
    sub.add_parser("jars", help="fetch the ZooKeeper and Kafka jars with Maven (once)")
    args = parser.parse_args(argv)
    try:
        if args.command == "jars":
            fetch_jars()
            return 0
        if args.command == "up":
            return cmd_up(args.foreground)
        if args.command == "status":
            return cmd_status()
        return cmd_down()
    except PrerequisiteMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
