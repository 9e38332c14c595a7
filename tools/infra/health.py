"""Readiness checks for the local servers, shared by start-up (`servers`) and `status`."""

from __future__ import annotations

import contextlib
import socket
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tools.infra.ports import port_open


def zookeeper_ready(endpoint: str, tls: ssl.SSLContext | None = None) -> bool:
    """`ruok` answered; with `tls`, on the secure client port (four-letter words work there)."""
    host, port = endpoint.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=1.0) as raw:
        sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
        sock.sendall(b"ruok")
        return sock.recv(16) == b"imok"


def zookeeper_tls_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A probe's context for a TLS-only ZooKeeper: the CA alone, and a client certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def kafka_ready(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    host, port = bootstrap.rsplit(":", 1)
    if not port_open(int(port), host):  # avoids librdkafka's connect-refused noise while booting
        return False
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 0})
    return len(admin.list_topics(timeout=2).brokers) >= 1


def s3_ready(endpoint: str) -> bool:
    with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1) as resp:
        return int(resp.status) == 200


CHECKS: dict[str, Callable[[str], bool]] = {
    "zookeeper": zookeeper_ready, "kafka": kafka_ready, "s3": s3_ready}


def healthy(name: str, endpoint: str) -> bool:
    with contextlib.suppress(Exception):
        return CHECKS[name](endpoint)
    return False
