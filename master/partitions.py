"""How many partitions a job's topics have: Kafka metadata through confluent-kafka's AdminClient.

Blocking (run it in a thread). One AdminClient per bootstrap list, kept for the process. Asking
for all topics rather than one keeps brokers with auto-creation on from creating a mistyped topic.
"""

from __future__ import annotations

import threading

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from tasks.errors import Unavailable
from tasks.kafka_access import KafkaAccess


class PartitionSource:
    def __init__(self, default_bootstrap: str, timeout: float, *,
                 access: KafkaAccess | None = None) -> None:
        self.default_bootstrap = default_bootstrap
        self.timeout = timeout
        self.access = access or KafkaAccess()   # librdkafka properties (security) by cluster
        self._clients: dict[str, AdminClient] = {}
        self._lock = threading.Lock()

    def _client(self, bootstrap: str) -> AdminClient:
        with self._lock:
            client = self._clients.get(bootstrap)
            if client is None:
                client = self._clients[bootstrap] = AdminClient(
                    {"socket.timeout.ms": 10_000, **self.access.properties(bootstrap),
                     "bootstrap.servers": bootstrap})
            return client

    def count(self, topic: str, bootstrap: str | None = None) -> int | None:
        """Partitions of `topic`, or None when the topic does not exist."""
        return self.topics(bootstrap).get(topic)

    def topics(self, bootstrap: str | None = None) -> dict[str, int]:
        """Every topic of the cluster with its partition count (a multi-topic job's pattern is
        matched against them: tasks/topics.py). Topics whose metadata has an error are left
        out, as if they did not exist yet."""
        servers = bootstrap or self.default_bootstrap
        try:
            meta = self._client(servers).list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise Unavailable(f"Kafka metadata from {servers} failed: {exc}") from exc
        return {name: len(found.partitions) for name, found in meta.topics.items()
                if found.error is None}

    def close(self) -> None:
        """Drop the clients: librdkafka keeps reconnecting (and logging) while one lives."""
        with self._lock:
            self._clients.clear()
