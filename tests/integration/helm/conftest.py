"""Fixtures of the Helm chart tests: helm and the schema validator, installed once per machine.

helm is built from its Go module into `.cache/bin` by tools.helmtools (minutes the first time,
free afterwards); the tests are skipped, with the reason, only when go is not installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.helmtools import (
    HelmToolsError,
    PrerequisiteMissing,
    ensure_helm,
    ensure_validator,
)
from tools.helmtools.validate import CHART_DIR


@pytest.fixture(scope="session")
def helm() -> Path:
    """Path of a helm binary (built on first use; the first test's timeout allows for it)."""
    try:
        path = ensure_helm(lambda msg: print(f"\n[helmtools] {msg}", flush=True))
    except PrerequisiteMissing as exc:
        pytest.skip(f"helm cannot be installed here: {exc}")
    except HelmToolsError as exc:
        pytest.fail(f"installing helm failed: {exc}")
    ensure_validator()
    return path


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART_DIR


@pytest.fixture(scope="session")
def three_groups(chart_dir: Path) -> Path:
    return chart_dir / "values-three-groups.yaml"
