"""The pure maintenance decisions (master/iceberg/selection.py): which partitions a round
compacts, which snapshots it expires, which data files and claims are orphans."""

from __future__ import annotations

from master.iceberg.selection import (
    FileFacts,
    SnapshotAge,
    expirable,
    orphan_files,
    pick_compactions,
    report_of_claim,
    stale_claims,
)
from tasks.iceberg.layout import claim_key, data_key, report_key

MB = 1024 * 1024


def files(partition: str, count: int, size: int, spec_id: int = 0) -> list[FileFacts]:
    return [FileFacts(f"s3://b/t/data/p={partition}/{i:04d}.parquet", size, 10, spec_id,
                      (partition,)) for i in range(count)]


def pick(all_files: list[FileFacts], *, min_files: int = 20, target: int = 128 * MB,
         max_bytes: int = 512 * MB, spec_id: int = 0) -> list[tuple[tuple[object, ...], int]]:
    return [(p.partition, len(p.files)) for p in
            pick_compactions(all_files, spec_id=spec_id, min_files=min_files,
                             target_file_bytes=target, max_bytes=max_bytes)]


# -- compaction ------------------------------------------------------------------------------

def test_a_partition_below_min_files_is_left_alone() -> None:
    assert pick(files("a", 19, MB)) == []
    assert pick(files("a", 20, MB)) == [(("a",), 20)]


def test_only_files_smaller_than_the_target_count() -> None:
    big = files("a", 30, 200 * MB)
    assert pick(big + files("a", 5, MB)) == []


def test_biggest_win_first() -> None:
    chosen = pick(files("a", 25, MB) + files("b", 100, MB) + files("c", 40, MB))
    assert [p for p, _ in chosen] == [("b",), ("c",), ("a",)]


def test_the_byte_budget_bounds_a_round() -> None:
    chosen = pick(files("a", 100, 4 * MB) + files("b", 50, 4 * MB), max_bytes=300 * MB)
    # a: 75 files fit in 300 MB, b: nothing left
    assert chosen == [(("a",), 75)]


def test_the_first_partition_always_progresses_beyond_a_tiny_budget() -> None:
    chosen = pick(files("a", 30, 10 * MB) + files("b", 30, 10 * MB), max_bytes=MB)
    assert chosen == [(("a",), 2)]


def test_smallest_files_are_taken_first() -> None:
    group = files("a", 10, 50 * MB) + files("a", 15, MB)
    picks = pick_compactions(group, spec_id=0, min_files=20, target_file_bytes=128 * MB,
                             max_bytes=40 * MB)
    assert len(picks) == 1 and all(f.size == MB for f in picks[0].files)


def test_no_win_no_rewrite() -> None:
    # two files of 100 MB make two 128 MB-ish files again: nothing gained
    assert pick(files("a", 2, 100 * MB), min_files=2) == []


def test_files_of_an_older_spec_are_not_compacted() -> None:
    assert pick(files("a", 50, MB, spec_id=0), spec_id=1) == []


# -- expiry ----------------------------------------------------------------------------------

NOW = 1_000_000.0


def snaps(ages_s: list[float]) -> list[SnapshotAge]:
    return [SnapshotAge(i + 1, int((NOW - age) * 1000)) for i, age in enumerate(ages_s)]


def test_expiry_keeps_the_last_and_young_ones() -> None:
    history = snaps([5000, 4000, 3000, 2000, 100, 50])   # ids 1..6, 6 is the newest
    assert expirable(history, current=6, protected=(), now=NOW, max_age_s=3600, keep_last=2,
                     limit=100) == [1, 2]


def test_expiry_keeps_keep_last_even_when_old() -> None:
    history = snaps([9000, 8000, 7000, 6000])
    assert expirable(history, current=4, protected=(), now=NOW, max_age_s=3600, keep_last=3,
                     limit=100) == [1]


def test_expiry_never_takes_the_current_or_a_protected_snapshot() -> None:
    history = snaps([9000, 8000, 7000, 6000])
    # the current snapshot is an old one (a rollback); 2 is protected (the newest exportd one)
    assert expirable(history, current=1, protected={2}, now=NOW, max_age_s=3600, keep_last=1,
                     limit=100) == [3]


def test_keep_last_follows_the_commit_order_not_the_clock() -> None:
    # three commits within one millisecond, the clock stepped back for the last one
    history = [SnapshotAge(30, 1000, 1), SnapshotAge(10, 1000, 2), SnapshotAge(20, 999, 3)]
    assert expirable(history, current=20, protected=(), now=NOW, max_age_s=0, keep_last=2,
                     limit=100) == [30]


def test_expiry_is_bounded_oldest_first() -> None:
    history = snaps([float(10_000 - i) for i in range(50)])
    assert expirable(history, current=50, protected=(), now=NOW, max_age_s=3600, keep_last=1,
                     limit=5) == [1, 2, 3, 4, 5]


# -- orphans ---------------------------------------------------------------------------------

GRACE = 1800.0


def test_orphan_is_unreferenced_unpending_and_old() -> None:
    old = NOW - 2 * GRACE
    listed = [("data/p=a/old.parquet", old), ("data/p=a/young.parquet", NOW - 10),
              ("data/p=a/pending.parquet", old), ("data/p=a/live.parquet", old),
              ("data/p=a/retained.parquet", old), ("metadata/00001.metadata.json", old),
              ("_exportd/reports/x.json", old)]
    # `retained` is named only by an older snapshot that is not expired yet: the caller reads
    # every live snapshot's manifests, so it is in `referenced`
    referenced = {"data/p=a/live.parquet", "data/p=a/retained.parquet"}
    assert orphan_files(listed, referenced=referenced, pending={"data/p=a/pending.parquet"},
                        reports=(), now=NOW, grace_s=GRACE, limit=100) \
        == ["data/p=a/old.parquet"]


def test_a_young_unreferenced_file_is_not_an_orphan() -> None:
    assert orphan_files([("data/f.parquet", NOW - GRACE + 1)], referenced=(), pending=(),
                        reports=(), now=NOW, grace_s=GRACE, limit=10) == []


def test_a_reported_chunk_file_is_not_an_orphan() -> None:
    key = data_key("kp=1", "events", 3, 100)
    assert orphan_files([(key, 0.0)], referenced=(), pending=(),
                        reports={report_key("events", 3, 100)}, now=NOW, grace_s=GRACE,
                        limit=10) == []
    assert orphan_files([(key, 0.0)], referenced=(), pending=(),
                        reports={report_key("events", 3, 200)}, now=NOW, grace_s=GRACE,
                        limit=10) == [key]


def test_url_encoded_partition_paths_match() -> None:
    listed = [("data/name=a%20b/f.parquet", 0.0)]
    assert orphan_files(listed, referenced={"data/name=a b/f.parquet"}, pending=(), reports=(),
                        now=NOW, grace_s=GRACE, limit=10) == []


def test_orphans_are_bounded_oldest_first() -> None:
    listed = [(f"data/{i:03d}.parquet", float(1000 - i)) for i in range(100)]
    assert orphan_files(listed, referenced=(), pending=(), reports=(), now=NOW, grace_s=GRACE,
                        limit=3) == ["data/099.parquet", "data/098.parquet", "data/097.parquet"]


def test_stale_claims() -> None:
    reported = claim_key("events", 1, 0)
    fenced = claim_key("events", 1, 500)
    young = claim_key("events", 2, 0)
    assert report_of_claim(reported) == report_key("events", 1, 0)
    assert report_of_claim("_exportd/reports/x.json") is None
    claims = [(reported, 0.0), (fenced, 0.0), (young, NOW - 5)]
    assert stale_claims(claims, reports={report_key("events", 1, 0)}, now=NOW, grace_s=GRACE,
                        limit=10) == [fenced]
