"""`exportd-master`: load settings, run one master until SIGTERM/SIGINT.

    exportd-master --config master.yaml --set zookeeper.hosts=zk:2181 --set http.port=0

SIGTERM releases leadership at once (a standby takes over in well under a second), then closes
the heartbeat streams, the API and the ZooKeeper session, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from master.process import Master
from master.settings import MasterSettings
from scheduler import plan
from tasks.errors import ExportdError
from tasks.logs import configure_logging, get_logger
from tasks.settings import load_settings, parse_set_flags

log = get_logger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="exportd-master", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML settings file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set zookeeper.hosts=127.0.0.1:2181")
    return parser.parse_args(argv)


async def run(settings: MasterSettings) -> int:
    # The reconcile round builds and plans the view in a thread; a shorter GIL switch interval
    # (default 5 ms) keeps the event loop (acks) from queueing behind it.
    sys.setswitchinterval(0.0005)
    master = Master(settings, plan)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await master.start()
        await stop.wait()
        log.info("stopping", master=settings.id)
    finally:
        await master.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(MasterSettings, config_file=args.config,
                                 overrides=parse_set_flags(args.set))
    except ExportdError as exc:
        print(f"exportd-master: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(json=settings.log_format == "json", level=settings.log_level)
    try:
        return asyncio.run(run(settings))
    except ExportdError as exc:
        log.error("master_failed", error=exc.message)
        return 1


if __name__ == "__main__":
    sys.exit(main())
