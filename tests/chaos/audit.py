"""The chaos test's record-level audit: pure functions from what the source holds and what a sink
holds to a report that names every duplicated and lost id.

Per sink: the count and the number of distinct ids against the source's; the ids exported more
than once (with their copies) and the ids never exported, by value; ids exported that the source
does not hold at that (partition, offset). For S3 and file sinks also the chain, per partition:
the objects sorted by start offset (their key) must each start where the previous one ended
(its `end-offset` metadata), from the partition's first offset to its end, and every record must
lie inside its object's range. An object without end-offset metadata (the code before issue 14)
breaks the chain, but the ids still tell what was lost or doubled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

SHOWN = 10   # ids and problems listed by value in a summary, per kind


@dataclass(frozen=True)
class Record:
    """One record as a sink holds it: its id and the source coordinates it carries."""

    id: str
    partition: int
    offset: int
    where: str           # the object, file or output partition holding it


@dataclass(frozen=True)
class Piece:
    """One object or file: [start, end) of its partition; end None when it has no metadata."""

    name: str
    partition: int
    start: int
    end: int | None


@dataclass(frozen=True)
class Report:
    sink: str
    expected: int
    count: int
    distinct: int
    duplicated: dict[str, int]       # id -> copies (> 1)
    lost: list[str]
    foreign: list[str]               # "id@p:offset" the source does not hold there
    chain: list[str]                 # chain problems; empty for a sink without objects

    @property
    def ok(self) -> bool:
        return (self.count == self.expected == self.distinct and not self.duplicated
                and not self.lost and not self.foreign and not self.chain)

    def summary(self) -> str:
        extra = sum(self.duplicated.values()) - len(self.duplicated)
        lines = [f"{self.sink}: {'OK' if self.ok else 'FAILED'} — {self.count} records, "
                 f"{self.distinct} distinct, {self.expected} produced; "
                 f"{len(self.duplicated)} ids duplicated ({extra} extra copies), "
                 f"{len(self.lost)} lost, {len(self.foreign)} foreign, "
                 f"{len(self.chain)} chain problems"]
        if self.duplicated:
            shown = sorted(self.duplicated.items())[:SHOWN]
            lines.append("  duplicated: " + ", ".join(f"{i} x{n}" for i, n in shown))
        if self.lost:
            lines.append("  lost: " + ", ".join(sorted(self.lost)[:SHOWN]))
        if self.foreign:
            lines.append("  foreign: " + ", ".join(sorted(self.foreign)[:SHOWN]))
        lines += [f"  chain: {problem}" for problem in self.chain[:SHOWN]]
        if len(self.chain) > SHOWN:
            lines.append(f"  chain: ... {len(self.chain) - SHOWN} more")
        return "\n".join(lines)


def audit(sink: str, source_ids: Mapping[tuple[int, int], str],
          bounds: Mapping[int, tuple[int, int]], records: Sequence[Record],
          pieces: Sequence[Piece] | None = None) -> Report:
    """The report of one sink. `source_ids`: id by (partition, offset); `bounds`: each
    partition's [first, end) offsets; `pieces`: the sink's objects (None: no chain to check)."""
    copies = Counter(r.id for r in records)
    expected = set(source_ids.values())
    foreign = [f"{r.id}@{r.partition}:{r.offset}" for r in records
               if source_ids.get((r.partition, r.offset)) != r.id]
    chain = [] if pieces is None else chain_problems(pieces, bounds, records)
    return Report(
        sink=sink, expected=len(source_ids), count=len(records), distinct=len(copies),
        duplicated={i: n for i, n in copies.items() if n > 1},
        lost=sorted(expected - set(copies)), foreign=foreign, chain=chain)


def chain_problems(pieces: Iterable[Piece], bounds: Mapping[int, tuple[int, int]],
                   records: Iterable[Record] = ()) -> list[str]:
    """Gaps, overlaps, missing end offsets and records outside their object, per partition."""
    problems: list[str] = []
    by_partition: dict[int, list[Piece]] = {p: [] for p in bounds}
    for piece in pieces:
        by_partition.setdefault(piece.partition, []).append(piece)
    for partition, mine in sorted(by_partition.items()):
        first, end = bounds.get(partition, (0, 0))
        mine.sort(key=lambda piece: (piece.start, piece.name))
        missing = [piece.name for piece in mine if piece.end is None]
        if missing:
            problems.append(f"partition {partition}: {len(missing)} of {len(mine)} objects "
                            f"have no end-offset metadata (first: {missing[0]})")
            continue
        cursor = first
        for piece in mine:
            assert piece.end is not None
            if piece.start > cursor:
                problems.append(f"partition {partition}: gap [{cursor}, {piece.start}) before "
                                f"{piece.name}")
            elif piece.start < cursor:
                problems.append(f"partition {partition}: overlap [{piece.start}, {cursor}) at "
                                f"{piece.name}")
            if piece.end < piece.start:
                problems.append(f"partition {partition}: {piece.name} ends at {piece.end}, "
                                f"before its start")
            cursor = piece.end
        if cursor != end:
            problems.append(f"partition {partition}: the chain ends at {cursor}, the source at "
                            f"{end}")
    ranges = {piece.name: piece for piece in pieces_list(by_partition)}
    outside = [r for r in records if r.where in ranges and not _inside(r, ranges[r.where])]
    if outside:
        r = outside[0]
        problems.append(f"{len(outside)} records lie outside their object's range (first: "
                        f"{r.id}@{r.partition}:{r.offset} in {r.where})")
    return problems


def pieces_list(by_partition: Mapping[int, Sequence[Piece]]) -> list[Piece]:
    return [piece for mine in by_partition.values() for piece in mine]


def _inside(record: Record, piece: Piece) -> bool:
    return (piece.end is None or piece.start <= record.offset < piece.end) \
        and record.partition == piece.partition
