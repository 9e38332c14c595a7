"""Dead-letter destinations: records that failed, each with its reason — written once, and
never refused for their size.

Kafka (default, topic `<job id>.dlq` on the source cluster): the original value, keyed by the task
id, with headers `job`, `source_topic`, `source_partition`, `source_offset`, `reason`,
`original_size` and, for a value cut to fit the topic (tasks/deadletter_rules.py), `truncated`.
The limit is the producer's `message.max.bytes` (if the operator set it) and the topic's
`max.message.bytes` (read once, when the topic exists), the smaller; a topic that still refuses a
message as too large halves the value budget for the retry.

Exactly once, on Kafka:
1. One transactional producer per task, `transactional.id = exportd-dlq-<task id>`: the same for
   every owner of the task, so a new owner's `init_transactions` aborts (or finishes) its
   predecessor's open transaction and fences its producer — a zombie writes no dead letter after.
2. The new owner then reads the stream marks (deadletter_rules.Marks: per stream, the offset below
   which every dead letter is written) stored as the metadata of the source partition's offset in
   the group `<consumer group>.dead-letters` (`marks_group`), and writes only dead letters at or
   beyond them (`pending`).
3. Each write is one transaction: fence check → begin → produce the pending dead letters → flush
   → the advanced marks sent as that group's offset (`send_offsets_to_transaction`) → fence check
   → commit. A read_committed reader (librdkafka's default; set `isolation.level` in Java) sees a
   dead letter exactly when the marks covering it are committed: both or neither.
The job's own offsets are not touched (they move with the sink's acknowledgements), so the marks
may run ahead of them: a restart re-reads the records between, and skips their dead letters.

File: one JSON line per record appended to `<directory>/<job>/<topic>+<partition>.dlq.ndjson`,
fsynced, with the record's `stage`; before its first append an owner reads the file's marks (the
highest offset per stream) and cuts a torn last line, so a restart does not repeat what is there.
Appends are not fenced by the storage: a zombie past its lease margin could still append.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from tasks.deadletter_rules import (
    Header,
    Marks,
    Stage,
    fitted,
    halved,
    max_message_bytes,
    pending,
    value_budget,
)
from tasks.errors import SinkError
from tasks.fence import Fenced, WorkerFence
from tasks.sinks.kafka import (
    CALL_TIMEOUT,
    FENCED_CODES,
    TRANSACTION_TIMEOUT_MS,
    Failure,
    abort_transaction,
    commit_transaction,
    flushed,
    kafka_error,
    kind_of,
)
from tasks.transforms.batch import DeadRecord

FLUSH_TIMEOUT = 30.0
CLOSE_WAIT = 30.0
QUEUE_WAITS = 1000          # 50 ms waits for room in the producer's local queue


class DeadLetterSink(Protocol):
    async def write(self, records: list[DeadRecord], stage: Stage) -> None:
        """Write the records of one stream (in offset order) that are not written yet."""
        ...

    async def close(self) -> None: ...


def marks_group(consumer_group: str) -> str:
    """The group under which a job's dead-letter marks are stored (its offsets are not read)."""
    return f"{consumer_group}.dead-letters"


def dlq_transactional_id(task_id: str) -> str:
    return f"exportd-dlq-{task_id}"


def dead_letter_json(record: DeadRecord, *, job: str, topic: str, partition: int,
                     stage: Stage = Stage.TRANSFORM) -> bytes:
    """The file form of one dead letter (the value as text when it is UTF-8, else base64)."""
    body: dict[str, object] = {"job": job, "topic": topic, "partition": partition,
                               "offset": record.offset, "timestamp": record.timestamp_ms,
                               "reason": record.reason, "stage": str(stage)}
    try:
        body["value"] = record.value.decode("utf-8")
    except UnicodeDecodeError:
        body["value_base64"] = base64.b64encode(record.value).decode()
    return json.dumps(body, ensure_ascii=False).encode() + b"\n"


def file_marks(lines: list[bytes]) -> Marks:
    """The marks of a dead-letter file's complete lines (a line without `stage` was written by a
    version before streams: a transform's)."""
    marks = Marks()
    for line in lines:
        try:
            data = json.loads(line)
            stage = Stage(data.get("stage", Stage.TRANSFORM))
            offset = int(data["offset"])
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        marks = marks.after(stage, [DeadRecord(offset, 0, b"", "")])
    return marks


class FileDeadLetter:
    def __init__(self, directory: str, *, job: str, topic: str, partition: int) -> None:
        self.path = Path(directory) / job / f"{topic}+{partition}.dlq.ndjson"
        self.job, self.topic, self.partition = job, topic, partition
        self.marks: Marks | None = None   # read from the file before the first append

    def _read_marks(self) -> Marks:
        """The file's marks; a torn last line (a crash mid-append) is cut off first."""
        try:
            with open(self.path, "r+b") as fh:
                data = fh.read()
                end = data.rfind(b"\n") + 1
                if end < len(data):
                    fh.truncate(end)
                    fh.flush()
                    os.fsync(fh.fileno())
        except FileNotFoundError:
            return Marks()
        return file_marks(data[:end].splitlines())

    def _append(self, records: list[DeadRecord], stage: Stage) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.marks is None:
                self.marks = self._read_marks()
            due = pending(records, stage, self.marks)
            if not due:
                return
            data = b"".join(dead_letter_json(r, job=self.job, topic=self.topic,
                                             partition=self.partition, stage=stage) for r in due)
            with open(self.path, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise SinkError(f"cannot append to {self.path}: {exc}", retryable=True) from exc
        self.marks = self.marks.after(stage, due)

    async def write(self, records: list[DeadRecord], stage: Stage) -> None:
        if records:
            await asyncio.to_thread(self._append, records, stage)

    async def close(self) -> None:
        return None


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


class _Abort(Exception):
    """The transaction failed and is to be aborted; `error` is what to raise then."""

    def __init__(self, error: SinkError) -> None:
        super().__init__(error.message)
        self.error = error


class KafkaDeadLetter:
    def __init__(self, topic: str, *, bootstrap: str, job: str, source_topic: str,
                 partition: int, task_id: str, consumer_group: str,
                 fence: WorkerFence | None = None,
                 extra: Mapping[str, str | int] | None = None) -> None:
        self.topic, self.task_id = topic, task_id
        self.source_topic, self.partition = source_topic, partition
        self.group = marks_group(consumer_group)
        self.fence = fence or WorkerFence.unbounded()
        self._extra: dict[str, str | int | float | bool] = {"bootstrap.servers": bootstrap,
                                                             **(extra or {})}
        self._configured_max = _int_or_none(self._extra.get("message.max.bytes"))
        self._key = task_id.encode()
        self._headers: list[Header] = [
            ("job", job.encode()), ("source_topic", source_topic.encode()),
            ("source_partition", str(partition).encode())]
        # Made on the first dead letter (`_prepare`).
        self._producer: Producer | None = None
        self._group_metadata: object = None   # of the marks' group, for the transactions
        self.marks: Marks | None = None
        self.limit = 0
        self._cut: int | None = None       # a lower value budget after a "too large" refusal
        self._initialised = False
        self._errors: list[KafkaError] = []
        self._gone: SinkError | None = None
        self._lock = threading.Lock()

    # -- start (the first dead letter) -------------------------------------------------------

    def _topic_limit(self) -> int | None:
        """The topic's max.message.bytes, or None if it cannot be read (not created yet)."""
        admin = AdminClient(dict(self._extra))
        resource = ConfigResource(ConfigResource.Type.TOPIC, self.topic)
        try:
            configs = admin.describe_configs([resource],
                                             request_timeout=CALL_TIMEOUT)[resource].result(
                CALL_TIMEOUT)
            entry = configs.get("max.message.bytes")
            return int(entry.value) if entry is not None and entry.value else None
        except (KafkaException, ValueError, TypeError):
            return None

    def _prepare(self) -> None:
        """init_transactions (fencing the task's previous owners), then the stored marks."""
        if self._producer is None:
            self.limit = max_message_bytes(self._configured_max, self._topic_limit())
            config: dict[str, str | int | float | bool] = {
                "client.id": f"{self.task_id}-dlq", "acks": "all", "linger.ms": 5,
                **self._extra, "message.max.bytes": max(self.limit, 1000),
                # After the cluster's properties: they cannot turn the transactions off.
                "transactional.id": dlq_transactional_id(self.task_id),
                "enable.idempotence": True, "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS}
            self._producer = Producer(config)
        if not self._initialised:
            self.fence.check("dead letter")   # init fences the previous owner: a side effect
            try:
                self._producer.init_transactions(CALL_TIMEOUT)
            except KafkaException as exc:
                raise self._failed("init_transactions", kafka_error(exc)) from exc
            self._initialised = True
        # A consumer of the marks' group only long enough to read them and take its group
        # metadata (a serialised copy, valid after close): no client threads kept per task.
        reader = Consumer({**self._extra, "group.id": self.group,
                           "client.id": f"{self.task_id}-dlq", "enable.auto.commit": False,
                           "isolation.level": "read_committed"})
        try:
            [stored] = reader.committed(
                [TopicPartition(self.source_topic, self.partition)], timeout=CALL_TIMEOUT)
            error = stored.error
            self._group_metadata = reader.consumer_group_metadata()
        except KafkaException as exc:
            error = kafka_error(exc)
        finally:
            reader.close()
        if error is not None:   # never guessed as "none written": that would repeat them
            raise SinkError(f"reading the dead-letter marks of {self.task_id} "
                            f"(group {self.group}) failed: {error}", retryable=True)
        self.marks = Marks.from_metadata(stored.metadata)

    # -- writing ------------------------------------------------------------------------------

    async def write(self, records: list[DeadRecord], stage: Stage) -> None:
        if records:
            await asyncio.to_thread(self._write, records, stage)

    def _write(self, records: list[DeadRecord], stage: Stage) -> None:
        with self._lock:
            if self._gone is not None:
                raise self._gone
            if self.marks is None:
                self._prepare()
            assert self.marks is not None and self._producer is not None
            due = pending(records, stage, self.marks)
            if not due:
                return
            marks = self.marks.after(stage, due)
            self.fence.check("dead letter")
            try:
                self._producer.begin_transaction()
            except KafkaException as exc:
                raise self._failed("begin_transaction", kafka_error(exc)) from exc
            try:
                self._fill(due)
                self._store(marks)
                self.fence.check("dead letter commit")
            except Fenced:
                self._abort()
                raise
            except _Abort as failed:
                self._abort()
                raise failed.error from None
            except KafkaException as exc:
                err = kafka_error(exc)
                if kind_of(err) is Failure.ABORT or kind_of(err) is Failure.RETRY:
                    self._abort()
                raise self._failed("dead-letter transaction", err) from exc
            self._commit()
            self.marks = marks

    def _message(self, record: DeadRecord) -> tuple[bytes, list[tuple[str, str | bytes | None]]]:
        headers = [*self._headers, ("source_offset", str(record.offset).encode()),
                   ("reason", record.reason.encode())]
        budget = value_budget(self.limit, self._key, headers)
        if self._cut is not None:
            budget = min(budget, self._cut)
        fit = fitted(record.value, budget, limit=self.limit,
                     destination=f"dead-letter topic {self.topic}")
        return fit.value, [*headers, *fit.headers]

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(err)

    def _fill(self, records: list[DeadRecord]) -> None:
        assert self._producer is not None
        self._errors.clear()
        for record in records:
            value, headers = self._message(record)
            for _ in range(QUEUE_WAITS):  # bounded: wait for room in the local queue
                try:
                    self._producer.produce(self.topic, key=self._key, value=value,
                                           headers=headers, on_delivery=self._delivered)
                    break
                except BufferError:
                    self._producer.poll(0.05)
                except KafkaException as exc:
                    if kafka_error(exc).code() != KafkaError.MSG_SIZE_TOO_LARGE:
                        raise
                    self._too_large()   # librdkafka's own check: our framing estimate was short
                    raise _Abort(SinkError(f"dead letter for {self.topic} too large: "
                                           f"{kafka_error(exc).str()}", retryable=True)) from exc
            else:
                raise _Abort(SinkError(f"producer queue for {self.topic} stayed full",
                                       retryable=True))
        deadline = time.monotonic() + FLUSH_TIMEOUT
        while flushed(self._producer, 1.0) > 0:
            if time.monotonic() > deadline:
                raise _Abort(SinkError(f"flush to dead-letter topic {self.topic} timed out",
                                       retryable=True))
        if self._errors:
            first = self._errors[0]
            if first.code() in FENCED_CODES or first.fatal():
                raise KafkaException(first)
            if any(e.code() == KafkaError.MSG_SIZE_TOO_LARGE for e in self._errors):
                self._too_large()   # the topic takes less than it said
            raise _Abort(SinkError(f"dead-letter topic {self.topic}: {first.str()}",
                                   retryable=True, failures=len(self._errors)))

    def _too_large(self) -> None:
        """A message was refused as too large anyway: cut harder on the retry (bounded)."""
        self._cut = halved(self._cut if self._cut is not None else self.limit)

    def _store(self, marks: Marks) -> None:
        assert self._producer is not None
        self._producer.send_offsets_to_transaction(
            [TopicPartition(self.source_topic, self.partition, max(marks.transform, marks.sink),
                            metadata=marks.metadata())],
            self._group_metadata, CALL_TIMEOUT)

    def _commit(self) -> None:
        assert self._producer is not None
        # An unknown outcome: the next owner's init settles it and its marks say which dead
        # letters are written.
        commit_transaction(self._producer, self._commit_failed, self._give_up)

    def _commit_failed(self, what: str, err: KafkaError) -> SinkError:
        if kind_of(err) is Failure.ABORT:
            self._abort()
        return self._failed(what, err)

    def _abort(self) -> None:
        assert self._producer is not None
        abort_transaction(self._producer, self._give_up)

    def _failed(self, what: str, err: KafkaError) -> SinkError:
        if kind_of(err) in (Failure.FENCED, Failure.FATAL):
            return self._give_up(what, err)
        return SinkError(f"{what} to dead-letter topic {self.topic} failed: {err.str()}",
                         retryable=True, task=self.task_id)

    def _give_up(self, what: str, err: KafkaError) -> SinkError:
        """This producer writes no more dead letters: a newer owner fenced it, or it broke."""
        fenced = kind_of(err) is Failure.FENCED
        if fenced:
            message = (f"{what}: the dead-letter producer of {self.task_id} was fenced by a "
                       f"newer owner of the task ({err.str()})")
        else:
            message = f"{what} for dead letters of {self.task_id} failed: {err.str()}"
        self._gone = SinkError(message, retryable=False, task=self.task_id, fenced=fenced)
        return self._gone

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        # Every transaction ends committed or aborted inside _write: nothing is left to flush.
        if not self._lock.acquire(timeout=CLOSE_WAIT):
            return
        try:
            given_up = self._gone is not None
            self._gone = SinkError(f"dead letters of {self.task_id} are closed", retryable=False)
            if self._producer is not None and not given_up:
                self._producer.close()
            # A producer given up (fenced, broken) is only dropped: its close would try to
            # abort a transaction the broker no longer lets it touch.
            self._producer = None
        finally:
            self._lock.release()
