"""Session-scoped real servers for integration tests, and the test markers.

`zookeeper`, `kafka` (and `kafka_sasl`, its SASL/PLAIN listener) and `s3` start real servers from
tools.infra on free loopback ports, once per test session, and stop them at the end even when
tests fail. Their logs are kept and named when a server fails to start. Tests under tests/unit
are marked `unit`, under tests/integration `integration`, under tests/e2e `e2e`, under
tests/chaos `chaos`, by directory.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from kazoo.client import KazooClient

from tasks.cluster import Node, Role, ZkPaths
from tests.pki import remove_test_pki, session_pki
from tools.infra import Infra, kafka_sasl_bootstrap, start_infra
from tools.infra.registry import start_registry
from tools.infra.zkauth import session_credentials
from tools.pki import DevPki

# Hypothesis's per-example deadline (200 ms) measures the machine's load as much as the code: on
# 2 shared cores it failed property tests that pass. Time targets live in benchmarks.
hypothesis_settings.register_profile("exportd", deadline=None)
hypothesis_settings.load_profile("exportd")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for marker in ("unit", "integration", "e2e", "chaos"):
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))


def _start(name: str) -> Iterator[Infra]:
    infra = start_infra((name,))
    try:
        yield infra
    finally:
        infra.stop()


@pytest.fixture(scope="session")
def zookeeper() -> Iterator[str]:
    """host:port of a real ZooKeeper (tickTime 500 ms: session timeouts from 1 s)."""
    for infra in _start("zookeeper"):
        yield infra.zookeeper


@pytest.fixture(scope="session")
def kafka_infra() -> Iterator[Infra]:
    yield from _start("kafka")


@pytest.fixture(scope="session")
def kafka(kafka_infra: Infra) -> str:
    """bootstrap servers of a real single-node KRaft Kafka."""
    return kafka_infra.kafka


@pytest.fixture(scope="session")
def kafka_sasl(kafka_infra: Infra) -> str:
    """The same broker's SASL_PLAINTEXT listener (PLAIN; tools.infra.SASL_USER/SASL_PASSWORD)."""
    return kafka_sasl_bootstrap(kafka_infra.workdir)


@pytest.fixture(scope="session")
def s3() -> Iterator[str]:
    """endpoint URL of moto's S3 server (any access key and secret work)."""
    for infra in _start("s3"):
        yield infra.s3


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real schema registry's Confluent-compatible API (Apicurio Registry)."""
    proc, url = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="session", autouse=True)
def pki() -> Iterator[DevPki]:
    """The session's throwaway CA (tests/pki.py): masters and servers of every test's cluster
    get real certificates from it (`tests.pki.tls_block`); deleted at the end."""
    try:
        yield session_pki()
    finally:
        remove_test_pki()


@pytest.fixture
def cluster() -> str:
    """A cluster name of the test's own, so its ZooKeeper root is fresh."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def paths(cluster: str) -> ZkPaths:
    return ZkPaths.for_cluster(cluster)


@pytest.fixture
def zk(zookeeper: str) -> Iterator[KazooClient]:
    """A kazoo client on the real ZooKeeper, stopped after the test. It authenticates as the
    masters (tools/infra/zkauth.py: this session's credentials) and creates masters-only nodes
    unless a test passes the table's ACL (`session_credentials().acls.for_node(...)`)."""
    creds = session_credentials()
    client = KazooClient(hosts=zookeeper, timeout=5.0, auth_data=creds.auth_data(Role.MASTER),
                         default_acl=creds.acls.for_node(Node.ROOT))
    client.start(timeout=30)
    try:
        yield client
    finally:
        client.stop()
        client.close()
