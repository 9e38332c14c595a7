"""Dead-letter destinations: records that failed, each with its reason.

Kafka (default, topic `<job id>.dlq`): the original value, keyed by the task id, with headers
`reason`, `source_topic`, `source_partition`, `source_offset`, `job`. File: one JSON line per
record appended to `<directory>/<job>/<topic>+<partition>.dlq.ndjson`. Both are written and
flushed before the offsets they cover are committed, so a dead letter is never lost (it may be
repeated after a crash: at-least-once).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from confluent_kafka import KafkaError, Message, Producer

from tasks.errors import SinkError
from tasks.transforms.batch import DeadRecord

FLUSH_TIMEOUT = 30.0


class DeadLetterSink(Protocol):
    async def write(self, records: list[DeadRecord]) -> None: ...

    async def close(self) -> None: ...


def dead_letter_json(record: DeadRecord, *, job: str, topic: str, partition: int) -> bytes:
    """The file form of one dead letter (the value as text when it is UTF-8, else base64)."""
    body: dict[str, object] = {"job": job, "topic": topic, "partition": partition,
                               "offset": record.offset, "timestamp": record.timestamp_ms,
                               "reason": record.reason}
    try:
        body["value"] = record.value.decode("utf-8")
    except UnicodeDecodeError:
        body["value_base64"] = base64.b64encode(record.value).decode()
    return json.dumps(body, ensure_ascii=False).encode() + b"\n"


class FileDeadLetter:
    def __init__(self, directory: str, *, job: str, topic: str, partition: int) -> None:
        self.path = Path(directory) / job / f"{topic}+{partition}.dlq.ndjson"
        self.job, self.topic, self.partition = job, topic, partition

    def _append(self, records: list[DeadRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(dead_letter_json(r, job=self.job, topic=self.topic,
                                         partition=self.partition) for r in records)
        try:
            with open(self.path, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise SinkError(f"cannot append to {self.path}: {exc}", retryable=True) from exc

    async def write(self, records: list[DeadRecord]) -> None:
        if records:
            await asyncio.to_thread(self._append, records)

    async def close(self) -> None:
        return None


class KafkaDeadLetter:
    def __init__(self, topic: str, *, bootstrap: str, job: str, source_topic: str,
                 partition: int, task_id: str,
                 extra: Mapping[str, str | int] | None = None) -> None:
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": bootstrap, "client.id": f"{task_id}-dlq",
            "enable.idempotence": True, "acks": "all", "linger.ms": 5}
        config.update(extra or {})
        self._config = config
        self._producer: Producer | None = None  # made on the first dead letter
        self.topic, self.task_id = topic, task_id
        self._headers: list[tuple[str, str | bytes | None]] = [
            ("job", job.encode()), ("source_topic", source_topic.encode()),
            ("source_partition", str(partition).encode())]
        self._errors: list[str] = []

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _send(self, records: list[DeadRecord]) -> None:
        self._errors.clear()
        if self._producer is None:
            self._producer = Producer(self._config)
        for r in records:
            headers: list[tuple[str, str | bytes | None]] = [
                *self._headers, ("source_offset", str(r.offset).encode()),
                       ("reason", r.reason.encode())]
            self._producer.produce(self.topic, key=self.task_id.encode(), value=r.value,
                                   headers=headers, on_delivery=self._delivered)
            self._producer.poll(0)
        if self._producer.flush(FLUSH_TIMEOUT) > 0 or self._errors:
            raise SinkError(f"dead-letter topic {self.topic}: "
                            f"{self._errors[0] if self._errors else 'flush timed out'}",
                            retryable=True)

    async def write(self, records: list[DeadRecord]) -> None:
        if records:
            await asyncio.to_thread(self._send, records)

    async def close(self) -> None:
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, 10.0)
