"""Real ZooKeeper, Kafka (KRaft) and S3 (moto server mode) on loopback, for tests and `make dev`.

`start_infra()` brings all three up on free ports and returns their endpoints; every process it
starts is stopped by `Infra.stop()`, by the context manager, at interpreter exit, and (through
PR_SET_PDEATHSIG) by the kernel if the owning process dies without cleaning up.
"""

from tools.infra.errors import InfraError, PrerequisiteMissing
from tools.infra.servers import (
    SASL_PASSWORD,
    SASL_USER,
    Infra,
    ZooKeeperTls,
    kafka_sasl_bootstrap,
    start_infra,
)

__all__ = ["SASL_PASSWORD", "SASL_USER", "Infra", "InfraError", "PrerequisiteMissing",
           "ZooKeeperTls", "kafka_sasl_bootstrap", "start_infra"]
