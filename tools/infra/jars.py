"""Fetch the Apache ZooKeeper and Kafka jars from Maven Central into a git-ignored cache.

Each component has a tiny pom under tools/infra/maven/<name>/; `mvn dependency:copy-dependencies`
copies the jar and its runtime dependencies into `.cache/jars/<name>/`. A stamp file holding the
pom's hash makes later runs free, and a changed pom re-fetches.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
from pathlib import Path

from tools.infra.errors import InfraError, PrerequisiteMissing

REPO_ROOT = Path(__file__).resolve().parents[2]
MAVEN_DIR = Path(__file__).resolve().parent / "maven"
CACHE_DIR = REPO_ROOT / ".cache"
COMPONENTS = ("zookeeper", "kafka")


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PrerequisiteMissing(f"`{name}` not found on PATH: {hint}")
    return path


def require_java() -> str:
    return require_tool(
        "java", "install Java 17+ (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"
    )


def jar_dir(component: str) -> Path:
    return CACHE_DIR / "jars" / component


def classpath(component: str) -> str:
    return str(ensure_jars(component) / "*")


def ensure_jars(component: str) -> Path:
    """Return the folder holding `component`'s jars, fetching them first when needed.

    A file lock serialises concurrent callers (parallel test sessions) so none sees a half-copied
    folder.
    """
    lock_path = CACHE_DIR / "jars" / f".{component}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_jars_locked(component)


def _ensure_jars_locked(component: str) -> Path:
    pom = MAVEN_DIR / component / "pom.xml"
    if not pom.is_file():
        raise InfraError(f"no pom for {component!r} at {pom}")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    target = jar_dir(component)
    stamp = target / ".pom-sha256"
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return target
    mvn = require_tool("mvn", "install Maven 3.6+ (Debian/Ubuntu: apt-get install maven)")
    require_java()
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    cmd = [
        mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        f"-DoutputDirectory={target}", "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise InfraError(f"fetching {component} jars failed ({' '.join(cmd)}):\n" + "\n".join(tail))
    stamp.write_text(digest + "\n")
    return target


def main() -> None:
    for component in COMPONENTS:
        print(f"{component}: {ensure_jars(component)}")


if __name__ == "__main__":
    main()
