"""The Kafka side of a task: one consumer assigned to one partition, batch consume, sync commit.

Blocking by design (librdkafka calls release the GIL): the pipeline calls every method in the
task's source lane, one call at a time on a thread pool shared by the process's tasks
(tasks/lanes.py), so `poll` blocks only briefly there. The consumer never commits by itself
(`enable.auto.commit=false`) and never joins a group rebalance (manual `assign`): the cluster,
not Kafka, decides who reads a partition.
Offsets are still committed under the job's consumer group, so a task resumes where the last
acknowledged file or batch ended, on whichever server it lands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from tasks.errors import ConfigError, Unavailable
from tasks.spec import Source
from tasks.transforms.batch import Rows

METADATA_TIMEOUT = 10.0
OPEN_TIMEOUT = 30.0
# librdkafka prefetches up to this much per consumer; it is part of a task's memory bound.
# These two are the defaults of a host without a budget (tests, benchmarks); a server's
# consumers get smaller sizes from its prefetch share (tasks/budget.py, passed in `extra`).
PREFETCH_KBYTES = 8 * 1024
# The most one fetch brings for the partition (librdkafka's default: 1 MiB). Each task has its
# own consumer, so each fetch request serves one partition: with 1 MiB fetches the broker spent
# 4x the CPU of a consumer reading four partitions at once, on the same cores (benchmark (b):
# 1.05 s against 0.26 s of broker CPU for 2M records). 4 MiB fetches cut that by about half;
# one response in flight comes on top of the prefetch.
FETCH_PARTITION_BYTES = 4 * 1024 * 1024
# `consume(n, timeout)` waits for n records or the timeout, and a synchronous commit — a drain's
# last step included — waits for a running consume to return: while records flow, poll briefly
# (take what is there, let commits through); once the partition is idle, the wait doubles up to
# POLL_IDLE (fewer empty wake-ups). Jumping straight to POLL_IDLE made a task stopped just after
# it caught up wait out a 0.2 s consume: most of a drain's time in the passthrough benchmark.
POLL_BUSY = 0.01
POLL_IDLE = 0.2
# The high watermark (for the lag) is read from librdkafka at most this often: the call takes a
# lock the fetching threads hold, and per batch it cost ~9 % of a passthrough task's CPU.
LAG_REFRESH_S = 0.5
# librdkafka reports these through error_cb when it loses the broker; the source then asks the
# broker for the partition's end directly (at most every LAG_REFRESH_S, waiting up to this long)
# until it answers or records arrive again.
_UNREACHABLE = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT,
                          KafkaError._RESOLVE, KafkaError._TIMED_OUT})
PROBE_TIMEOUT = 1.0


@dataclass(slots=True)
class Polled:
    rows: Rows
    next_offset: int          # the position after this batch
    lag: int                  # high watermark - position, -1 when unknown
    errors: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # thread CPU time of the call
    high: int = -1            # the partition's end as the broker last reported it
    unreachable: str = ""     # "broker unreachable since …" while the broker cannot be reached
    # No records: how long the caller should wait before the next poll — the part of the poll
    # interval a `max_block` kept out of the thread (tasks/pipeline.py waits it on its loop).
    wait_s: float = 0.0


def columns(messages: list[Message]) -> Rows:
    """Messages to columns. This is the per-record cost every task pays, so: one C-level call
    per field and record, and offsets as a range when they are contiguous (the usual case)."""
    if not messages:
        return Rows()
    first, last = messages[0].offset() or 0, messages[-1].offset() or 0
    if last - first + 1 == len(messages):
        offsets = list(range(first, last + 1))
    else:  # compacted topics, transaction markers
        offsets = [m.offset() or 0 for m in messages]
    return Rows(offsets, [m.timestamp()[1] for m in messages], [m.value() for m in messages])


def next_poll_timeout(previous: float, got_records: bool) -> float:
    """The next consume's timeout: POLL_BUSY while records flow, doubling up to POLL_IDLE after
    that (a stop soon after the last record waits ~10-40 ms, an idle task wakes 5x a second)."""
    if got_records:
        return POLL_BUSY
    return min(POLL_IDLE, max(POLL_BUSY, previous * 2))


def start_offset(committed: int, start: str, low: int, high: int,
                 by_timestamp: int | None) -> int:
    """Where a task starts: the committed offset, else the spec's choice. A committed offset
    below the log start (retention) is kept: the first chunk keeps the name the crashed run
    gave it, and librdkafka's `auto.offset.reset=earliest` skips the missing records."""
    if committed >= 0:
        return committed
    if start == "latest":
        return high
    if start == "timestamp":
        return high if by_timestamp is None or by_timestamp < 0 else by_timestamp
    return low


class KafkaSource:
    def __init__(self, spec: Source, *, bootstrap: str, group: str, partition: int,
                 client_id: str, extra: Mapping[str, str | int] | None = None,
                 topic: str | None = None) -> None:
        # `topic`: the task's (its id's); a multi-topic job's spec names several or a pattern.
        self.spec, self.topic, self.partition = spec, topic or spec.topic, partition
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",  # only if the committed offset fell off the log
            "queued.max.messages.kbytes": PREFETCH_KBYTES,
            "fetch.message.max.bytes": FETCH_PARTITION_BYTES,
            "fetch.wait.max.ms": 10,
            # When the prefetch is full, librdkafka postpones the next fetch by this much
            # (default 1 s): a task that just caught up would then sit idle for a second.
            "fetch.queue.backoff.ms": 20,
            # A new client drops its bootstrap connection once it knows the broker's id, and the
            # FindCoordinator sent on it fails; the retry waits out reconnect.backoff.ms / 2
            # (default 100 ms). At 20 ms a task opens in ~20 ms instead of ~60. Reconnects after
            # a failure still back off exponentially up to reconnect.backoff.max.ms.
            "reconnect.backoff.ms": 20,
            # librdkafka's default, said here because exactly-once rests on it: records of open
            # or aborted transactions are not read, and the committed offset is read only once no
            # transaction still holds one for the partition (OffsetFetch require_stable).
            "isolation.level": "read_committed",
        }
        config.update(extra or {})
        self._consumer = Consumer({**config, "error_cb": self._on_error})
        self._down_since: float | None = None   # wall clock of the first unanswered failure
        self._down_error = ""
        self.position = -1
        self.resolved = False   # the start offset was not a committed one (see _open)
        self._timeout = POLL_IDLE
        self._high = -1
        self._high_at = float("-inf")
        self._before_open: list[Callable[[], None]] = []
        self._group_metadata: Any = None

    def before_open(self, step: Callable[[], None]) -> None:
        """Run `step` at the start of `open`, in the source's thread, before the committed offset
        is read: a transactional sink's init_transactions, which settles a previous owner's open
        transaction (and its offsets) first. Unavailable from it is retried like open's own."""
        self._before_open.append(step)

    def group_metadata(self) -> Any:
        """The consumer's group metadata, for a sink committing offsets in its transaction
        (tasks/sinks/kafka.py); read by `open` in the source's thread."""
        if self._group_metadata is None:
            raise Unavailable(f"source of {self.topic}[{self.partition}] is not open")
        return self._group_metadata

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (runs inside consume, in the source's thread)."""
        if error.code() in _UNREACHABLE:
            if self._down_since is None:
                self._down_since = time.time()
            self._down_error = error.str()

    @property
    def unreachable(self) -> str:
        if self._down_since is None:
            return ""
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._down_since))
        return f"broker unreachable since {since} ({self._down_error})"

    def _tp(self, offset: int = -1001) -> TopicPartition:
        return TopicPartition(self.topic, self.partition, offset)

    def open(self) -> int:
        """Resolve the start offset and assign; returns it. Errors (e.g. a new cluster's offsets
        topic has no coordinator yet) are retried for up to OPEN_TIMEOUT seconds."""
        deadline = time.monotonic() + OPEN_TIMEOUT
        while True:
            try:
                while self._before_open:
                    self._before_open[0]()
                    self._before_open.pop(0)
                return self._open()
            except Unavailable:
                # NOT_COORDINATOR and friends are not flagged retriable, yet they pass.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _open(self) -> int:
        try:
            committed = self._consumer.committed([self._tp()], timeout=METADATA_TIMEOUT)[0].offset
            low, high = self._consumer.get_watermark_offsets(self._tp(), timeout=METADATA_TIMEOUT)
            by_ts = None
            if self.spec.start == "timestamp" and committed < 0:
                found = self._consumer.offsets_for_times(
                    [self._tp(self.spec.start_timestamp_ms or 0)], timeout=METADATA_TIMEOUT)
                by_ts = found[0].offset
        except KafkaException as exc:
            raise Unavailable(f"cannot read offsets of {self.topic}[{self.partition}]: {exc}",
                              topic=self.topic, partition=self.partition) from exc
        if high < 0:
            raise ConfigError(f"partition {self.topic}[{self.partition}] does not exist")
        self.position = start_offset(committed, self.spec.start, low, high, by_ts)
        # A start resolved from `latest`, a timestamp or a retention-dependent `earliest`
        # differs between owners: the pipeline commits it before writing anything.
        self.resolved = committed < 0
        self._consumer.assign([self._tp(self.position)])
        self._group_metadata = self._consumer.consumer_group_metadata()
        return self.position

    def seek(self, offset: int) -> None:
        """Read from `offset` next (assign again: it resets the fetch position)."""
        self._consumer.assign([self._tp(offset)])
        self.position = offset

    def poll(self, max_records: int | None = None, max_block: float | None = None) -> Polled:
        """One batch of at most batch_size records, fewer when a rate limit allows fewer.
        `max_block`: block at most this long in `consume` (the calling thread is shared,
        tasks/lanes.py); the rest of an idle poll's interval is returned as `wait_s`."""
        cpu0 = time.thread_time()
        wanted = self.spec.batch_size if max_records is None else min(max_records,
                                                                       self.spec.batch_size)
        interval = self._timeout
        timeout = interval if max_block is None else min(interval, max_block)
        messages = self._consumer.consume(max(wanted, 1), timeout)
        failed = [m for m in messages if m.error() is not None]
        errors = [str(e) for m in failed
                  if (e := m.error()) is not None and e.code() != KafkaError._PARTITION_EOF]
        if failed:
            messages = [m for m in messages if m.error() is None]
        rows = columns(messages)
        if rows.offsets:
            self.position = rows.offsets[-1] + 1
        self._timeout = next_poll_timeout(self._timeout, bool(messages))
        if messages:
            self._down_since = None   # the broker answers again
        now = time.monotonic()
        if now - self._high_at >= LAG_REFRESH_S:
            self._refresh_high()
            self._high_at = now
        high = max(self._high, self.position)  # never a negative lag from a stale watermark
        lag = high - self.position if self._high >= 0 else -1
        return Polled(rows, self.position, lag, errors, time.thread_time() - cpu0,
                      high=self._high, unreachable=self.unreachable,
                      wait_s=0.0 if messages else interval - timeout)

    def _refresh_high(self) -> None:
        """The partition's end: librdkafka's cached value while the broker answers fetches; while
        it seems unreachable, asked of the broker (an answer ends the outage)."""
        if self._down_since is None:
            _low, self._high = self._consumer.get_watermark_offsets(self._tp(), cached=True)
            return
        try:
            _low, high = self._consumer.get_watermark_offsets(self._tp(), timeout=PROBE_TIMEOUT)
        except KafkaException as exc:
            self._down_error = str(exc.args[0].str() if exc.args else exc)
            return
        self._high, self._down_since = high, None

    def commit(self, offset: int) -> None:
        """Synchronous commit of the next offset to read; raises Unavailable on failure."""
        try:
            self._consumer.commit(offsets=[self._tp(offset)], asynchronous=False)
        except KafkaException as exc:
            raise Unavailable(f"commit of offset {offset} failed: {exc}") from exc

    def committed(self) -> int:
        return self._consumer.committed([self._tp()], timeout=METADATA_TIMEOUT)[0].offset

    def close(self) -> None:
        self._consumer.close()
