"""gRPC credentials for the heartbeat session, from the `tls:` settings block (tasks/tls.py).

The leader's listener requires a client certificate from the cluster CA and reads the peer's
identity from it (`peer_identities_of`); a server's channel verifies the leader against the CA and
expects the master name of its cluster (`tasks.tls.master_tls_name`) in the leader's
certificate. Files are read again when they change, so renewed certificates are picked up
without a restart: by the listener at the next handshake, by a server at its next session.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

from tasks.errors import ConfigError
from tasks.logs import get_logger
from tasks.tls import Identity, TlsSettings, files_stamp, master_tls_name, peer_identities_pem

log = get_logger(__name__)


class _Reloader:
    """The listener's certificate configuration, read again when a file changed (checked at
    each new connection, before its handshake: three stat calls)."""

    def __init__(self, tls: TlsSettings) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._stamp = files_stamp(tls)
        self.initial = self._config()

    def _config(self) -> Any:
        ca, cert, key = self._tls.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def __call__(self) -> Any:
        with self._lock:
            stamp = files_stamp(self._tls)
            if stamp == self._stamp:
                return None
            try:
                config = self._config()
            except ConfigError as exc:   # half-written files: keep the current ones
                log.warning("tls_reload_failed", error=exc.message)
                return None
            self._stamp = stamp
            log.info("tls_reloaded", cert_file=self._tls.cert_file)
            return config


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """The leader's listener: our certificate; every client must present one from the CA."""
    reloader = _Reloader(tls)
    return grpc.dynamic_ssl_server_credentials(reloader.initial, reloader,
                                               require_client_authentication=True)


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials:
    """A server's channel to the leader: verifies it against the CA, presents our certificate."""
    ca, cert, key = tls.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)


def channel_options(cluster: str) -> list[tuple[str, Any]]:
    """The leader must prove the master name of `cluster` in its certificate, whatever address
    the `leader` znode gave (the address is not an identity)."""
    return [("grpc.ssl_target_name_override", master_tls_name(cluster))]


def peer_identities_of(context: Any) -> list[Identity]:
    """The identities in the certificate the peer of a gRPC call presented; [] for none."""
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert") or []
    return peer_identities_pem(pems[0]) if pems else []
