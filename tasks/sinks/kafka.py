"""Kafka sink: re-feed the records to another topic, each chunk in one Kafka transaction.

Each encoded record (its line) becomes one message keyed by nothing, with the source record's
timestamp. One transactional producer per task, `transactional.id = exportd-<task id>`
(`transactional_id`): the same for every owner of the task — neither the task's generation nor
the job's incarnation is in it — so whoever starts the task next fences whoever held it before,
a stopped or wedged zombie included, even one of an earlier incarnation of a job of the same id
(which commits to the same consumer group).

Order of effects:
1. `prepare` — `init_transactions` — once, in the source's thread before it reads the committed
   offset (`KafkaSource.before_open`): the broker first aborts a predecessor's open transaction
   (or finishes one already committing) and fences its producer, so the offset read is the one
   the predecessor's last committed chunk left and its later produce/commit are refused.
2. Per chunk: fence check → `begin_transaction` → produce every record → flush → the source
   partition's end offset sent with the source consumer's group metadata
   (`send_offsets_to_transaction`) → fence check → `commit_transaction`. A read_committed
   reader sees the chunk's records exactly when its end offset is committed, both or neither.
   A chunk without records still commits its offset (if the pipeline hands it over).

Errors (`failure_kind`, pure): PRODUCER_FENCED, INVALID_PRODUCER_EPOCH and librdkafka's _FENCED
mean another owner initialised the task's id: this producer is a zombie and never writes again
(`SinkError(retryable=False)`, the task fails; a host that still owns it restarts it with a new
producer from the committed offset). Other fatal errors end the producer the same way. An
abortable or retriable error, a failed delivery, or a lapsed worker lease (`Fenced`) aborts the
transaction and raises a retryable error: the pipeline re-sends the chunk in a new transaction.
A retriable error of `commit_transaction` itself is retried (aborting then could drop a commit
that happened); if its outcome stays unknown the producer is given up as above, and the restart
reads the outcome from the committed offset.

When the sink's cluster is not the source's, the offsets cannot be in the transaction (Kafka
commits them on the producer's cluster): `commits_offsets` is False and the pipeline commits
after the transaction — at-least-once across a crash between the two, still one producer per
task. Dead letters have a transactional producer of their own (tasks/deadletter.py,
`exportd-dlq-<task id>`) whose transactions carry their own marks: written once, not in this one.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from tasks.batching import Chunk
from tasks.deadletter_rules import max_message_bytes, too_large_for_sink
from tasks.errors import ExportdError, SinkError, Unavailable
from tasks.fence import Fenced, WorkerFence
from tasks.sinks.base import CpuClock
from tasks.spec import KafkaSink
from tasks.transforms.batch import DeadRecord

FLUSH_TIMEOUT = 60.0
CALL_TIMEOUT = 30.0          # init, send offsets, commit, abort: each call
COMMIT_ATTEMPTS = 5          # retriable commit errors before the outcome counts as unknown
TRANSACTION_TIMEOUT_MS = 60_000  # the broker aborts a transaction left open this long
CLOSE_WAIT = 30.0            # close waits this long for a transaction still in its thread


class Failure(enum.Enum):
    FENCED = "fenced"    # another producer of the task's id initialised: this one is a zombie
    FATAL = "fatal"      # the producer cannot go on
    ABORT = "abort"      # the transaction failed: abort it, re-send the chunk in a new one
    RETRY = "retry"      # transient: the same call may be repeated


FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                          KafkaError.INVALID_PRODUCER_EPOCH})


def transactional_id(task_id: str) -> str:
    """The task's transactional.id: a function of the task id only, so every owner shares it."""
    return f"exportd-{task_id}"


def failure_kind(code: int, *, fatal: bool, retriable: bool, abortable: bool) -> Failure:
    """What a librdkafka error means for the producer and its transaction. librdkafka's rule
    for the transactional calls: retriable may be repeated, abortable needs an abort, anything
    else is fatal."""
    if code in FENCED_CODES:
        return Failure.FENCED
    if fatal:
        return Failure.FATAL
    if abortable:
        return Failure.ABORT
    if retriable:
        return Failure.RETRY
    return Failure.FATAL


def kind_of(err: KafkaError) -> Failure:
    return failure_kind(err.code(), fatal=err.fatal(), retriable=err.retriable(),
                        abortable=err.txn_requires_abort())


def flushed(producer: Producer, timeout: float) -> int:
    """`producer.flush(timeout)` of a transactional producer (here and tasks/deadletter.py). A
    fatal error (a fenced producer) raised while delivery callbacks run comes out of
    confluent-kafka as a SystemError, caused by the KafkaException (raised instead) or with no
    cause at all: then the producer's own state says what broke — an abort raises the fatal
    error; if the abort works, the write is retryable."""
    try:
        return producer.flush(timeout)
    except SystemError as exc:
        if isinstance(exc.__cause__, KafkaException):
            raise exc.__cause__ from None
        try:
            producer.abort_transaction(CALL_TIMEOUT)
        except KafkaException as state:
            raise state from None
        raise SinkError(f"flush failed ({exc}); transaction aborted",
                        retryable=True) from None


def abort_transaction(producer: Producer,
                      give_up: Callable[[str, KafkaError], SinkError]) -> None:
    """Abort the producer's open transaction (here and tasks/deadletter.py), retrying retriable
    errors up to COMMIT_ATTEMPTS times; if even that fails, raise `give_up`'s error."""
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            producer.abort_transaction(CALL_TIMEOUT)
            return
        except KafkaException as exc:
            err = kafka_error(exc)
            if kind_of(err) is not Failure.RETRY or attempt == COMMIT_ATTEMPTS - 1:
                raise give_up("abort_transaction", err) from exc


def commit_transaction(producer: Producer, failed: Callable[[str, KafkaError], SinkError],
                       give_up: Callable[[str, KafkaError], SinkError]) -> None:
    """Commit the producer's open transaction (here and tasks/deadletter.py), retrying retriable
    errors up to COMMIT_ATTEMPTS times. Any other error raises `failed`'s error; retries used up
    raise `give_up`'s: committed or not, nobody can say (the next producer's init settles it)."""
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            producer.commit_transaction(CALL_TIMEOUT)
            return
        except KafkaException as exc:
            err = kafka_error(exc)
            if kind_of(err) is not Failure.RETRY:
                raise failed("commit_transaction", err) from exc
            if attempt == COMMIT_ATTEMPTS - 1:
                raise give_up("commit_transaction (outcome unknown)", err) from exc


def _value(item: object) -> bytes:
    return item if isinstance(item, bytes) else repr(item).encode()


def kafka_error(exc: KafkaException) -> KafkaError:
    """The KafkaError a KafkaException carries (a generic one if it carries none)."""
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else KafkaError(KafkaError._FAIL, str(exc))


class OffsetSource(Protocol):
    """What the sink needs of the task's source (tasks/source.py KafkaSource)."""

    topic: str
    partition: int

    def group_metadata(self) -> Any: ...

    def before_open(self, step: Callable[[], None]) -> None: ...


class _Broken(Exception):
    """The transaction could not be finished; `error` says what to raise."""

    def __init__(self, error: ExportdError) -> None:
        super().__init__(error.message)
        self.error = error


class KafkaSinkWriter:
    chained = False

    def __init__(self, spec: KafkaSink, *, bootstrap: str, task_id: str, source: OffsetSource,
                 fence: WorkerFence | None = None, commits_offsets: bool = True,
                 extra: Mapping[str, str | int] | None = None) -> None:
        self.topic, self.task_id, self.source = spec.topic, task_id, source
        self.fence = fence or WorkerFence.unbounded()
        # False when the sink's cluster is not the source's (module docstring).
        self.commits_offsets = commits_offsets
        self.cpu = CpuClock()
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": bootstrap, "client.id": task_id, "acks": "all",
            "linger.ms": 5, "compression.type": "lz4"}
        config.update(extra or {})
        # After the cluster's properties: they cannot turn the transactions off.
        config.update({"transactional.id": transactional_id(task_id),
                       "enable.idempotence": True,
                       "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS})
        self._producer = Producer(config)
        try:   # librdkafka refuses a larger message locally: such records are screened out
            configured: int | None = int(str(config["message.max.bytes"]))
        except (KeyError, ValueError):
            configured = None
        self.max_message = max_message_bytes(configured, None)
        self._errors: list[KafkaError] = []
        self._ready = False
        self._gone: SinkError | None = None   # set once the producer may not write again
        self._closed = False
        # One transaction at a time, and close() after the one still running in its thread.
        self._lock = threading.Lock()
        source.before_open(self.prepare)

    # -- start ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """init_transactions (blocking; the source's thread, before it reads its offset).
        Retriable failures raise Unavailable (the source's open retries them)."""
        with self._lock:
            if self._ready:
                return
            self.fence.check("produce")  # it fences the previous owner: a side effect
            try:
                self._producer.init_transactions(CALL_TIMEOUT)
            except KafkaException as exc:
                err = kafka_error(exc)
                if kind_of(err) is Failure.RETRY:
                    raise Unavailable(f"init_transactions for {self.task_id}: {err.str()}",
                                      task=self.task_id) from exc
                raise self._give_up("init_transactions", err) from exc
            self._ready = True

    # -- writing ----------------------------------------------------------------------------

    async def write(self, chunk: Chunk) -> list[DeadRecord]:
        await asyncio.to_thread(self.cpu.run, self._transaction, chunk)
        return []

    def _transaction(self, chunk: Chunk) -> None:
        with self._lock:
            if self._gone is not None:
                raise self._gone
            if not self._ready:
                raise SinkError(f"Kafka sink of {self.task_id} written before prepare()",
                                retryable=False)
            self.fence.check("produce")
            try:
                self._producer.begin_transaction()
            except KafkaException as exc:
                raise self._failed("begin_transaction", kafka_error(exc), begun=False) from exc
            try:
                self._fill(chunk)
                if self.commits_offsets:
                    self._producer.send_offsets_to_transaction(
                        [TopicPartition(self.source.topic, self.source.partition,
                                        chunk.end_offset)],
                        self.source.group_metadata(), CALL_TIMEOUT)
                self.fence.check("commit")
            except Fenced:
                self._abort()
                raise
            except _Broken as broken:
                self._abort()
                raise broken.error from None
            except KafkaException as exc:
                raise self._failed("transaction", kafka_error(exc), begun=True) from exc
            self._commit()

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(err)

    def oversized(self, chunk: Chunk) -> list[DeadRecord]:
        """The chunk's records too large for one message (tasks/sinks/base.py `Screens`): the
        pipeline dead-letters them before the write, and `_fill` skips them."""
        rows = chunk.rows
        out = []
        for offset, ts, item in zip(rows.offsets, rows.timestamps, chunk.items, strict=True):
            value = _value(item)
            if too_large_for_sink(len(value), self.max_message):
                out.append(DeadRecord(offset, ts, value, (
                    f"record of {len(value)} bytes is too large for the Kafka sink's topic "
                    f"{self.topic} (messages of at most {self.max_message} bytes)")))
        return out

    def _fill(self, chunk: Chunk) -> None:
        """Produce the chunk's records into the open transaction and wait for their delivery;
        _Broken (retryable) if the local queue stayed full, the flush timed out or a delivery
        failed; a fenced delivery is the fenced error. Records too large for a message are
        skipped: the pipeline dead-lettered them (`oversized`)."""
        self._errors.clear()
        for ts, item in zip(chunk.rows.timestamps, chunk.items, strict=True):
            value = _value(item)
            if too_large_for_sink(len(value), self.max_message):
                continue
            for _ in range(1000):  # bounded: wait for room in the local queue
                try:
                    self._producer.produce(self.topic, value=value, timestamp=max(ts, 0),
                                           on_delivery=self._delivered)
                    break
                except BufferError:
                    self._producer.poll(0.05)
            else:
                raise _Broken(SinkError(f"producer queue for {self.topic} stayed full",
                                        retryable=True))
        deadline = time.monotonic() + FLUSH_TIMEOUT
        while flushed(self._producer, 1.0) > 0:
            if time.monotonic() > deadline:
                raise _Broken(SinkError(f"flush to {self.topic} timed out", retryable=True))
        if self._errors:
            first = self._errors[0]
            # A delivery error carries no transactional flags: only a fenced or fatal one ends
            # the producer; any other fails this transaction (abort, re-send).
            if first.code() in FENCED_CODES or first.fatal():
                raise KafkaException(first)
            raise _Broken(SinkError(f"delivery to {self.topic} failed: {first.str()}",
                                    retryable=True, failures=len(self._errors)))

    def _commit(self) -> None:
        # An unknown outcome: a new producer's init settles it, and the restarted task reads
        # the outcome from the committed offset.
        commit_transaction(self._producer,
                           lambda what, err: self._failed(what, err, begun=True), self._give_up)

    def _failed(self, what: str, err: KafkaError, *, begun: bool) -> SinkError:
        """The error to raise for a failed transactional call; aborts what can be aborted."""
        kind = kind_of(err)
        if kind in (Failure.FENCED, Failure.FATAL):
            return self._give_up(what, err)
        if begun:
            try:
                self._abort()
            except SinkError as gone:
                return gone
        return SinkError(f"{what} to {self.topic} failed, transaction aborted: {err.str()}",
                         retryable=True, task=self.task_id)

    def _abort(self) -> None:
        """Abort the open transaction; raises the non-retryable error if even that fails."""
        abort_transaction(self._producer, self._give_up)

    def _give_up(self, what: str, err: KafkaError) -> SinkError:
        """This producer writes no more: fenced by a newer owner of the task, or broken."""
        if kind_of(err) is Failure.FENCED:
            message = (f"{what}: the producer of {self.task_id} was fenced by a newer owner of "
                       f"the task; it stops writing ({err.str()})")
        else:
            message = f"{what} for {self.task_id} failed, the producer stops: {err.str()}"
        self._gone = SinkError(message, retryable=False, task=self.task_id,
                               fenced=kind_of(err) is Failure.FENCED)
        return self._gone

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        # Every transaction ends committed or aborted inside _transaction: nothing is left to
        # flush. Wait (bounded) for one still in its thread, so the producer outlives it; a
        # producer still busy after that is left to the garbage collector.
        if not self._lock.acquire(timeout=CLOSE_WAIT):
            return
        try:
            if not self._closed:
                self._closed = True
                self._gone = SinkError(f"Kafka sink of {self.task_id} is closed",
                                       retryable=False)
                self._producer.close()
        finally:
            self._lock.release()
