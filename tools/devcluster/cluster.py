"""A whole exportd cluster on one machine: infra, masters and servers as real processes.

`make dev` runs it interactively; the e2e tests drive the same class. Masters and servers are the
real console entry points (`exportd-master`, `exportd-server`) started as child processes with a
YAML config file each, their logs kept under the cluster's work dir. Everything started here is
stopped by `stop()` (also at interpreter exit, and by the kernel through PR_SET_PDEATHSIG if the
owner dies).

Security is on as in production: the masters serve their API over https with certificates from
the cluster's throwaway CA (`pki`) and require a token (`api_token`, named `dev`). `ctl_env()`
is what exportctl needs (EXPORTD_MASTERS, EXPORTD_TOKEN, EXPORTD_CA); `http_json` authenticates
to any master a LocalCluster of this process started, by the URL's origin, the same way.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.infra import Infra, start_infra
from tools.infra.ports import free_port
from tools.infra.process import ManagedProcess
from tools.infra.state import STATE_FILE, InfraState
from tools.infra.zkauth import ZkCredentials
from tools.pki import DevPki, tls_settings_for, write_dev_pki

BIN = Path(sys.executable).parent
# The Iceberg catalog every local cluster offers its jobs (`sink.catalog: dev`): pyiceberg's SQL
# catalog on a SQLite file in the work directory, its warehouse in this moto bucket.
ICEBERG_CATALOG = "dev"
ICEBERG_BUCKET = "exportd-warehouse"


@dataclass
class ServerSpec:
    id: str
    group: str = "default"
    cpu_cores: float = 2.0
    net_bytes_per_s: float = 125_000_000.0


@dataclass
class MasterProc:
    id: str
    http: str
    grpc: str
    proc: ManagedProcess


@dataclass
class ServerProc:
    spec: ServerSpec
    http: str
    proc: ManagedProcess


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll `check` until it holds; raise TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    raise TimeoutError(f"not {what} within {timeout:.0f}s")


@dataclass(frozen=True)
class ApiCredentials:
    """What a client of a LocalCluster's masters needs: the admin token and the CA file."""

    token: str
    ca_file: Path


# Masters started by LocalClusters of this process, by origin ("https://127.0.0.1:PORT").
_MASTER_CREDENTIALS: dict[str, ApiCredentials] = {}


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _tls_context(url: str) -> ssl.SSLContext | None:
    known = _MASTER_CREDENTIALS.get(_origin(url))
    return ssl.create_default_context(cafile=str(known.ca_file)) if known else None


def http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 5.0) -> Any:
    """A JSON call to a master's API; to a master a LocalCluster started, verified against its
    CA and with its admin token."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    known = _MASTER_CREDENTIALS.get(_origin(url))
    if known is not None:
        headers["Authorization"] = f"Bearer {known.token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout, context=_tls_context(url)) as resp:
        return json.loads(resp.read() or b"null")


@dataclass
class LocalCluster:
    """Infra + masters + servers. `start()` brings all up; `stop()` takes all down."""

    masters: int = 2
    servers: list[ServerSpec] = field(default_factory=lambda: [
        ServerSpec("server-1", "default"), ServerSpec("server-2", "default"),
        ServerSpec("server-3", "heavy"),
    ])
    cluster: str = "dev"
    zk_session_timeout: str = "3s"
    lease_ttl: str = "10s"
    # Extra master settings (e.g. scheduler knobs), merged over the defaults below.
    master_overrides: dict[str, Any] = field(default_factory=dict)
    # ZooKeeper digest credentials of the masters and the servers (random per cluster).
    zk_credentials: ZkCredentials = field(default_factory=ZkCredentials.generate)
    # Extra server settings (e.g. lease and session timing), merged key by key over the
    # defaults below (nested blocks merge, so an override of `lease.margin` keeps the rest).
    server_overrides: dict[str, Any] = field(default_factory=dict)
    # The S3 endpoint servers use, given moto's (e.g. a test's proxy in front of moto, started
    # by this call once moto is up); None: moto's own.
    server_s3_endpoint: Callable[[str], str] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="exportd-dev-")))
    keep_workdir: bool = False
    # Record the infra where `python -m tools.infra status|down` look (make dev; not tests).
    record_infra: bool = False
    infra: Infra | None = None
    master_procs: list[MasterProc] = field(default_factory=list)
    server_procs: list[ServerProc] = field(default_factory=list)
    _servers_s3: str | None = None
    # The cluster's throwaway CA and certificates (tools/pki.py), in workdir/pki: mTLS between
    # masters and servers, and what a client needs to trust the masters (`pki.ca_file`).
    pki: DevPki | None = None
    # The admin token of the masters' API (named `dev`): exportctl's EXPORTD_TOKEN.
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        atexit.register(self.stop)
        try:
            self.infra = start_infra(workdir=self.workdir / "infra")
            if self.record_infra:  # `python -m tools.infra status` then shows these servers
                InfraState.of(self.infra).save()
            if self.server_s3_endpoint is not None:
                self._servers_s3 = self.server_s3_endpoint(self.endpoints["s3"])
            self._make_warehouse()
            self.pki = write_dev_pki(self.workdir / "pki", cluster=self.cluster,
                                     masters=[f"master-{i + 1}" for i in range(self.masters)],
                                     servers=[spec.id for spec in self.servers])
            for i in range(self.masters):
                self.start_master(f"master-{i + 1}")
            wait_for(lambda: self.leader_url() is not None, 60, "a master leading")
            for spec in self.servers:
                self.start_server(spec)
            # Jobs submitted before every server reports would all land on the first ones.
            wait_for(lambda: self.alive_servers() >= {s.id for s in self.servers}, 60,
                     "every server reporting to the leader")
        except BaseException:
            self.keep_workdir = True
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.server_procs:
            server.proc.stop(grace=30)
        for master in self.master_procs:
            master.proc.stop(grace=10)
        self.server_procs.clear()
        self.master_procs.clear()
        if self.infra is not None:
            if self.record_infra:
                STATE_FILE.unlink(missing_ok=True)
            self.infra.keep_workdir = True  # it lives inside ours
            self.infra.stop()
            self.infra = None
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.keep_workdir = True
            print(f"[devcluster] logs kept in {self.workdir}", file=sys.stderr)
        self.stop()

    # -- processes -----------------------------------------------------------------------------

    @property
    def endpoints(self) -> dict[str, str]:
        assert self.infra is not None
        return self.infra.endpoints()

    def _zookeeper(self, credentials: dict[str, str]) -> dict[str, Any]:
        return {"hosts": self.endpoints["zookeeper"], "cluster": self.cluster,
                "session_timeout": self.zk_session_timeout, **credentials}

    def _write_config(self, name: str, config: dict[str, Any]) -> Path:
        path = self.workdir / "config" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")}
        # moto accepts any credentials; boto3 wants some.
        env.setdefault("AWS_ACCESS_KEY_ID", "dev")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "dev")
        return env

    def _egress(self) -> dict[str, Any]:
        """Where jobs may send data (tasks/egress.py), the same for masters and servers: HTTP
        receivers on this host, file sinks below the work directory's files/."""
        return {"http_allow_networks": ["127.0.0.0/8", "::1/128"],
                "file_root": str(self.workdir / "files")}

    def _make_warehouse(self) -> None:
        import boto3
        client = boto3.client("s3", endpoint_url=self.endpoints["s3"], region_name="us-east-1",
                              aws_access_key_id="dev", aws_secret_access_key="dev")
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=ICEBERG_BUCKET)

    @property
    def iceberg_catalog_db(self) -> Path:
        return self.workdir / "iceberg" / "catalog.db"

    def iceberg(self, s3_endpoint: str | None = None) -> dict[str, Any]:
        """The `iceberg:` settings block of masters and servers (tasks/iceberg/catalogs.py)."""
        self.iceberg_catalog_db.parent.mkdir(parents=True, exist_ok=True)
        return {"catalogs": {ICEBERG_CATALOG: {
            "type": "sql", "uri": f"sqlite:///{self.iceberg_catalog_db}",
            "warehouse": f"s3://{ICEBERG_BUCKET}/iceberg",
            "s3": {"endpoint_url": s3_endpoint or self.endpoints["s3"],
                   "access_key_id": "dev", "secret_access_key": "dev"}}}}

    def tls(self, role: str, ident: str) -> dict[str, str]:
        """The `tls:` settings block of (role, ident), issued from the cluster's CA."""
        assert self.pki is not None, "start() writes the PKI"
        return tls_settings_for(self.pki, role, ident)

    def start_master(self, master_id: str) -> MasterProc:
        http_port, grpc_port = free_port(), free_port()
        config = {
            "id": master_id,
            "zookeeper": self._zookeeper(self.zk_credentials.master()),
            "http": {"host": "127.0.0.1", "port": http_port},
            "grpc": {"host": "127.0.0.1", "port": grpc_port},
            "kafka": {"bootstrap_servers": self.endpoints["kafka"]},
            "egress": self._egress(),
            "iceberg": self.iceberg(),
            "tls": self.tls("master", master_id),
            "api": {"admin_tokens": {"dev": self.api_token}},
            "lease_ttl": self.lease_ttl,
            "log_format": "json",
        }
        config = merged(config, self.master_overrides)
        path = self._write_config(master_id, config)
        proc = ManagedProcess(master_id, [str(BIN / "exportd-master"), "--config", str(path)],
                              self.workdir / "logs" / f"{master_id}.log", env=self._env())
        master = MasterProc(master_id, f"https://127.0.0.1:{http_port}",
                            f"127.0.0.1:{grpc_port}", proc)
        assert self.pki is not None
        _MASTER_CREDENTIALS[master.http] = ApiCredentials(self.api_token, self.pki.ca_file)
        proc.wait_until(lambda: _ok(master.http + "/healthz"), 60, "answering /healthz")
        self.master_procs.append(master)
        return master

    def start_server(self, spec: ServerSpec) -> ServerProc:
        port = free_port()
        config = {
            "id": spec.id,
            "group": spec.group,
            "zookeeper": self._zookeeper(self.zk_credentials.server()),
            "http": {"host": "127.0.0.1", "port": port},
            "kafka": {"bootstrap_servers": self.endpoints["kafka"]},
            "egress": self._egress(),
            "s3": {"endpoint_url": self._servers_s3 or self.endpoints["s3"],
                   "access_key_id": "dev",
                   "secret_access_key": "dev"},
            "iceberg": self.iceberg(self._servers_s3),
            "tls": self.tls("server", spec.id),
            "work_dir": str(self.workdir / "servers" / spec.id),
            # All servers share this host's network counters: count only the tasks' own bytes.
            "capacity": {"cpu_cores": spec.cpu_cores, "net_bytes_per_s": spec.net_bytes_per_s,
                         "worker_processes": 1, "shared_host": True},
            "log_format": "json",
        }
        config = merged(config, self.server_overrides)
        path = self._write_config(spec.id, config)
        proc = ManagedProcess(spec.id, [str(BIN / "exportd-server"), "--config", str(path)],
                              self.workdir / "logs" / f"{spec.id}.log", env=self._env())
        server = ServerProc(spec, f"http://127.0.0.1:{port}", proc)
        proc.wait_until(lambda: _ok(server.http + "/healthz"), 60, "answering /healthz")
        self.server_procs.append(server)
        return server

    # -- queries -------------------------------------------------------------------------------

    def master_urls(self) -> list[str]:
        return [m.http for m in self.master_procs if m.proc.alive()]

    def ctl_env(self) -> dict[str, str]:
        """exportctl's environment for this cluster: masters, admin token, CA."""
        assert self.pki is not None, "start() writes the PKI"
        return {"EXPORTD_MASTERS": ",".join(self.master_urls()),
                "EXPORTD_TOKEN": self.api_token, "EXPORTD_CA": str(self.pki.ca_file)}

    def leader_url(self) -> str | None:
        for url in self.master_urls():
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                leader = http_json(url + "/api/v1/leader")
                if leader.get("http"):
                    return str(leader["http"])
        return None

    def alive_servers(self) -> set[str]:
        url = self.leader_url()
        if url is None:
            return set()
        return {s["id"] for s in http_json(url + "/api/v1/servers") if s.get("alive")}

    def processes(self) -> list[ManagedProcess]:
        """Every master and server process this cluster started (and has not stopped)."""
        return [m.proc for m in self.master_procs] + [s.proc for s in self.server_procs]

    def leader_master(self) -> MasterProc | None:
        url = self.leader_url()
        return next((m for m in self.master_procs if m.http == url), None)


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied: nested dicts merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in overrides.items():
        old = out.get(key)
        out[key] = (merged(old, value) if isinstance(old, dict) and isinstance(value, dict)
                    else value)
    return out


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=_tls_context(url)) as resp:
        return int(resp.status) == 200


class DeathWatch:
    """Notices processes that died on their own (`make dev`): each is told once, with its exit
    code, its log file and the log's last lines."""

    def __init__(self, tail_lines: int = 8) -> None:
        self.tail_lines = tail_lines
        self._told: set[int] = set()

    def check(self, procs: list[ManagedProcess]) -> list[str]:
        out: list[str] = []
        for proc in procs:
            if proc.pid in self._told or proc.alive():
                continue
            self._told.add(proc.pid)
            tail = proc.log_tail(self.tail_lines)
            out.append(f"!! {proc.name} died (exit code {proc.proc.returncode}); its log: "
                       f"{proc.log_path}" + ("\n" + _indent(tail) if tail else ""))
        return out


def _indent(text: str) -> str:
    return "\n".join("   | " + line for line in text.splitlines())
