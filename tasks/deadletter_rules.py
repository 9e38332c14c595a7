"""Dead-letter decisions, pure: what fits a destination, and which dead letters are still due.

Size: a Kafka destination takes messages up to a limit (the producer's `message.max.bytes`, the
topic's `max.message.bytes`). A dead letter whose value does not fit is cut to `value_budget`
bytes — the limit less the key, the headers and `HEADROOM` for the record framing and the
`truncated` header itself — and says so (`fitted`): the `truncated` header names what was kept,
the original size and the limit; `original_size` is on every dead letter. A record is never
refused for its size: a poison record cannot wedge its partition. Nor can one too large for a
Kafka sink's topic (`too_large_for_sink`): it becomes a dead letter of the sink's stream.

Idempotence: dead letters come in two streams per task, each in offset order — records the
transforms refused (`Stage.TRANSFORM`, cut by the push stage batch by batch) and records the
sink refused (`Stage.SINK`, chunk by chunk, HTTP 4xx). `Marks` holds, per stream, the offset
below which every dead letter is written already; it is stored with the dead letters atomically
(tasks/deadletter.py) and read back by the next owner, which `pending` lets write only what lies
at or beyond its stream's mark. A restart (or any later owner) re-reads records from the
committed offset, which may lie far behind the marks: their dead letters are not written twice.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.transforms.batch import DeadRecord

HEADROOM = 2048              # record batch + record framing, and the `truncated` header
SINK_FRAMING = 512           # a Kafka sink's message: record batch + record framing, no key
MIN_VALUE_BUDGET = 1024      # a limit halved after refusals goes no lower than this
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000   # librdkafka's message.max.bytes
MARKS_FORMAT = 1

Header = tuple[str, bytes]


class Stage(enum.StrEnum):
    TRANSFORM = "transform"   # parse, schema or expression failures
    SINK = "sink"             # refused by the sink (HTTP 4xx)


def max_message_bytes(configured: int | None, topic: int | None) -> int:
    """The destination's limit: the smaller of the producer's `message.max.bytes` as the
    operator configured it and the topic's `max.message.bytes`, of those known; librdkafka's
    default when neither is."""
    known = [v for v in (configured, topic) if v is not None and v > 0]
    return min(known) if known else DEFAULT_MAX_MESSAGE_BYTES


def too_large_for_sink(size: int, limit: int) -> bool:
    """A record of `size` bytes can never be one message of a Kafka sink taking `limit`: it is
    dead-lettered (stream `sink`) before the chunk's transaction, instead of failing it forever."""
    return size + SINK_FRAMING > limit


def value_budget(limit: int, key: bytes, headers: Sequence[Header]) -> int:
    """The most value bytes a message with this key and these headers may carry."""
    framing = HEADROOM + len(key) + sum(len(k) + len(v) + 8 for k, v in headers)
    return max(0, limit - framing)


@dataclass(frozen=True, slots=True)
class Fitted:
    value: bytes
    headers: tuple[Header, ...]   # original_size, and truncated when it was cut


def fitted(value: bytes, budget: int, *, limit: int, destination: str) -> Fitted:
    """`value`, cut to `budget` bytes if it is longer, with the headers that say so."""
    size: Header = ("original_size", str(len(value)).encode())
    if len(value) <= budget:
        return Fitted(value, (size,))
    kept = value[:budget]
    note = (f"kept {len(kept)} of {len(value)} bytes: {destination} takes messages of at most "
            f"{limit} bytes")
    return Fitted(kept, (size, ("truncated", note.encode())))


def halved(budget: int) -> int:
    """The next value budget after the destination refused a message as too large anyway (its
    limit is lower than we were told): half, down to MIN_VALUE_BUDGET."""
    return max(MIN_VALUE_BUDGET, budget // 2)


@dataclass(frozen=True, slots=True)
class Marks:
    """Per stream, the offset below which every dead letter is written (0: none yet)."""

    transform: int = 0
    sink: int = 0

    def of(self, stage: Stage) -> int:
        return self.transform if stage is Stage.TRANSFORM else self.sink

    def after(self, stage: Stage, records: Sequence[DeadRecord]) -> Marks:
        """The marks once `records` (of `stage`) are written."""
        if not records:
            return self
        end = max(r.offset for r in records) + 1
        if stage is Stage.TRANSFORM:
            return Marks(max(self.transform, end), self.sink)
        return Marks(self.transform, max(self.sink, end))

    def metadata(self) -> str:
        """The marks as offset-commit metadata (tasks/deadletter.py stores them so)."""
        return json.dumps({"v": MARKS_FORMAT, "transform": self.transform, "sink": self.sink},
                          separators=(",", ":"))

    @classmethod
    def from_metadata(cls, metadata: str | None) -> Marks:
        """Marks stored by `metadata()`; none stored (or unreadable) is no mark at all."""
        if not metadata:
            return cls()
        try:
            data = json.loads(metadata)
            return cls(max(0, int(data["transform"])), max(0, int(data["sink"])))
        except (ValueError, TypeError, KeyError):
            return cls()


def pending(records: Sequence[DeadRecord], stage: Stage, marks: Marks) -> list[DeadRecord]:
    """The dead letters still to write: those at or beyond their stream's mark."""
    mark = marks.of(stage)
    return [r for r in records if r.offset >= mark]
