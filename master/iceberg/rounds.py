"""The leader's Iceberg commit decisions, pure: what a table's snapshots say, whether this
leader may commit, how a round's chain plan is cut, a data file's partition record, what is
pending and when a table is stalled.

The I/O of a round (master/iceberg/committer.py) calls these and only translates: it reads the
table's snapshots and the reports, asks `fence`, cuts the plan where a file cannot be taken
(`cut`), builds partition records with `partition_values`, and summarises with `pending` and
`stalled_reason`. Times are passed in (`now`), never read here.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.types import (
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

from tasks.iceberg.chain import ChainPlan
from tasks.iceberg.layout import ChunkReport, Offsets, epoch_from_summary, offsets_from_summary

# A table's commits are late when its oldest pending report is older than this many commit
# intervals (and at least STALL_FLOOR_S seconds).
STALL_INTERVALS = 3.0
STALL_FLOOR_S = 30.0


@dataclass(frozen=True)
class SnapshotFacts:
    """What the committer needs of one snapshot (from pyiceberg's metadata)."""

    snapshot_id: int
    parent_id: int | None
    sequence: int
    timestamp_ms: int
    summary: Mapping[str, str]


@dataclass(frozen=True)
class TableFacts:
    """The table's exportd state: its offsets (from the newest snapshot of exportd's on the
    current snapshot's line), the highest exportd epoch any snapshot records, and the current
    snapshot."""

    offsets: Offsets = field(default_factory=dict)
    epoch: int | None = None
    snapshot_id: int | None = None
    exportd_snapshot_id: int | None = None
    last_commit_ms: int | None = None


def table_facts(snapshots: Sequence[SnapshotFacts], current: int | None) -> TableFacts:
    """Walk from the current snapshot through its parents until a snapshot of exportd's
    (`offsets_from_summary` not None). When the line ends without one (parents expired) but
    some snapshot of exportd's is still in the metadata, the newest of them (by sequence
    number) is taken: its offsets are never ahead of the table. The epoch is the highest any
    snapshot records: a leader below it is deposed."""
    by_id = {s.snapshot_id: s for s in snapshots}
    epochs = [e for e in (epoch_from_summary(s.summary) for s in snapshots) if e is not None]
    epoch = max(epochs) if epochs else None
    found: SnapshotFacts | None = None
    at = current
    for _ in range(len(by_id) + 1):
        snap = by_id.get(at) if at is not None else None
        if snap is None:
            break
        if offsets_from_summary(snap.summary) is not None:
            found = snap
            break
        at = snap.parent_id
    if found is None:
        ours = [s for s in snapshots if offsets_from_summary(s.summary) is not None]
        found = max(ours, key=lambda s: s.sequence) if ours else None
    if found is None:
        return TableFacts(epoch=epoch, snapshot_id=current)
    return TableFacts(offsets=offsets_from_summary(found.summary) or {}, epoch=epoch,
                      snapshot_id=current, exportd_snapshot_id=found.snapshot_id,
                      last_commit_ms=found.timestamp_ms)


def fence(our_epoch: int, table_epoch: int | None, term_refusal: str | None) -> str | None:
    """Why this leader must not commit now (None: it may). `term_refusal` is the master's own
    answer (its term is suspended, ended, or no longer the current leadership); a table whose
    snapshots record a higher epoch was committed by a newer leader: we are deposed."""
    if term_refusal:
        return term_refusal
    if table_epoch is not None and table_epoch > our_epoch:
        return (f"the table was committed by epoch {table_epoch}, newer than ours "
                f"({our_epoch}): another leader commits it (or another cluster with a fresh "
                "ZooKeeper root writes this table)")
    return None


def cut(plan: ChainPlan, table_offsets: Mapping[tuple[str, int], int],
        stops: Mapping[tuple[str, int], int]) -> ChainPlan:
    """The plan without, for each partition in `stops`, the reports from that start on (a file
    that cannot be taken, or the round's bound): those wait, and the partition's offset is the
    end of the last report kept (or what the table had)."""
    append: list[ChunkReport] = []
    waiting = list(plan.waiting)
    offsets = dict(plan.offsets)
    for tp in stops:
        if tp in table_offsets:
            offsets[tp] = table_offsets[tp]
        else:
            offsets.pop(tp, None)
    for report in plan.append:
        tp = (report.topic, report.partition)
        stop = stops.get(tp)
        if stop is not None and report.start >= stop:
            waiting.append(report)
            continue
        append.append(report)
        if stop is not None:
            offsets[tp] = report.end
    waiting.sort(key=lambda r: (r.topic, r.partition, r.start))
    return ChainPlan(tuple(append), offsets, plan.covered, tuple(waiting))


def bound(plan: ChainPlan, max_files: int) -> dict[tuple[str, int], int]:
    """Stops (for `cut`) that keep a round to about `max_files` data files: whole reports in
    chain order, every partition's chain taken in turn so one busy partition does not starve
    the others; at least one report."""
    chains: dict[tuple[str, int], list[ChunkReport]] = {}
    for report in plan.append:
        chains.setdefault((report.topic, report.partition), []).append(report)
    taken: dict[tuple[str, int], int] = dict.fromkeys(chains, 0)
    files = 0
    progress = True
    while progress:
        progress = False
        for tp, chain in sorted(chains.items()):
            i = taken[tp]
            if i >= len(chain):
                continue
            size = len(chain[i].files)
            if files and files + size > max_files:
                continue
            files += size
            taken[tp] = i + 1
            progress = True
    return {tp: chain[taken[tp]].start for tp, chain in chains.items()
            if taken[tp] < len(chain)}


# -- partition records ----------------------------------------------------------------------

_EPOCH_DAY = dt.date(1970, 1, 1)
_EPOCH_TS = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _micros(value: Any) -> int:
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        delta = parsed - _EPOCH_TS
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return _int(value)


def partition_value(kind: IcebergType, value: Any) -> Any:
    """A report's JSON partition value as pyiceberg holds it in a partition record for a field
    whose result type is `kind` (dates as days, timestamps as microseconds, ISO strings
    accepted for both). ValueError when it does not fit."""
    if value is None:
        return None
    if isinstance(kind, BooleanType):
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not a boolean")
        return value
    if isinstance(kind, IntegerType | LongType | TimeType):
        return _int(value)
    if isinstance(kind, FloatType | DoubleType):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{value!r} is not a number")
        return float(value)
    if isinstance(kind, StringType):
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string")
        return value
    if isinstance(kind, DateType):
        if isinstance(value, str):
            return (dt.date.fromisoformat(value) - _EPOCH_DAY).days
        return _int(value)
    if isinstance(kind, TimestampType | TimestamptzType):
        return _micros(value)
    if isinstance(kind, DecimalType):
        try:
            return decimal.Decimal(str(value))
        except decimal.InvalidOperation as exc:
            raise ValueError(f"{value!r} is not a decimal") from exc
    if isinstance(kind, UUIDType):
        return uuid.UUID(str(value))
    raise ValueError(f"partition values of type {kind} are not supported")


def partition_values(fields: Sequence[tuple[str, IcebergType]],
                     values: Mapping[str, Any]) -> tuple[Any, ...]:
    """The partition record of a data file: the report's values in the spec's field order
    (`fields`: each partition field's name and result type). ValueError when a field is
    missing, an unknown one is given, or a value does not fit its type."""
    names = [name for name, _ in fields]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"partition field {unknown[0]!r} is not in the table's partition spec "
                         f"({', '.join(names) or 'unpartitioned'})")
    out = []
    for name, kind in fields:
        if name not in values:
            raise ValueError(f"partition field {name!r} is missing from the report")
        try:
            out.append(partition_value(kind, values[name]))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"partition field {name!r}: {exc}") from exc
    return tuple(out)


# -- visibility -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Pending:
    """Reports found but not (yet) in the table: waiting for a predecessor, cut from this
    round, or left by a commit that failed."""

    reports: int = 0
    files: int = 0
    records: int = 0
    oldest_written_at: float | None = None

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.oldest_written_at) if self.oldest_written_at is not None \
            else -1.0


def pending(reports: Iterable[ChunkReport]) -> Pending:
    found = list(reports)
    if not found:
        return Pending()
    return Pending(reports=len(found), files=sum(len(r.files) for r in found),
                   records=sum(r.records for r in found),
                   oldest_written_at=min(r.written_at for r in found))


def stall_after(commit_interval: float) -> float:
    return max(STALL_INTERVALS * commit_interval, STALL_FLOOR_S)


def stalled_reason(*, errors: int, last_error: str, oldest_pending_age_s: float,
                   commit_interval: float) -> str:
    """Why the table's commits are stalled ('' when they are not): the last rounds failed, or
    a report has waited longer than `stall_after(commit_interval)`."""
    if errors > 0:
        return (f"Iceberg commits of its table fail ({errors} in a row): "
                f"{last_error or 'no reason given'}")
    limit = stall_after(commit_interval)
    if oldest_pending_age_s > limit:
        return (f"a chunk written {oldest_pending_age_s:.0f}s ago is not yet committed to its "
                f"Iceberg table (limit {limit:.0f}s): its predecessor is missing or the leader "
                "cannot commit")
    return ""


def round_failure(*, error: str, refused: str, term_current: bool) -> str:
    """What a round's result counts as a commit error ('' none). A refusal because this term
    is ending is not the table's fault; one because the table records a newer epoch is
    (another leader or cluster commits it)."""
    return error or (refused if term_current else "")


def failures_now(*, errors: int, last_error: str, round_started: float | None, now: float,
                 commit_interval: float) -> tuple[int, str]:
    """The table's failures as of `now`: a round running longer than
    `stall_after(commit_interval)` counts as one (the catalog or the warehouse does not
    answer), so a hung round turns the table stalled in time."""
    if round_started is not None and now - round_started > stall_after(commit_interval):
        return max(errors, 1), (f"a commit round has been running for {now - round_started:.0f}s"
                                " (the catalog or the warehouse does not answer)")
    return errors, last_error
