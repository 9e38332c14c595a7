"""A job naming an Iceberg catalog the masters do not have is refused at creation (a 400 naming
the known ones), and a server without it fails the task with a ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from master.reconcile import _known_catalog
from master.settings import MasterSettings
from tasks.errors import ConfigError, ValidationError
from tasks.factory import TaskEnvironment, build_runner
from tasks.iceberg.catalogs import CatalogSettings, IcebergSettings
from tasks.runner import Assignment, task_id
from tasks.spec import parse_job_spec

CATALOGS = IcebergSettings(catalogs={"lake": CatalogSettings(uri="sqlite:////tmp/x.db",
                                                             warehouse="file:///tmp/wh")})
JOB = parse_job_spec({"id": "ice", "source": {"topic": "t"}, "sink": {
    "type": "iceberg", "catalog": "nope", "namespace": "ns", "table": "t"}})


def test_masters_refuse_a_catalog_they_do_not_have() -> None:
    with pytest.raises(ValidationError) as refused:
        _known_catalog(JOB, MasterSettings.model_construct(iceberg=CATALOGS))
    assert refused.value.http_status == 400
    assert "sink.catalog: iceberg catalog 'nope' is not configured (iceberg.catalogs: lake)" \
        in str(refused.value)
    ok = JOB.model_copy(update={"sink": JOB.sink.model_copy(update={"catalog": "lake"})})
    _known_catalog(ok, MasterSettings.model_construct(iceberg=CATALOGS))


def test_a_server_without_the_catalog_fails_the_task(tmp_path: Path) -> None:
    env = TaskEnvironment(kafka_bootstrap="127.0.0.1:1", state_dir=tmp_path, iceberg=CATALOGS)
    with pytest.raises(ConfigError, match="iceberg catalog 'nope' is not configured"):
        build_runner(env, Assignment(task_id("ice", "t", 0), 1, JOB, 0))
