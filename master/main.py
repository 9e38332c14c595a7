"""`exportd-master`: load settings, run one master until SIGTERM/SIGINT.

    exportd-master --config master.yaml --set zookeeper.hosts=zk:2181 --set http.port=0

SIGTERM releases leadership at once (a standby takes over in well under a second), then closes
the heartbeat streams, the API and the ZooKeeper session, and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

from master.process import Master
from master.settings import MasterSettings
from scheduler import plan
from tasks.entrypoint import process_main
from tasks.logs import get_logger

log = get_logger(__name__)


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
    return process_main("exportd-master", __doc__, MasterSettings, run, argv)


if __name__ == "__main__":
    sys.exit(main())
