"""Reuses the master's integration fixtures (real ZooKeeper and Kafka, in-process masters,
simulated servers): imported here so pytest offers them to this directory's tests. `cluster`,
`paths` and `zk` come from tests/conftest.py."""

from tests.integration.master.conftest import (  # noqa: F401 (fixtures)
    start_master,
    start_sim,
    topic,
)
