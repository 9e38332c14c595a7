"""Reuses the master's integration fixtures (real ZooKeeper and Kafka, in-process masters,
simulated servers): imported here so pytest offers them to this directory's tests."""

from tests.integration.master.conftest import (  # noqa: F401 (fixtures)
    cluster,
    paths,
    start_master,
    start_sim,
    topic,
    zk,
)
