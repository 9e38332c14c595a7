"""The API listener serves renewed certificate files from the next handshake on, without a
restart, and keeps the old pair while the new files are half-written."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

from cryptography import x509

from master.api.app import create_app
from master.api.settings import ApiSettings
from master.api.tls import api_server_context
from tasks.tls import TlsSettings
from tests.unit.api.fake_control import FakeControl, serve
from tools.pki import add_cert, write_dev_pki

SETTINGS = ApiSettings.model_validate({"admin_tokens": ["a-token"]})


async def _served_serial(url: str, ca_file: Path) -> int:
    host, port = url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(ca_file))
    _, writer = await asyncio.open_connection(host, int(port), ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return int(x509.load_der_x509_certificate(der).serial_number)
    finally:
        writer.close()


async def test_renewed_certificate_files_are_served_without_a_restart(tmp_path: Path) -> None:
    pki = write_dev_pki(tmp_path / "pki", cluster="c1", masters=["m1"], servers=[])
    live = tmp_path / "live"
    live.mkdir()
    first = pki.certs[("master", "m1")]
    shutil.copy(first.cert_file, live / "tls.crt")
    shutil.copy(first.key_file, live / "tls.key")
    tls = TlsSettings(ca_file=str(pki.ca_file), cert_file=str(live / "tls.crt"),
                      key_file=str(live / "tls.key"))
    async with serve(create_app(FakeControl(), SETTINGS), api_server_context(tls)) as url:
        old = await _served_serial(url, pki.ca_file)
        renewed = add_cert(pki, "master", "m1-renewed")
        # Half-written: the new certificate with the old key does not load; the old pair stays.
        shutil.copy(renewed.cert_file, live / "tls.crt")
        assert await _served_serial(url, pki.ca_file) == old
        shutil.copy(renewed.key_file, live / "tls.key")
        new = await _served_serial(url, pki.ca_file)
        assert new != old
        assert new == x509.load_pem_x509_certificate(
            renewed.cert_file.read_bytes()).serial_number
