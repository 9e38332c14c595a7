"""TLS to ZooKeeper's secure client port that trusts the cluster CA only.

kazoo's own TLS (`KazooClient(use_ssl=True, ca=...)`, kazoo 2.11) builds its context with the
system's default CAs loaded *besides* `ca` and, by default, checks no host name: any certificate
from any public CA would pass for ZooKeeper. `TlsHandler` is kazoo's threading handler with
one change, the socket it connects: its context (`client_context`) trusts `ca_file` alone,
requires TLS 1.2 or later, checks the host name written in `zookeeper.hosts` against the
server's certificate (as ZooKeeper's Java client does by default) and presents this process's
certificate when one is configured (ZooKeeper's `ssl.clientAuth=need`). The context is built on
every connect, so renewed files are read at the next reconnect. kazoo's `use_ssl` stays on, so
its reads and writes handle TLS as usual; its own `ca`/`certfile`/`keyfile` are not used.

Used through `ZooKeeperSettings.client_options()` (tasks/cluster.py); docs/SECURITY.md,
"ZooKeeper", says what is verified.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from kazoo.handlers.threading import SequentialThreadingHandler


@dataclass(frozen=True, slots=True)
class ZkTls:
    """The files of the `zookeeper` settings block's TLS part."""

    ca_file: str
    cert_file: str = ""
    key_file: str = ""


def client_context(tls: ZkTls) -> ssl.SSLContext:
    """The context of one connection to ZooKeeper (reads the files now)."""
    # With cafile given, create_default_context loads that file and no default CA.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


class TlsHandler(SequentialThreadingHandler):  # type: ignore[misc]  # kazoo is untyped
    """kazoo's SequentialThreadingHandler whose connections use `client_context`. One per
    KazooClient (a handler holds its client's worker threads)."""

    def __init__(self, tls: ZkTls) -> None:
        super().__init__()
        self.tls = tls

    def create_connection(self, address: tuple[str, int], hostname: str | None = None,
                          timeout: float | None = None, use_ssl: bool = False,
                          **_kazoo_tls: object) -> socket.socket:
        if not use_ssl:   # ZooKeeperSettings never builds this handler without TLS
            raise ssl.SSLError("TlsHandler used without use_ssl")
        context = client_context(self.tls)
        sock = socket.create_connection(address, timeout)
        try:
            # The socket is connected: the handshake (and the certificate checks) happen here,
            # within `timeout`; a failure is an OSError, which kazoo retries like a lost server.
            conn = context.wrap_socket(sock, server_hostname=hostname or address[0])
        except BaseException:
            sock.close()
            raise
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn
