"""`exportd-master`: load settings, run one master until SIGTERM/SIGINT.

    exportd-master --config master.yaml --set zookeeper.hosts=zk:2181 --set http.port=0

SIGTERM releases leadership at once (a standby takes over in well under a second), then closes
the heartbeat streams, the API and the ZooKeeper session, and exits 0.

    exportd-master --config master.yaml --migrate-acls

sets exportd's ACLs (tasks/cluster.py) on every existing znode of the cluster whose ACL is open
or differs from them (an upgrade, a rotated credential), prints what it changed, and exits 0: a
master refuses to start on open znodes until this has run once (docs/SECURITY.md).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

from kazoo.client import KazooClient

from master.acls import migrate_acls
from master.process import Master
from master.settings import MasterSettings
from scheduler import plan
from tasks.cluster import Node, Role
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


async def migrate(settings: MasterSettings) -> int:
    """`--migrate-acls`: the table's ACLs on every existing node of the cluster, then exit."""
    zk = settings.zookeeper
    acls = zk.acls(Role.MASTER)
    client = KazooClient(**zk.client_options(), default_acl=acls.for_node(Node.ROOT))

    def blocking() -> list[str]:
        client.start(zk.session_timeout * 3)
        try:
            return migrate_acls(client, zk.paths(), acls)
        finally:
            client.stop()
            client.close()

    changed = await asyncio.to_thread(blocking)
    log.info("acls_migrated", root=zk.paths().root, changed=len(changed))
    print(f"exportd-master: set exportd's ACLs on {len(changed)} node(s) under {zk.paths().root}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return process_main("exportd-master", __doc__, MasterSettings, run, argv, actions={
        "--migrate-acls": ("set exportd's ZooKeeper ACLs on the cluster's existing znodes "
                           "(open or out of date), then exit", migrate)})


if __name__ == "__main__":
    sys.exit(main())
