"""What the chaos test asks of the cluster around its faults: where tasks run, who sent a write,
whether the exporters have caught up. Queries only (HTTP API, psutil, Kafka); the faults
themselves are signals the test sends through LocalCluster's processes.
"""

from __future__ import annotations

import contextlib
import urllib.error
from typing import Any

import psutil
from confluent_kafka import Consumer, TopicPartition

from tools.devcluster.cluster import LocalCluster, ServerProc, http_json


def tasks_of(cluster: LocalCluster, job: str) -> list[dict[str, Any]]:
    url = cluster.leader_url()
    if url is None:
        return []
    tasks: list[dict[str, Any]] = http_json(f"{url}/api/v1/tasks?job={job}")
    return tasks


def all_running(cluster: LocalCluster, jobs: list[str], partitions: int,
                servers: set[str]) -> bool:
    """Every task of every job runs, on one of `servers`."""
    for job in jobs:
        tasks = tasks_of(cluster, job)
        if len(tasks) != partitions or not all(
                t["state"] == "running" and t["server"] in servers for t in tasks):
            return False
    return True


def task_counts(cluster: LocalCluster, jobs: list[str]) -> dict[str, int]:
    """Running tasks per server, over all jobs."""
    counts: dict[str, int] = {}
    for job in jobs:
        for task in tasks_of(cluster, job):
            if task["state"] == "running" and task["server"]:
                counts[task["server"]] = counts.get(task["server"], 0) + 1
    return counts


def server_of_task(cluster: LocalCluster, task_id: str) -> str | None:
    url = cluster.leader_url()
    if url is None:
        return None
    with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
        server = http_json(f"{url}/api/v1/tasks/{task_id}").get("server")
        return str(server) if server else None
    return None


def sender_of(cluster: LocalCluster, peer_port: int, proxy_port: int) -> ServerProc | None:
    """The server whose process (main or worker) holds the TCP connection from `peer_port` to
    the proxy on loopback."""
    for server in cluster.server_procs:
        if not server.proc.alive():
            continue
        with contextlib.suppress(psutil.Error):
            main = psutil.Process(server.proc.pid)
            for proc in [main, *main.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    for conn in proc.net_connections(kind="tcp"):
                        if (conn.laddr and conn.laddr.port == peer_port and conn.raddr
                                and conn.raddr.port == proxy_port):
                            return server
    return None


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                 timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        consumer.close()


def caught_up(bootstrap: str, groups: list[str], topic: str,
              ends: dict[int, int]) -> bool:
    """Every group has committed every partition's end offset."""
    return all(committed_offsets(bootstrap, group, topic, len(ends)) == ends for group in groups)
