"""The leader's gRPC listener picks up renewed certificate files at the next handshake, without a
restart (docs/SECURITY.md, "Rotation"): a client that trusts only a new CA is refused until the
listener's files are replaced with a certificate of that CA, then connects."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import grpc.aio

from tasks.grpc_tls import channel_credentials, channel_options, server_credentials
from tasks.tls import TlsSettings
from tools.pki import tls_settings_for, write_dev_pki


async def _connects(target: str, tls: TlsSettings, cluster: str) -> bool:
    async with grpc.aio.secure_channel(target, channel_credentials(tls),
                                       options=channel_options(cluster)) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), 3.0)
        except TimeoutError:
            return False
        return True


async def test_renewed_certificate_files_are_used_without_a_restart(tmp_path: Path) -> None:
    old = write_dev_pki(tmp_path / "old", cluster="c1", masters=["m1"], servers=["s1"])
    new = write_dev_pki(tmp_path / "new", cluster="c1", masters=["m1"], servers=["s1"])
    live = tmp_path / "live"
    live.mkdir()
    for name in ("ca.pem", "master-m1.pem", "master-m1.key"):
        shutil.copy(old.directory / name, live / name)
    listener = TlsSettings(ca_file=str(live / "ca.pem"), cert_file=str(live / "master-m1.pem"),
                           key_file=str(live / "master-m1.key"))
    server = grpc.aio.server()
    port = server.add_secure_port("127.0.0.1:0", server_credentials(listener))
    await server.start()
    target = f"127.0.0.1:{port}"
    old_client = TlsSettings.model_validate(tls_settings_for(old, "server", "s1"))
    new_client = TlsSettings.model_validate(tls_settings_for(new, "server", "s1"))
    try:
        assert await _connects(target, old_client, "c1")
        assert not await _connects(target, new_client, "c1")
        # The operator (or cert-manager) replaces the files in place: both CAs trusted, the new
        # certificate served.
        (live / "ca.pem").write_bytes(old.ca_file.read_bytes() + new.ca_file.read_bytes())
        shutil.copy(new.directory / "master-m1.key", live / "master-m1.key")
        shutil.copy(new.directory / "master-m1.pem", live / "master-m1.pem")
        assert await _connects(target, new_client, "c1")
    finally:
        await server.stop(grace=0)
