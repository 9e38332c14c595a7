"""The committer's pure decisions (master/iceberg/rounds.py): the table's facts from its
snapshots, the fence, cutting and bounding a round's plan, partition records, stalled."""

from __future__ import annotations

import pytest
from pyiceberg.types import (
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    TimestamptzType,
)

from master.iceberg import rounds
from tasks.iceberg import chain
from tasks.iceberg.layout import ChunkReport, DataFileReport, summary_properties

T = "t"


def _report(partition: int, start: int, end: int, files: int = 1,
            written_at: float = 100.0) -> ChunkReport:
    return ChunkReport(T, partition, start, end,
                       tuple(DataFileReport(f"s3://b/t/data/{partition}-{start}-{i}.parquet", {},
                                            end - start, 10) for i in range(files)),
                       records=end - start, written_at=written_at)


def _snap(sid: int, parent: int | None, seq: int, summary: dict[str, str]) -> rounds.SnapshotFacts:
    return rounds.SnapshotFacts(sid, parent, seq, seq * 1000, summary)


# -- the table's facts ----------------------------------------------------------------------

def test_facts_walk_parents_past_snapshots_that_are_not_exportds() -> None:
    ours = summary_properties({(T, 0): 10, (T, 1): 4}, epoch=3, job="j")
    snaps = [_snap(1, None, 1, ours), _snap(2, 1, 2, {"added-files": "1"}),
             _snap(3, 2, 3, {"operation-by": "spark"})]
    facts = rounds.table_facts(snaps, current=3)
    assert facts.offsets == {(T, 0): 10, (T, 1): 4}
    assert facts.epoch == 3 and facts.exportd_snapshot_id == 1 and facts.snapshot_id == 3
    assert facts.last_commit_ms == 1000


def test_facts_take_the_newest_exportd_snapshot_when_parents_expired() -> None:
    old = summary_properties({(T, 0): 5}, epoch=2, job="j")
    new = summary_properties({(T, 0): 9}, epoch=4, job="j")
    snaps = [_snap(7, 6, 4, new), _snap(5, None, 2, old), _snap(8, 99, 5, {})]
    facts = rounds.table_facts(snaps, current=8)
    assert facts.offsets == {(T, 0): 9} and facts.epoch == 4


def test_facts_epoch_is_the_highest_any_snapshot_records() -> None:
    """A newer leader's snapshot that is not on the current line (a branch, a rollback)
    still deposes older leaders."""
    snaps = [_snap(1, None, 1, summary_properties({}, epoch=9, job="j")),
             _snap(2, None, 2, summary_properties({(T, 0): 3}, epoch=4, job="j"))]
    facts = rounds.table_facts(snaps, current=2)
    assert facts.epoch == 9 and facts.offsets == {(T, 0): 3}


def test_facts_of_a_table_without_commits() -> None:
    assert rounds.table_facts([], None) == rounds.TableFacts()


# -- the fence ------------------------------------------------------------------------------

@pytest.mark.parametrize(("ours", "table", "term", "refused"), [
    (5, None, None, False),          # first commit ever
    (5, 5, None, False),             # our own earlier commit
    (5, 4, None, False),             # a predecessor's
    (5, 6, None, True),              # a newer leader committed: we are deposed
    (5, 4, "suspended", True),       # our term is not confirmed
    (5, None, "ended", True),
])
def test_fence(ours: int, table: int | None, term: str | None, refused: bool) -> None:
    reason = rounds.fence(ours, table, term)
    assert bool(reason) is refused
    if term:
        assert reason == term
    elif refused:
        assert f"epoch {table}" in (reason or "")


# -- cutting and bounding a plan ------------------------------------------------------------

def test_cut_stops_a_partition_and_keeps_the_others() -> None:
    reports = [_report(0, 0, 10), _report(0, 10, 20), _report(0, 20, 30), _report(1, 5, 9)]
    plan = chain.plan({(T, 0): 0}, reports)
    cut = rounds.cut(plan, {(T, 0): 0}, {(T, 0): 10})
    assert [(r.partition, r.start) for r in cut.append] == [(0, 0), (1, 5)]
    assert [(r.partition, r.start) for r in cut.waiting] == [(0, 10), (0, 20)]
    assert cut.offsets == {(T, 0): 10, (T, 1): 9}


def test_cut_at_the_first_report_of_a_new_partition_records_no_offset() -> None:
    plan = chain.plan({}, [_report(2, 40, 50)])
    cut = rounds.cut(plan, {}, {(T, 2): 40})
    assert cut.append == () and cut.offsets == {}
    assert [r.start for r in cut.waiting] == [40]


def test_cut_at_a_known_partition_keeps_the_tables_offset() -> None:
    plan = chain.plan({(T, 0): 10}, [_report(0, 10, 20)])
    assert rounds.cut(plan, {(T, 0): 10}, {(T, 0): 10}).offsets == {(T, 0): 10}


def test_bound_takes_partitions_in_turn_and_whole_reports() -> None:
    reports = [_report(0, s, s + 1, files=2) for s in range(10)] + [_report(1, 0, 1, files=2)]
    plan = chain.plan({}, reports)
    stops = rounds.bound(plan, max_files=6)
    # 0:0, 1:0, 0:1 -> 6 files; partition 0 stops at its third report, partition 1 is done.
    assert stops == {(T, 0): 2}
    cut = rounds.cut(plan, {}, stops)
    assert sum(len(r.files) for r in cut.append) == 6
    assert cut.offsets == {(T, 0): 2, (T, 1): 1}


def test_bound_takes_at_least_one_report() -> None:
    plan = chain.plan({}, [_report(0, 0, 1, files=9), _report(0, 1, 2)])
    assert rounds.bound(plan, max_files=3) == {(T, 0): 1}


def test_bound_nothing_to_cut() -> None:
    plan = chain.plan({}, [_report(0, 0, 1)])
    assert rounds.bound(plan, max_files=10) == {}


# -- partition records ----------------------------------------------------------------------

def test_partition_values_in_the_specs_order() -> None:
    fields = [("ts_day", DateType()), ("user_bucket", IntegerType()), ("country", StringType())]
    values = {"country": "fr", "ts_day": "2024-01-02", "user_bucket": 7}
    assert rounds.partition_values(fields, values) == (19724, 7, "fr")
    assert rounds.partition_values(fields, {"country": None, "ts_day": 19724,
                                            "user_bucket": 0}) == (19724, 0, None)


def test_partition_values_of_an_unpartitioned_table() -> None:
    assert rounds.partition_values([], {}) == ()


@pytest.mark.parametrize(("kind", "raw", "value"), [
    (LongType(), 5, 5), (DoubleType(), 2, 2.0), (BooleanType(), True, True),
    (TimestamptzType(), "1970-01-01T00:00:01Z", 1_000_000),
    (TimestamptzType(), 42, 42),
])
def test_partition_value_types(kind: object, raw: object, value: object) -> None:
    assert rounds.partition_value(kind, raw) == value   # type: ignore[arg-type]


@pytest.mark.parametrize(("values", "problem"), [
    ({"kp": 1, "other": 2}, "'other' is not in the table's partition spec"),
    ({}, "'kp' is missing"),
    ({"kp": "3"}, "'kp': '3' is not an integer"),
    ({"kp": True}, "is not an integer"),
])
def test_partition_values_refused(values: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        rounds.partition_values([("kp", IntegerType())], values)


# -- visibility -----------------------------------------------------------------------------

def test_pending_counts_and_age() -> None:
    found = rounds.pending([_report(0, 0, 10, files=2, written_at=50.0),
                            _report(1, 0, 5, written_at=80.0)])
    assert (found.reports, found.files, found.records) == (2, 3, 15)
    assert found.age_s(now=110.0) == 60.0
    assert rounds.pending([]).age_s(now=1.0) == -1.0


def test_stalled_when_commits_fail_or_a_report_waits_too_long() -> None:
    assert rounds.stalled_reason(errors=0, last_error="", oldest_pending_age_s=29.0,
                                 commit_interval=1.0) == ""
    assert "limit 30s" in rounds.stalled_reason(errors=0, last_error="",
                                                oldest_pending_age_s=31.0, commit_interval=1.0)
    # 3 x a long interval
    assert rounds.stalled_reason(errors=0, last_error="", oldest_pending_age_s=100.0,
                                 commit_interval=60.0) == ""
    reason = rounds.stalled_reason(errors=2, last_error="catalog down",
                                   oldest_pending_age_s=-1.0, commit_interval=10.0)
    assert "2 in a row" in reason and "catalog down" in reason


# -- exportctl's rendering of the table block ---------------------------------------------------

def test_exportctl_table_lines() -> None:
    from tools.exportctl.format import WIDTH, explain_task, table_lines
    view = {"catalog": "dev", "namespace": "demo", "table": "logs", "exists": True,
            "commit_interval_s": 10.0, "last_commit_unix": 990.0, "snapshot_id": 42,
            "pending_records": 300, "pending_files": 3, "pending_reports": 2,
            "oldest_pending_age_s": 40.0, "consecutive_errors": 2,
            "last_error": "CommitFailedException: " + "x" * 120, "bad_reports": 1,
            "blocked": {"t/1": "chunk 10-12 of t/1 cannot be committed: long -> string"},
            "stalled_reason": "Iceberg commits of its table fail (2 in a row)"}
    text = "\n".join(table_lines(view, now=1000.0))
    assert text.startswith("table dev:demo.logs: last commit 10s ago, every 10s, snapshot 42")
    assert "pending: 300 records in 3 files (2 reports), oldest 40s" in text
    assert "commit errors: 2 in a row" in text and "blocked t/1: chunk 10-12" in text
    assert "unreadable reports: 1" in text and "stalled: Iceberg commits" in text
    assert table_lines({**view, "exists": False}, 0.0) == [
        "table dev:demo.logs: not created yet (no task has written)"]
    assert table_lines(None, 0.0) == []
    task = {"id": "j:t:1", "job": "j", "group": "g", "topic": "t", "partition": 1,
            "server": "s1", "state": "stalled", "generation": 1, "table": view}
    explained = explain_task(task, now=1000.0)
    assert "  table dev:demo.logs" in explained
    assert all(len(line) <= WIDTH for line in explained.splitlines())


def test_round_failure_and_a_hung_round_count_as_errors() -> None:
    assert rounds.round_failure(error="boom", refused="", term_current=True) == "boom"
    assert rounds.round_failure(error="", refused="newer epoch 7", term_current=True) == \
        "newer epoch 7"
    assert rounds.round_failure(error="", refused="term ended", term_current=False) == ""
    assert rounds.failures_now(errors=0, last_error="", round_started=None, now=100.0,
                               commit_interval=10.0) == (0, "")
    errors, why = rounds.failures_now(errors=0, last_error="", round_started=0.0, now=100.0,
                                      commit_interval=10.0)
    assert errors == 1 and "running for 100s" in why
    assert rounds.failures_now(errors=2, last_error="x", round_started=90.0, now=100.0,
                               commit_interval=10.0) == (2, "x")
