"""The test session's throwaway PKI (tools/pki.py): one CA for the whole session, and a
certificate per (cluster, role, id) issued on first use, so every test's own cluster gets
masters and servers with real certificates.

`tests/conftest.py`'s session fixture `pki` creates it and deletes it at the end; plain helpers
(settings builders, simulated servers) reach it through `tls_block`.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from tools.pki import DevPki, tls_settings_for, write_dev_pki

_lock = threading.Lock()
_pki: DevPki | None = None


def session_pki() -> DevPki:
    """The session's PKI (created on first use)."""
    global _pki
    with _lock:
        if _pki is None:
            directory = Path(tempfile.mkdtemp(prefix="exportd-test-pki-"))
            _pki = write_dev_pki(directory, cluster="test", masters=(), servers=())
        return _pki


def tls_block(cluster: str, role: str, ident: str) -> dict[str, str]:
    """The `tls:` settings block of (role, ident) in `cluster`, from the session's CA."""
    pki = session_pki()
    with _lock:
        return tls_settings_for(pki, role, ident, cluster=cluster)


def remove_test_pki() -> None:
    global _pki
    with _lock:
        if _pki is not None:
            shutil.rmtree(_pki.directory, ignore_errors=True)
            _pki = None
