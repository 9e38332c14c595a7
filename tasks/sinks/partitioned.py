"""Exactly-once for chunks whose records go to several directories (tasks/partitioning.py).

A chained sink's chunk is one file named by its start offset; a taken name tells a writer how far
the winner got (KeyTaken). A partitioned chunk is several files, one per directory, and two
owners may cut the chunk at the same start with different ends (`max_seconds` is wall-clock), so
the names of the files alone cannot say which records a winner covered. So the chunk is claimed
first:

1. A **claim** object `_exportd/claims/<topic>+<partition>+<start>.claim` (below the sink's
   prefix or directory; `_`-prefixed, so Hive-style readers skip it) is created create-only with
   the chunk's end offset. Whoever creates it decides the chunk: [start, end).
2. Then each directory's file, named `<dir>/<topic>+<partition>+<start>.<ext>`, create-only; a
   file that exists already is the same chunk's (same records, same grouping, same bytes) written
   before: done.
3. A claim found taken with our end: our own earlier try, or a predecessor that cut the chunk the
   same way; the files are (re)written as in 2. Taken with another end: `ChunkClaimed`, and the
   pipeline reads the chunk again from its start and cuts it exactly at the claimed end
   (tasks/pipeline.py), then writes the same files. So a fenced owner that claimed a chunk and
   wrote only some of its files is completed by its successor, and nothing is written twice.

A store without conditional writes makes every claim succeed (the files are replaced, as for
unpartitioned chunks there): exactly-once then rests on the lease alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.batching import Chunk
from tasks.formats import Encoded
from tasks.naming import file_name
from tasks.partitioning import PathRenderer, group
from tasks.transforms.batch import DeadRecord

CLAIMS_DIR = "_exportd/claims"


class ChunkClaimed(Exception):
    """Another owner claimed the chunk starting at this offset, up to `end_offset` (which is
    not this chunk's end): read from the start again and cut there."""

    def __init__(self, key: str, start_offset: int, end_offset: int) -> None:
        super().__init__(f"{key} claims offsets {start_offset}-{end_offset}")
        self.key, self.start_offset, self.end_offset = key, start_offset, end_offset


def claim_name(topic: str, partition: int, start_offset: int) -> str:
    return f"{CLAIMS_DIR}/{file_name(topic, partition, start_offset, 'claim')}"


def split(chunk: Chunk, renderer: PathRenderer,
          ext: str) -> tuple[list[tuple[str, list[Encoded]]], list[DeadRecord]]:
    """The chunk's files (relative name, items) in name order, and the records whose directory
    could not be made (dead letters)."""
    rows = chunk.rows
    groups, failed = group(rows.values, rows.timestamps, renderer.path)
    name = file_name(renderer.topic, renderer.partition, chunk.start_offset, ext)
    files = [(f"{directory}/{name}" if directory else name, [rows.values[i] for i in indexes])
             for directory, indexes in sorted(groups.items())]
    dead = [DeadRecord(rows.offsets[i], rows.timestamps[i], _raw(rows.values[i]), reason)
            for i, reason in sorted(failed.items())]
    return files, dead


def _raw(item: Encoded) -> bytes:
    return item if isinstance(item, bytes) else repr(item).encode()


def claim_conflict(key: str, chunk: Chunk, winner_end: int | None) -> ChunkClaimed | None:
    """What a taken claim means for `chunk`: None to go on writing its files (our end, or a
    claim without an end: a replaced one), else ChunkClaimed to re-cut."""
    if winner_end is None or winner_end == chunk.end_offset:
        return None
    return ChunkClaimed(key, chunk.start_offset, winner_end)


def joined(prefix: str, names: Sequence[str]) -> str:
    return "/".join(part.strip("/") for part in (prefix, *names) if part.strip("/"))
