"""Start ZooKeeper, Kafka (KRaft, one combined node) and moto's S3 server on free loopback ports."""

from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tools.infra.errors import InfraError
from tools.infra.health import kafka_ready, s3_ready, zookeeper_ready, zookeeper_tls_context
from tools.infra.jars import classpath, require_java
from tools.infra.ports import free_port
from tools.infra.process import ManagedProcess

READY_TIMEOUT = 90.0


def _jvm(heap_mb: int, *, quick_start: bool = False) -> list[str]:
    # quick_start trades peak speed for start-up time: right for ZooKeeper, wrong for Kafka,
    # whose throughput the pipeline benchmarks measure against.
    flags = [require_java(), f"-Xms{heap_mb // 2}m", f"-Xmx{heap_mb}m", "-XX:+UseSerialGC",
             "-Djava.awt.headless=true"]
    return [*flags, "-XX:TieredStopAtLevel=1"] if quick_start else flags


@dataclass(frozen=True)
class ZooKeeperTls:
    """A TLS-only ZooKeeper: its certificate and key, and the CA that signed it and must sign
    every client's certificate (PEM files; the key PKCS#8, as tools/pki.py writes it)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    # ZooKeeper's ssl.clientAuth: "need" (a client certificate from the CA, or no connection),
    # "want" (checked when presented) or "none".
    client_auth: str = "need"


def _zookeeper_tls_config(workdir: Path, tls: ZooKeeperTls, port: int) -> list[str]:
    """zoo.cfg lines of a secure client port and no plaintext one. ZooKeeper (3.6+) reads PEM
    key and trust stores; its key store is one file, the key followed by the certificate."""
    keystore = workdir / "zookeeper-keystore.pem"
    fd = os.open(keystore, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(tls.key_file.read_bytes() + tls.cert_file.read_bytes())
    return [
        f"secureClientPort={port}",
        "secureClientPortAddress=127.0.0.1",
        "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
        f"ssl.keyStore.location={keystore}",
        "ssl.keyStore.type=PEM",
        f"ssl.trustStore.location={tls.ca_file}",
        "ssl.trustStore.type=PEM",
        f"ssl.clientAuth={tls.client_auth}",
        # Clients' certificates name who they are, not the address they connect from (the
        # client port's default already; explicit, as an operator's zoo.cfg should be).
        "ssl.clientHostnameVerification=false",
        # A verified client certificate also gives the session an x509 identity; exportd's
        # ACLs name digest identities only, so it opens nothing by itself.
        "authProvider.x509=org.apache.zookeeper.server.auth.X509AuthenticationProvider",
    ]


def start_zookeeper(workdir: Path, *, tied_to_parent: bool = True,
                    tls: ZooKeeperTls | None = None) -> tuple[ManagedProcess, str]:
    """ZooKeeper on a free loopback port: plaintext, or with `tls` a secure client port only
    (Netty; the returned endpoint is the secure port)."""
    port = free_port()
    data = workdir / "zookeeper"
    data.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "zoo.cfg"
    listen = (_zookeeper_tls_config(workdir, tls, port) if tls is not None
              else [f"clientPort={port}", "clientPortAddress=127.0.0.1"])
    # tickTime 500 ms lets clients ask for session timeouts down to 1 s (2 ticks): failover tests.
    cfg.write_text(
        "\n".join(
            [
                "tickTime=500",
                f"dataDir={data}",
                *listen,
                "maxClientCnxns=0",
                "admin.enableServer=false",
                "4lw.commands.whitelist=ruok,srvr,mntr",
                "",
            ]
        )
    )
    argv = [*_jvm(256, quick_start=True), "-cp", classpath("zookeeper"),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg)]
    proc = ManagedProcess("zookeeper", argv, workdir / "logs" / "zookeeper.log",
                          tied_to_parent=tied_to_parent)
    endpoint = f"127.0.0.1:{port}"
    # Over TLS the probe presents ZooKeeper's own certificate (it is from the CA too).
    context = (zookeeper_tls_context(tls.ca_file, tls.cert_file, tls.key_file)
               if tls is not None else None)
    proc.wait_until(lambda: zookeeper_ready(endpoint, context), READY_TIMEOUT, "answering ruok")
    return proc, endpoint


# The broker also listens with SASL/PLAIN for this one user (tests of `kafka.config`).
SASL_USER, SASL_PASSWORD = "exportd", "exportd-secret"


def start_kafka(workdir: Path, *, tied_to_parent: bool = True) -> tuple[ManagedProcess, str]:
    port, controller_port, sasl_port = free_port(), free_port(), free_port()
    logs = workdir / "kafka-data"
    logs.mkdir(parents=True, exist_ok=True)
    props = workdir / "kafka.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},"
                f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},"
                f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
                "SASL_PLAINTEXT:SASL_PLAINTEXT",
                "sasl.enabled.mechanisms=PLAIN",
                "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{SASL_USER}" password="{SASL_PASSWORD}" '
                f'user_{SASL_USER}="{SASL_PASSWORD}";',
                f"log.dirs={logs}",
                "num.partitions=1",
                "auto.create.topics.enable=true",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.segment.bytes=67108864",
                "",
            ]
        )
    )
    log4j = workdir / "kafka-log4j2.properties"
    log4j.write_text(
        "\n".join(
            [
                "appender.out.type=Console",
                "appender.out.name=OUT",
                "appender.out.layout.type=PatternLayout",
                "appender.out.layout.pattern=[%d] %p %m (%c)%n",
                "rootLogger.level=WARN",
                "rootLogger.appenderRef.out.ref=OUT",
                "logger.kafka.name=kafka",
                "logger.kafka.level=INFO",
                "logger.server.name=org.apache.kafka.server",
                "logger.server.level=INFO",
                "",
            ]
        )
    )
    jvm = [*_jvm(768), f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath("kafka")]
    # A Kafka cluster id is 16 random bytes in URL-safe base64; one starting with '-' would be
    # read as an option by kafka-storage's argument parser.
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
    fmt = ManagedProcess(
        "kafka-storage-format",
        [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
        workdir / "logs" / "kafka-format.log",
    )
    if fmt.proc.wait(timeout=READY_TIMEOUT) != 0:
        raise InfraError(f"formatting Kafka storage failed; log: {fmt.log_path}\n{fmt.log_tail()}")
    fmt.stop()
    proc = ManagedProcess("kafka", [*jvm, "kafka.Kafka", str(props)],
                          workdir / "logs" / "kafka.log", tied_to_parent=tied_to_parent)
    bootstrap = f"127.0.0.1:{port}"
    proc.wait_until(lambda: kafka_ready(bootstrap), READY_TIMEOUT, "serving metadata")
    return proc, bootstrap


def kafka_sasl_bootstrap(workdir: Path) -> str:
    """The SASL/PLAIN listener of the broker start_kafka started in `workdir`."""
    for line in (workdir / "kafka.properties").read_text().splitlines():
        if line.startswith("advertised.listeners="):
            for listener in line.split("=", 1)[1].split(","):
                if listener.startswith("SASL_PLAINTEXT://"):
                    return listener.removeprefix("SASL_PLAINTEXT://")
    raise InfraError(f"no SASL listener in {workdir / 'kafka.properties'}")


def start_s3(workdir: Path, *, port: int | None = None,
             tied_to_parent: bool = True) -> tuple[ManagedProcess, str]:
    port = port or free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = ManagedProcess("s3", argv, workdir / "logs" / "s3.log", tied_to_parent=tied_to_parent)
    endpoint = f"http://127.0.0.1:{port}"
    proc.wait_until(lambda: s3_ready(endpoint), READY_TIMEOUT, "answering HTTP")
    return proc, endpoint


@dataclass
class Infra:
    """The running local servers. Stop with `stop()` or use as a context manager."""

    workdir: Path
    zookeeper: str = ""
    kafka: str = ""
    s3: str = ""
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    keep_workdir: bool = False

    def endpoints(self) -> dict[str, str]:
        return {"zookeeper": self.zookeeper, "kafka": self.kafka, "s3": self.s3}

    def log_files(self) -> dict[str, str]:
        return {name: str(p.log_path) for name, p in self.processes.items()}

    def stop(self) -> None:
        # Kafka first: it is the slowest to stop and nothing else depends on it here.
        for name in ("kafka", "s3", "zookeeper"):
            proc = self.processes.pop(name, None)
            if proc is not None:
                proc.stop()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Infra:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.keep_workdir = True
            for name, path in self.log_files().items():
                print(f"[infra] {name} log: {path}", file=sys.stderr)
        self.stop()


def start_infra(
    components: tuple[str, ...] = ("zookeeper", "kafka", "s3"),
    *,
    workdir: Path | None = None,
    tied_to_parent: bool = True,
    zookeeper_tls: ZooKeeperTls | None = None,
) -> Infra:
    """Start the named servers; on any failure, stop what already started and raise.
    `zookeeper_tls`: ZooKeeper on a secure client port only (`Infra.zookeeper` is that port)."""
    infra = Infra(workdir=workdir or Path(tempfile.mkdtemp(prefix="exportd-infra-")))
    if tied_to_parent:  # detached servers (`python -m tools.infra up`) outlive this process
        atexit.register(infra.stop)
    starters: dict[str, Callable[..., tuple[ManagedProcess, str]]] = {
        "zookeeper": functools.partial(start_zookeeper, tls=zookeeper_tls),
        "kafka": start_kafka, "s3": start_s3}
    try:
        for name in components:
            proc, endpoint = starters[name](infra.workdir, tied_to_parent=tied_to_parent)
            infra.processes[name] = proc
            setattr(infra, name, endpoint)
    except BaseException:
        infra.keep_workdir = True
        with contextlib.suppress(Exception):
            infra.stop()
        raise
    return infra
