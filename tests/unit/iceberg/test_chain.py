"""The chain of chunk reports: what a commit round appends and where a task resumes."""

from __future__ import annotations

from tasks.iceberg.chain import plan, resume_offset
from tasks.iceberg.layout import (
    ChunkReport,
    DataFileReport,
    offsets_from_summary,
    parse_report_name,
    report_key,
    summary_properties,
)


def report(start: int, end: int, *, topic: str = "t.x", partition: int = 0) -> ChunkReport:
    files = (DataFileReport(f"s3://b/data/{start}.parquet", {"day": 19000}, end - start, 10),)
    return ChunkReport(topic, partition, start, end, files, end - start, 1.0, "w")


def test_round_appends_the_contiguous_run_from_the_table_offset() -> None:
    got = plan({("t.x", 0): 100}, [report(150, 200), report(100, 150), report(250, 300),
                                    report(50, 100)])
    assert [r.start for r in got.append] == [100, 150]
    assert got.offsets == {("t.x", 0): 200}
    assert [r.start for r in got.covered] == [50]
    assert [r.start for r in got.waiting] == [250]
    assert got.records == 100


def test_a_partition_never_committed_starts_at_its_lowest_report() -> None:
    got = plan({}, [report(20, 30, partition=1), report(10, 20, partition=1)])
    assert got.offsets == {("t.x", 1): 30}
    assert [r.start for r in got.append] == [10, 20]


def test_nothing_to_append_keeps_offsets() -> None:
    got = plan({("t.x", 0): 5}, [report(7, 9)])
    assert got.append == () and got.offsets == {("t.x", 0): 5}


def test_resume_follows_the_chain_from_the_table() -> None:
    reports = [report(100, 150), report(150, 170), report(200, 220)]
    assert resume_offset(100, reports, fallback=0) == 170
    assert resume_offset(None, reports, fallback=0) == 170
    assert resume_offset(None, [], fallback=42) == 42
    assert resume_offset(300, reports, fallback=0) == 300


def test_report_json_and_names_round_trip() -> None:
    r = report(5, 9, topic="a+b.c")
    assert ChunkReport.from_json(r.to_json()) == r
    assert parse_report_name(report_key("a+b.c", 3, 17)) == ("a+b.c", 3, 17)
    assert parse_report_name("_exportd/reports/junk.txt") is None


def test_summary_round_trip_with_dotted_topics() -> None:
    offsets = {("a.b", 0): 10, ("a.b", 11): 7}
    props = summary_properties(offsets, epoch=4, job="j")
    assert offsets_from_summary(props) == offsets
    assert offsets_from_summary({"added-records": "3"}) is None
