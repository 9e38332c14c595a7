"""A master's API refuses jobs that would send data or credentials where they do not belong, and
never gives the configured cluster's SASL password to a cluster a job names: a fake broker (a
recording relay in front of the real SASL listener) sees no password, whatever the job says."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from master.process import Master
from master.settings import KafkaSettings
from scheduler import plan
from tests.integration.fakebroker import RecordingRelay
from tests.integration.master.conftest import StartMaster, master_settings, until
from tests.pki import session_pki
from tools.infra import SASL_PASSWORD, SASL_USER

SASL = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
        "sasl.username": SASL_USER}


def _kafka(bootstrap: str, **extra: Any) -> KafkaSettings:
    return KafkaSettings.model_validate({
        "bootstrap_servers": bootstrap, "config": {**SASL, "sasl.password": SASL_PASSWORD},
        "partition_check_interval": 1.0, "metadata_timeout": 3.0, **extra})


SaslMaster = Callable[..., Awaitable[Master]]


@pytest.fixture
async def sasl_master(zookeeper: str, kafka_sasl: str, cluster: str
                      ) -> AsyncIterator[SaslMaster]:
    """Starts a leading master whose configured cluster is the SASL listener, with the
    password in kafka.config; `extra` goes into its kafka block."""
    started: list[Master] = []

    async def start(**extra: Any) -> Master:
        settings = master_settings(zookeeper, kafka_sasl, cluster, "m1")
        master = Master(settings.model_copy(update={"kafka": _kafka(kafka_sasl, **extra)}), plan)
        started.append(master)
        await master.start()
        await master.wait_leading(30)
        return master

    try:
        yield start
    finally:
        for master in reversed(started):
            await master.stop()


async def _post(master: Master, job: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    ca = ssl.create_default_context(cafile=str(session_pki().ca_file))   # when the API is TLS
    async with aiohttp.ClientSession() as session, \
            session.post(master.http_url + "/api/v1/jobs", json=job, ssl=ca) as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


def _job(job_id: str, topic: str, **spec: Any) -> dict[str, Any]:
    return {"id": job_id, "source": {"topic": topic},
            "sink": {"type": "file", "directory": "/tmp/exportd-test"}, **spec}


async def test_an_unlisted_cluster_is_a_400_and_never_sees_the_password(
        sasl_master: SaslMaster, kafka_sasl: str, topic: str) -> None:
    async with RecordingRelay(kafka_sasl) as relay:
        master = await sasl_master()
        status, body = await _post(master, _job("unlisted", topic, source={
            "topic": topic, "bootstrap_servers": relay.bootstrap}))
        assert status == 400, body
        assert body["details"]["field"] == "source.bootstrap_servers"
        assert "not a configured Kafka cluster" in body["message"]
        status, body = await _post(master, _job("unlisted-sink", topic, sink={
            "type": "kafka", "topic": "out", "bootstrap_servers": relay.bootstrap}))
        assert status == 400 and body["details"]["field"] == "sink.bootstrap_servers", body
        assert relay.connections == 0


async def test_an_allowed_unlisted_cluster_gets_no_credentials(
        sasl_master: SaslMaster, kafka_sasl: str, topic: str) -> None:
    async with RecordingRelay(kafka_sasl) as relay:
        master = await sasl_master(allow_unlisted_clusters=True)
        status, body = await _post(master, _job("allowed", topic, source={
            "topic": topic, "bootstrap_servers": relay.bootstrap}))
        # Plaintext to a SASL listener: the broker answers nothing useful, the count fails.
        assert status in (400, 503), body
        await until(lambda: relay.received(), 10, "the master's client reached the relay")
        assert SASL_PASSWORD.encode() not in relay.received()
        assert b"PLAIN" not in relay.received()   # no SASL handshake at all


async def test_a_listed_cluster_gets_its_credentials_through_the_same_relay(
        sasl_master: SaslMaster, kafka_sasl: str, topic: str) -> None:
    """The control: the relay does see a password when one is meant to go there."""
    async with RecordingRelay(kafka_sasl) as relay:
        clusters = {"relayed": {"bootstrap_servers": relay.bootstrap,
                                "config": {**SASL, "sasl.password": SASL_PASSWORD}}}
        master = await sasl_master(clusters=clusters)
        status, body = await _post(master, _job("listed", topic, source={
            "topic": topic, "bootstrap_servers": relay.bootstrap}))
        assert status == 201, body
        assert SASL_PASSWORD.encode() in relay.received()


async def test_destinations_outside_the_egress_rules_are_400s(
        start_master: StartMaster, topic: str) -> None:
    master = await start_master("m1")   # egress.file_root /tmp, nothing else allowed
    await master.wait_leading(30)
    refused: dict[str, list[dict[str, Any]]] = {
        "sink.directory": [{"type": "file", "directory": "/etc/cron.d"},
                           {"type": "file", "directory": "/tmp/../etc"},
                           {"type": "file", "directory": "../x"}],
        "sink.url": [{"type": "http", "url": "http://169.254.169.254/latest/meta-data/"},
                     {"type": "http", "url": "http://127.0.0.1:9/"},
                     {"type": "http", "url": "http://[fe80::1]/"}],
        "sink.headers.Authorization": [{"type": "http", "url": "https://example.com/in",
                                        "headers": {"Authorization": "Bearer abc123"}}],
    }
    for field, sinks in refused.items():
        for i, sink in enumerate(sinks):
            status, body = await _post(master, _job(f"refused-{i}", topic, sink=sink))
            assert status == 400, (sink, body)
            assert body["details"]["field"] == field, body
    status, body = await _post(master, _job("dead-letter", topic, dead_letter={
        "type": "file", "directory": "/var/log"}))
    assert status == 400 and body["details"]["field"] == "dead_letter.directory", body
    # A reference is the way: the spec the API returns holds it, never a secret.
    ok = {"type": "http", "url": "https://example.com/in",
          "headers": {"Authorization": "Bearer ${env:EXPORTD_SECRET_TOKEN}"}}
    status, body = await _post(master, _job("with-ref", topic, sink=ok))
    assert status == 201, body
    assert body["job"]["spec"]["sink"]["headers"] == ok["headers"]
    assert master.control.list_jobs() and "refused-0" not in {
        j.spec.id for j in master.control.list_jobs()}
