"""The leader's table-maintenance decisions, pure: which partitions a round compacts, which
snapshots it expires, which data files and claims are orphans. No I/O, no clock: the caller
(master/iceberg/maintenance.py) reads the table's manifests and the warehouse listing, passes
`now`, and carries out what these return.

- `pick_compactions`: partitions of the current snapshot (of the table's current partition
  spec) with at least `min_files` files smaller than the target, biggest win (files removed)
  first; a partition's smallest files are taken while the round's byte budget lasts, the first
  partition at least two files, so a round always makes progress and never reads much more
  than `max_bytes`.
- `expirable`: snapshots older than the retention's age, never the current one, a protected
  one (branch and tag heads, the newest exportd snapshot) or one of the `keep_last` newest;
  oldest first, at most `limit`.
- `orphan_files`: a file below `data/` that no live snapshot reads (the caller passes the
  live entries of every retained snapshot's manifests: a file an older, not yet expired
  snapshot still reads is not an orphan, though the current one deleted it), that
  no pending report names (nor any report that exists: a chunk reported since the committer
  listed), and that is older than the grace by its storage modification time.
- `stale_claims`: a claim older than the grace whose report does not exist (its owner was
  fenced before it reported, or the chunk is committed and its report deleted).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from tasks.iceberg.layout import CLAIMS_DIR, DATA_DIR, REPORTS_DIR

MIN_FILES_PER_PICK = 2


@dataclass(frozen=True)
class FileFacts:
    """One live data file of the current snapshot."""

    path: str
    size: int
    records: int
    spec_id: int
    partition: tuple[Hashable, ...]   # the partition record's values


@dataclass(frozen=True)
class CompactionPick:
    """Files of one partition to rewrite into target-size files."""

    spec_id: int
    partition: tuple[Hashable, ...]
    files: tuple[FileFacts, ...]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)


def outputs_for(size: int, target: int) -> int:
    """How many target-size files `size` bytes of input become (at least one)."""
    return max(1, math.ceil(size / target))


def pick_compactions(files: Iterable[FileFacts], *, spec_id: int, min_files: int,
                     target_file_bytes: int, max_bytes: int) -> list[CompactionPick]:
    """The partitions (of spec `spec_id`) to compact this round, biggest win first, within
    `max_bytes` of input (the first pick takes at least two files even beyond it)."""
    small: dict[tuple[Hashable, ...], list[FileFacts]] = {}
    for f in files:
        if f.spec_id == spec_id and f.size < target_file_bytes:
            small.setdefault(f.partition, []).append(f)

    def win(group: list[FileFacts]) -> int:
        return len(group) - outputs_for(sum(f.size for f in group), target_file_bytes)

    groups = [(win(g), len(g), repr(p), p, g) for p, g in small.items() if len(g) >= min_files]
    groups.sort(key=lambda item: (-item[0], -item[1], item[2]))
    picks: list[CompactionPick] = []
    budget = max_bytes
    for gain, _, _, partition, group in groups:
        if gain < 1:
            continue
        taken: list[FileFacts] = []
        used = 0
        for f in sorted(group, key=lambda item: (item.size, item.path)):
            if used + f.size > budget and (picks or len(taken) >= MIN_FILES_PER_PICK):
                break
            taken.append(f)
            used += f.size
        if len(taken) < MIN_FILES_PER_PICK or win(taken) < 1:
            continue
        picks.append(CompactionPick(spec_id, partition, tuple(taken)))
        budget -= used
        if budget <= 0:
            break
    return picks


@dataclass(frozen=True)
class SnapshotAge:
    snapshot_id: int
    timestamp_ms: int
    sequence: int = 0    # the commit order (timestamps of quick commits can tie or step back)


def expirable(snapshots: Iterable[SnapshotAge], *, current: int | None,
              protected: Collection[int], now: float, max_age_s: float, keep_last: int,
              limit: int) -> list[int]:
    """Snapshot ids to expire this round, oldest first, at most `limit`."""
    ordered = sorted(snapshots, key=lambda s: (s.sequence, s.timestamp_ms, s.snapshot_id),
                     reverse=True)
    keep = {s.snapshot_id for s in ordered[:keep_last]} | set(protected)
    if current is not None:
        keep.add(current)
    cutoff_ms = (now - max_age_s) * 1000.0
    old = [s for s in reversed(ordered) if s.snapshot_id not in keep and s.timestamp_ms < cutoff_ms]
    return [s.snapshot_id for s in old[:max(0, limit)]]


def _forms(key: str) -> set[str]:
    return {key, unquote(key)}


def _stem(key: str, ext: str) -> str | None:
    base = key.rsplit("/", 1)[-1]
    return base[:-len(ext)] if base.endswith(ext) else None


def orphan_files(listed: Iterable[tuple[str, float]], *, referenced: Collection[str],
                 pending: Collection[str], reports: Collection[str], now: float,
                 grace_s: float, limit: int) -> list[str]:
    """Keys (relative to the table location, (key, modified) pairs from the listing) of data
    files to delete, at most `limit`, oldest first. `referenced` and `pending` are keys too;
    a key matches in its listed or its URL-decoded form. `reports` are the report keys that
    exist: a task's data file (`<topic>+<p>+<start>.parquet`) whose chunk has a report is kept
    even when the committer's pending set predates that report."""
    known: set[str] = set()
    for key in (*referenced, *pending):
        known |= _forms(key)
    chunks = {stem for stem in (_stem(r, ".json") for r in reports) if stem is not None}
    prefix = f"{DATA_DIR}/"
    found = [(modified, key) for key, modified in listed
             if key.startswith(prefix) and now - modified > grace_s
             and not (_forms(key) & known) and _stem(key, ".parquet") not in chunks]
    found.sort()
    return [key for _, key in found[:max(0, limit)]]


def report_of_claim(key: str) -> str | None:
    """The report key of a claim key, None for anything that is not a claim."""
    head = f"{CLAIMS_DIR}/"
    if not key.startswith(head) or not key.endswith(".claim"):
        return None
    return f"{REPORTS_DIR}/{key[len(head):-len('.claim')]}.json"


def stale_claims(claims: Iterable[tuple[str, float]], *, reports: Collection[str], now: float,
                 grace_s: float, limit: int) -> list[str]:
    """Claim keys to delete (older than the grace, their report absent), at most `limit`."""
    found = sorted((modified, key) for key, modified in claims
                   if (report := report_of_claim(key)) is not None
                   and report not in reports and now - modified > grace_s)
    return [key for _, key in found[:max(0, limit)]]
