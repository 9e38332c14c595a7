"""tools.helmtools: idempotent and cached once installed; one clear message when go is missing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tools.helmtools import install

# `helm` builds helm when it is not cached yet (alone, this module may be the first to ask).
pytestmark = pytest.mark.timeout(1800)


def test_ensure_is_cached(helm: Path) -> None:
    started = time.monotonic()
    assert install.ensure_helm() == helm
    assert time.monotonic() - started < 1.0
    assert (helm.parent / ".helm.stamp").read_text().strip().startswith(install.HELM_MODULE)


def test_missing_go_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install, "CACHE_BIN", tmp_path / "bin")
    monkeypatch.setattr(install, "find_go", lambda: None)
    with pytest.raises(install.PrerequisiteMissing) as caught:
        install.ensure_helm()
    message = str(caught.value)
    assert "\n" not in message
    assert "go not found" in message and "apt-get install golang-go" in message
    assert not (tmp_path / "bin" / "helm").exists()


def test_cli_exits_2_with_one_line_when_go_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools.helmtools.__main__ import main

    monkeypatch.setattr(install, "CACHE_BIN", tmp_path / "bin")
    monkeypatch.setattr(install, "find_go", lambda: None)
    assert main(["ensure"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("helmtools: go not found")
