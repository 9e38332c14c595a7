"""Which chunk reports continue a table's chain of offsets. Pure.

Shared by the leader's committer (what to append in this round) and by a task (where to
resume). For each Kafka partition the table records the next offset to export; a report is
committed only when it starts exactly there, and then the next one from its end, and so on. A
report that starts before the table's offset is covered already (a retry, a zombie's late
write): never committed, deleted. One that starts after it, with no report bridging the gap,
waits: its predecessor is still being written, or it is a zombie's off-chain chunk that will be
an orphan once the chain passes it.

A partition the table has never recorded starts at its lowest reported start: every owner
starts at a chain point (the pipeline commits a resolved `latest` start to Kafka before its
first write), so the lowest report is the first chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tasks.iceberg.layout import ChunkReport, Offsets


@dataclass(frozen=True)
class ChainPlan:
    """One commit round: the reports to append (in chain order per partition), the offsets
    the table records after it, the reports already covered (to delete), and those waiting."""

    append: tuple[ChunkReport, ...] = ()
    offsets: Offsets = field(default_factory=dict)
    covered: tuple[ChunkReport, ...] = ()
    waiting: tuple[ChunkReport, ...] = ()

    @property
    def records(self) -> int:
        return sum(r.records for r in self.append)


def _by_partition(reports: Iterable[ChunkReport]) -> dict[tuple[str, int], list[ChunkReport]]:
    out: dict[tuple[str, int], list[ChunkReport]] = {}
    for report in reports:
        out.setdefault((report.topic, report.partition), []).append(report)
    for found in out.values():
        found.sort(key=lambda r: (r.start, r.end))
    return out


def plan(table_offsets: Mapping[tuple[str, int], int],
         reports: Iterable[ChunkReport]) -> ChainPlan:
    """What one commit round appends, given the table's offsets and every report found."""
    append: list[ChunkReport] = []
    covered: list[ChunkReport] = []
    waiting: list[ChunkReport] = []
    offsets: Offsets = dict(table_offsets)
    for tp, found in sorted(_by_partition(reports).items()):
        at = offsets.get(tp, found[0].start)
        by_start: dict[int, ChunkReport] = {}
        for report in found:
            if report.start < at:
                covered.append(report)
            else:
                # Two reports with one start cannot exist (create-only keys); keep the first.
                by_start.setdefault(report.start, report)
        while at in by_start:
            report = by_start.pop(at)
            append.append(report)
            at = report.end
        waiting.extend(sorted(by_start.values(), key=lambda r: r.start))
        if tp in offsets or at != found[0].start:
            offsets[tp] = at
    return ChainPlan(tuple(append), offsets, tuple(covered), tuple(waiting))


def resume_offset(table_offset: int | None, reports: Iterable[ChunkReport],
                  fallback: int) -> int:
    """Where a task of one partition resumes: the end of the chain that starts at the table's
    offset (or, before the first commit, at the lowest report), else `fallback` (its Kafka
    committed offset or the job's start) when nothing was ever written."""
    ordered = sorted(reports, key=lambda r: r.start)
    if table_offset is None:
        if not ordered:
            return fallback
        table_offset = ordered[0].start
    by_start = {r.start: r for r in reversed(ordered)}
    at = table_offset
    for _ in range(len(by_start)):
        report = by_start.get(at)
        if report is None:
            break
        at = report.end
    return at
