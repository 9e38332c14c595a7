"""The sink contract and the retry policy shared by sinks and the pipeline."""

from __future__ import annotations

import random
from typing import Protocol

from tasks.batching import Chunk
from tasks.transforms.batch import DeadRecord


class Sink(Protocol):
    async def write(self, chunk: Chunk) -> list[DeadRecord]:
        """Deliver a non-empty chunk. Returns the records the destination rejected for good
        (they go to dead-letter); raises SinkError when the chunk was not delivered."""
        ...

    async def close(self) -> None: ...


def backoff_delay(attempt: int, *, base: float = 0.2, cap: float = 30.0,
                  rand: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return (rand or random).uniform(0, ceiling)


def rejected(chunk: Chunk, reason: str) -> list[DeadRecord]:
    """Every record of a chunk, dead-lettered with one reason (e.g. an HTTP 400)."""
    rows = chunk.rows
    return [DeadRecord(offset, ts, item if isinstance(item, bytes) else repr(item).encode(), reason)
            for offset, ts, item in zip(rows.offsets, rows.timestamps, rows.values, strict=True)]
