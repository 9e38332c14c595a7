"""mTLS on the heartbeat session, the leader's side, with real certificates and real gRPC: a
stream speaks for server X only with a certificate naming server X of this cluster. Everyone
else gets nothing (no ACK, no Reregister, no directive), and the real X's stream is untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from master import metrics
from tasks.grpc_tls import channel_options
from tasks.runner import task_id
from tasks.tls import TlsSettings
from tests.integration.master.conftest import PARTITIONS, StartMaster, StartSim, job_spec, until
from tests.pki import session_pki, tls_block
from tools.bench.master_sim import SimServer
from tools.pki import tls_settings_for, write_dev_pki


def _tls(block: dict[str, str]) -> TlsSettings:
    return TlsSettings.model_validate(block)


def _refused() -> float:
    return float(metrics.SESSIONS_REFUSED._value.get())


async def test_only_a_certificate_naming_the_server_opens_its_session(
        start_master: StartMaster, start_sim: StartSim, topic: str, cluster: str,
        tmp_path: Path) -> None:
    master = await start_master("m1")
    await master.wait_leading(30)
    real = await start_sim("srv-3")
    await until(lambda: real.acks, 30, "the real srv-3 acknowledged")
    await master.control.create_job(job_spec("orders", topic))
    expected = {task_id("orders", topic, p) for p in range(PARTITIONS)}
    await until(lambda: set(real.desired) == expected, 30, "srv-3 directed every task")
    real_stream = master.sessions._conns["srv-3"]
    refused_before = _refused()

    pki = session_pki()
    stranger = write_dev_pki(tmp_path / "stranger", cluster=cluster, masters=(),
                             servers=["srv-3"])
    attackers: dict[str, SimServer] = {}

    async def attacker(name: str, **kw: Any) -> None:
        attackers[name] = await start_sim("srv-3", **kw)

    leader = master.grpc_address
    # No certificate at all: plaintext, and TLS without a client certificate.
    await attacker("plaintext", channel=grpc.aio.insecure_channel(leader))
    await attacker("tls, no client certificate", channel=grpc.aio.secure_channel(
        leader, grpc.ssl_channel_credentials(root_certificates=pki.ca_file.read_bytes()),
        options=channel_options(cluster)))
    # Valid certificates from the cluster CA that do not name server srv-3 of this cluster.
    await attacker("server-2's certificate", tls=_tls(tls_block(cluster, "server", "srv-2")))
    await attacker("srv-3 of another cluster",
                   tls=_tls(tls_settings_for(pki, "server", "srv-3", cluster=f"{cluster}x")))
    await attacker("a master's certificate", tls=_tls(tls_block(cluster, "master", "srv-3")))
    # A certificate naming srv-3 of this cluster, from another CA (trusting the real one).
    await attacker("another CA", tls=_tls({
        **tls_settings_for(stranger, "server", "srv-3"), "ca_file": str(pki.ca_file)}))

    await until(lambda: all(sim.refused >= 2 for sim in attackers.values()), 30,
                "every impostor refused at least twice")
    acks_before = real.acks
    await until(lambda: real.acks >= acks_before + 3, 30, "the real srv-3 still acknowledged")
    for name, sim in attackers.items():
        assert (sim.acks, sim.directives, sim.reregisters) == (0, [], 0), name
    # The three with a valid certificate reached the stream and were refused there; the others
    # failed the handshake.
    assert _refused() - refused_before >= 3 * 2
    assert master.sessions._conns["srv-3"] is real_stream
    assert real.refused == 0 and set(real.desired) == expected


async def test_a_stream_cannot_change_the_server_it_speaks_for(
        start_master: StartMaster, start_sim: StartSim, topic: str) -> None:
    master = await start_master("m1")
    await master.wait_leading(30)
    real = await start_sim("srv-3")
    two = await start_sim("srv-2")
    await until(lambda: real.acks and two.acks, 30, "both acknowledged")
    real_stream = master.sessions._conns["srv-3"]
    two.id = "srv-3"          # srv-2's stream now reports as srv-3
    two.report_now()
    await until(lambda: two.refused >= 2, 30, "srv-2's stream refused")
    acks = two.acks
    acks_before = real.acks
    await until(lambda: real.acks >= acks_before + 3, 30, "the real srv-3 still acknowledged")
    assert two.acks == acks
    assert master.sessions._conns["srv-3"] is real_stream and real.refused == 0
