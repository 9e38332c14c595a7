"""Install helm into `.cache/bin` from the Go module proxy; make sure the validator is importable.

`ensure_helm` is idempotent and safe to call from parallel test sessions: an exclusive `flock`
serialises builders, the binary is built into a temporary folder and renamed into place, and a
stamp file holding the module@version and build flags makes the next call return at once.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_BIN = REPO_ROOT / ".cache" / "bin"

HELM_VERSION = "v3.22.0"
HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
# `go install` leaves helm's own version string unset; give it the real one.
HELM_LDFLAGS = f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"
VALIDATOR_PACKAGE = "kubernetes-validate>=1.29"
BUILD_TIMEOUT_S = 1800.0

GO_HINT = (
    "go not found on PATH (nor /usr/local/go/bin/go): helm is built from its Go module "
    f"{HELM_MODULE}@{HELM_VERSION} through the Go module proxy, so install Go "
    "1.21+ (Debian/Ubuntu: apt-get install golang-go; go fetches the newer toolchain helm needs)"
)


class HelmToolsError(RuntimeError):
    """Installing or running helm or the validator failed; the message says how."""


class PrerequisiteMissing(HelmToolsError):
    """A tool needed to install helm (go) is missing: the message says what to install."""


def helm_path() -> Path:
    return CACHE_BIN / "helm"


def _stamp_path() -> Path:
    return CACHE_BIN / ".helm.stamp"


def _recipe() -> str:
    return f"{HELM_MODULE}@{HELM_VERSION} ldflags={HELM_LDFLAGS}"


def find_go() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    fallback = Path("/usr/local/go/bin/go")
    return str(fallback) if fallback.is_file() and os.access(fallback, os.X_OK) else None


def _is_current() -> bool:
    stamp = _stamp_path()
    binary = helm_path()
    return (
        binary.is_file()
        and os.access(binary, os.X_OK)
        and stamp.is_file()
        and stamp.read_text().strip() == _recipe()
    )


def ensure_helm(log: Callable[[str], None] | None = None) -> Path:
    """Return the path of helm, building it first when it is missing or of another version.

    Raises PrerequisiteMissing when go is absent, HelmToolsError when the build fails.
    """
    if _is_current():
        return helm_path()
    CACHE_BIN.mkdir(parents=True, exist_ok=True)
    with open(CACHE_BIN / ".helmtools.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_current():  # another process built it while we waited
            return helm_path()
        return _build_helm(log or (lambda _msg: None))


def _build_helm(log: Callable[[str], None]) -> Path:
    go = find_go()
    if go is None:
        raise PrerequisiteMissing(GO_HINT)
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"})
    # helm's go.mod may ask for a newer Go than the installed one: let go fetch that toolchain
    # (a module on the Go module proxy) even where the distribution's go.env says `local`.
    env.setdefault("GOTOOLCHAIN", "auto")
    started = time.monotonic()
    log(f"building helm {HELM_VERSION} with {go} (first time only; a few minutes on 2 cores)")
    with tempfile.TemporaryDirectory(prefix=".helm-build-", dir=CACHE_BIN) as tmp:
        env["GOBIN"] = tmp
        cmd = [go, "install", "-trimpath", f"-ldflags={HELM_LDFLAGS}",
               f"{HELM_MODULE}@{HELM_VERSION}"]
        try:
            result = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                    timeout=BUILD_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise HelmToolsError(
                f"`{' '.join(cmd)}` did not finish in {BUILD_TIMEOUT_S:.0f}s"
            ) from exc
        built = Path(tmp) / "helm"
        if result.returncode != 0 or not built.is_file():
            tail = (result.stdout + result.stderr).strip().splitlines()[-20:]
            raise HelmToolsError(f"`{' '.join(cmd)}` failed:\n" + "\n".join(tail))
        os.replace(built, helm_path())
    _stamp_path().write_text(_recipe() + "\n")
    log(f"helm {HELM_VERSION} built in {time.monotonic() - started:.0f}s: {helm_path()}")
    return helm_path()


def ensure_validator(install: bool = True) -> str:
    """Return the version of `kubernetes-validate`, pip-installing it into this virtualenv first
    when it is missing (it is in the `dev` extra, so `pip install -e '.[dev]'` brings it too)."""
    try:
        importlib.import_module("kubernetes_validate")
    except ImportError:
        in_venv = sys.prefix != sys.base_prefix
        if not (install and in_venv):
            raise HelmToolsError(
                "kubernetes-validate is not installed: run "
                f"`{sys.executable} -m pip install '{VALIDATOR_PACKAGE}'` "
                "(or `pip install -e '.[dev]'`)"
            ) from None
        _pip_install(VALIDATOR_PACKAGE)
        importlib.invalidate_caches()
    version = importlib.import_module("kubernetes_validate.version").__version__
    return str(version)


def _pip_install(requirement: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", requirement]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise HelmToolsError(f"`{' '.join(cmd)}` failed:\n{result.stderr.strip()[-2000:]}")
