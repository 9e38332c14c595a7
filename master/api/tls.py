"""The API listener's TLS context: renewed certificates are served without a restart.

`api_server_context(tls)` is the context a master's API listens with (its own certificate, no
client certificate asked: callers prove themselves with tokens). At each handshake its
`sni_callback` (called for every ClientHello, with or without a server name) compares the
certificate and key files' (mtime, size) with the pair in use, two stat calls, and when they
changed hands the connection a context built from the new files. Files that do not load (written
half-way) leave the previous pair in use and log `tls_reload_failed` until they read cleanly;
the same rule as the gRPC listener's (tasks/grpc_tls.py).
"""

from __future__ import annotations

import ssl
import threading

from tasks.errors import ConfigError
from tasks.logs import get_logger
from tasks.tls import TlsSettings, files_stamp, server_ssl_context

log = get_logger(__name__)


class _Renewing:
    def __init__(self, tls: TlsSettings) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._stamp = files_stamp(tls)
        self._current = server_ssl_context(tls, client_certs=False)

    def pick(self, conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None,
             _context: ssl.SSLContext) -> None:
        with self._lock:
            stamp = files_stamp(self._tls)
            if stamp != self._stamp:
                try:
                    self._current = server_ssl_context(self._tls, client_certs=False)
                    self._stamp = stamp
                    log.info("tls_reloaded", listener="api", cert_file=self._tls.cert_file)
                except (ConfigError, ssl.SSLError, OSError) as exc:
                    log.warning("tls_reload_failed", listener="api",
                                error=getattr(exc, "message", None) or str(exc))
            conn.context = self._current


def api_server_context(tls: TlsSettings) -> ssl.SSLContext:
    """The API listener's context (ConfigError when the files are missing or unreadable)."""
    renewing = _Renewing(tls)
    context = server_ssl_context(tls, client_certs=False)
    context.sni_callback = renewing.pick
    return context
