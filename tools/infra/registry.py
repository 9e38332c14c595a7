"""Start a real schema registry on a free loopback port: Apicurio Registry, which serves the
Confluent-compatible REST API (`/apis/ccompat/v7`) that exportd's `parse.registry` and
confluent-kafka's serializers speak.

Apicurio's application is published on Maven Central as a zip (classifier `all`: the Quarkus
runner jar and its lib/); `mvn dependency:copy` fetches it into `.cache/jars/apicurio/` once and
it is unpacked beside it. It runs on Java 17 with its in-memory H2 storage (nothing on disk, a
fresh registry per start) and is ready in ~4 s.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tools.infra.errors import InfraError
from tools.infra.jars import CACHE_DIR, require_java, require_tool
from tools.infra.ports import free_port
from tools.infra.process import ManagedProcess

APICURIO_VERSION = "3.0.9"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:zip:all"
READY_TIMEOUT = 120.0
# The Confluent-compatible API's base path: what a job's `parse.registry.url` names.
CCOMPAT_PATH = "/apis/ccompat/v7"


def apicurio_dir() -> Path:
    return CACHE_DIR / "jars" / "apicurio"


def ensure_apicurio() -> Path:
    """The unpacked application (its runner jar), fetched and unpacked on first use; a file
    lock serialises concurrent callers."""
    target = apicurio_dir()
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runner = target / f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
        if runner.is_file() and (target / "lib").is_dir():
            return runner
        mvn = require_tool("mvn", "install Maven 3.6+ (Debian/Ubuntu: apt-get install maven)")
        require_java()
        cmd = [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={ARTIFACT}",
               f"-DoutputDirectory={target}"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                                cwd=target)
        archive = target / f"apicurio-registry-app-{APICURIO_VERSION}-all.zip"
        if result.returncode != 0 or not archive.is_file():
            tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            raise InfraError(f"fetching Apicurio Registry failed ({' '.join(cmd)}):\n"
                             + "\n".join(tail))
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(target)
        archive.unlink()
        if not runner.is_file():
            raise InfraError(f"{archive.name} held no {runner.name}")
        return runner


def registry_ready(url: str) -> bool:
    """The Confluent-compatible API answers (a list of subjects)."""
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=2) as response:
            return isinstance(json.loads(response.read()), list)
    except (OSError, ValueError, urllib.error.URLError):
        return False


def start_registry(workdir: Path, *, tied_to_parent: bool = True) -> tuple[ManagedProcess, str]:
    """Apicurio on a free loopback port; returns the process and the Confluent-compatible base
    URL (`http://127.0.0.1:<port>/apis/ccompat/v7`)."""
    runner = ensure_apicurio()
    port = free_port()
    env = dict(os.environ, QUARKUS_HTTP_HOST="127.0.0.1", QUARKUS_HTTP_PORT=str(port),
               QUARKUS_PROFILE="prod")
    argv = [require_java(), "-Xms64m", "-Xmx384m", "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1", "-jar", str(runner)]
    proc = ManagedProcess("registry", argv, workdir / "logs" / "registry.log", env=env,
                          cwd=runner.parent, tied_to_parent=tied_to_parent)
    url = f"http://127.0.0.1:{port}{CCOMPAT_PATH}"
    proc.wait_until(lambda: registry_ready(url), READY_TIMEOUT, "answering its REST API")
    return proc, url
