"""Kafka sink: re-feed the records to another topic; produce, then flush before the commit.

Each encoded record (its line) becomes one message keyed by nothing, with
the source record's timestamp. The producer is idempotent (no duplicates from its own retries);
a restart may re-send a batch that was flushed but not committed: at-least-once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from tasks.batching import Chunk
from tasks.errors import SinkError
from tasks.sinks.base import CpuClock
from tasks.spec import KafkaSink
from tasks.transforms.batch import DeadRecord

FLUSH_TIMEOUT = 60.0


class KafkaSinkWriter:
    def __init__(self, spec: KafkaSink, *, bootstrap: str, client_id: str,
                 extra: Mapping[str, str | int] | None = None) -> None:
        self.topic = spec.topic
        self.cpu = CpuClock()
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": spec.bootstrap_servers or bootstrap,
            "client.id": client_id, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "compression.type": "lz4"}
        config.update(extra or {})
        self._producer = Producer(config)
        self._errors: list[str] = []

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _send(self, chunk: Chunk) -> None:
        self._errors.clear()
        for ts, item in zip(chunk.rows.timestamps, chunk.items, strict=True):
            value = item if isinstance(item, bytes) else repr(item).encode()
            for _ in range(1000):  # bounded: wait for room in the local queue
                try:
                    self._producer.produce(self.topic, value=value, timestamp=max(ts, 0),
                                           on_delivery=self._delivered)
                    break
                except BufferError:
                    self._producer.poll(0.05)
                except KafkaException as exc:
                    raise SinkError(f"produce to {self.topic} failed: {exc}",
                                    retryable=True) from exc
            else:
                raise SinkError(f"producer queue for {self.topic} stayed full", retryable=True)
        deadline = time.monotonic() + FLUSH_TIMEOUT
        while self._producer.flush(1.0) > 0:
            if time.monotonic() > deadline:
                raise SinkError(f"flush to {self.topic} timed out", retryable=True)
        if self._errors:
            raise SinkError(f"delivery to {self.topic} failed: {self._errors[0]}",
                            retryable=True, failures=len(self._errors))

    async def write(self, chunk: Chunk) -> list[DeadRecord]:
        await asyncio.to_thread(self.cpu.run, self._send, chunk)
        return []

    async def close(self) -> None:
        await asyncio.to_thread(self._producer.flush, 10.0)
