"""Naming, formats, rotation decisions, start offsets, backoff, error classification: pure."""

from __future__ import annotations

import gzip
import random

import botocore.exceptions
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.batching import Batcher, Limits, data_full, limits_for, time_due
from tasks.errors import ValidationError
from tasks.formats import compress, decompress, encode_csv, encode_ndjson, render_file
from tasks.naming import extension, object_key, render_path
from tasks.runner import TaskState
from tasks.sinks.base import CpuClock, backoff_delay
from tasks.sinks.http import is_retryable_status
from tasks.sinks.s3 import sink_error
from tasks.source import POLL_BUSY, POLL_IDLE, next_poll_timeout, start_offset
from tasks.spec import Format, parse_job_spec
from tasks.stats import TaskMeter
from tasks.transforms.batch import Columns, TransformOutput

NOV22_07H = 1_795_330_800_000


def test_object_key_is_deterministic_and_zero_padded() -> None:
    key = object_key(prefix="/exports/", template="dt={dt}/hour={hour}/{topic}", topic="web",
                     partition=3, start_offset=42, first_timestamp_ms=NOV22_07H + 59_000,
                     ext="ndjson.gz")
    assert key == "exports/dt=2026-11-22/hour=07/web/web+3+00000000000000000042.ndjson.gz"
    assert object_key(prefix="", template="", topic="t", partition=0, start_offset=0,
                      first_timestamp_ms=-1, ext="csv") == "t+0+00000000000000000000.csv"


def test_unknown_template_field_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match=r"sink\.path"):
        render_path("{nope}", topic="t", partition=0, first_timestamp_ms=0)


def test_extensions() -> None:
    assert extension(Format()) == "ndjson"
    assert extension(Format(type="csv", columns=["a"], compression="gzip")) == "csv.gz"
    assert extension(Format(compression="zstd")) == "ndjson.zst"
    assert extension(Format(type="parquet", compression="zstd")) == "parquet"


def test_gzip_is_byte_identical_across_runs_and_readable_by_gzip() -> None:
    data = b'{"a":1}\n' * 1000
    once, twice = compress(data, "gzip"), compress(data, "gzip")
    assert once == twice
    assert gzip.decompress(once) == data
    assert decompress(compress(data, "zstd"), "zstd") == data


def test_encoders() -> None:
    assert encode_ndjson({"a": "é"}) == '{"a":"é"}'.encode()
    assert encode_ndjson(b"raw") == b"raw"
    assert encode_ndjson(b"multi\nline") == b'"multi\\nline"'
    assert encode_csv({"a": None, "b": True, "c": {"x": 1}}, ["a", "b", "c"]) == \
        b',true,"{""x"":1}"'
    assert render_file(Format(), []) == b""
    # a raw passthrough value with a newline is framed as a JSON string, the others verbatim
    assert render_file(Format(), [b'{"a":1}', b"two\nlines"]) == b'{"a":1}\n"two\\nlines"\n'
    csv_file = render_file(Format(type="csv", columns=["a", "b"]), [b"1,2"])
    assert csv_file == b"a,b\n1,2\n"


def test_parquet_round_trip() -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import io

    data = render_file(Format(type="parquet", compression="zstd"), [{"a": 1}, {"a": 2}])
    assert pq.read_table(io.BytesIO(data)).to_pylist() == [{"a": 1}, {"a": 2}]


def out(offsets: list[int], size: int = 10) -> TransformOutput:
    return TransformOutput(records=Columns(list(offsets), [0] * len(offsets),
                                           [b"x" * size for _ in offsets]))


def test_rotation_by_records_depends_only_on_data() -> None:
    limits = Limits(max_records=3, max_bytes=None, max_seconds=None)
    b = Batcher(limits, 10)
    closed = b.add(out([10, 11, 13, 14]), next_offset=15, now=0.0)  # 12 was filtered out
    closed += b.add(out([15, 16]), next_offset=20, now=5.0)          # 17-19 filtered out
    assert [(c.start_offset, c.end_offset, c.records) for c in closed] == [(10, 14, 3),
                                                                            (14, 17, 3)]
    last = b.flush()
    assert last is not None and (last.start_offset, last.end_offset, last.records) == (17, 20, 0)
    assert b.flush() is None


def reference_cuts(limits: Limits, batches: list[list[int]], size: int) -> list[tuple[int, int]]:
    """The rule, record by record: close right after the record that reaches a limit."""
    cuts, start, records, nbytes = [], 0, 0, 0
    for batch in batches:
        for offset in batch:
            records, nbytes = records + 1, nbytes + size + 1
            if data_full(limits, records, nbytes):
                cuts.append((start, offset + 1))
                start, records, nbytes = offset + 1, 0, 0
    return cuts


@given(st.integers(1, 7), st.one_of(st.none(), st.integers(1, 60)),
       st.lists(st.integers(0, 9), max_size=12), st.integers(0, 9))
def test_sliced_batcher_cuts_where_the_record_by_record_rule_does(
        max_records: int, max_bytes: int | None, lengths: list[int], size: int) -> None:
    limits = Limits(max_records, max_bytes, None)
    batches, offset = [], 0
    for n in lengths:
        batches.append(list(range(offset, offset + n)))
        offset += n
    b = Batcher(limits, 0)
    cuts = [(c.start_offset, c.end_offset) for batch in batches
            for c in b.add(out(batch, size), batch[-1] + 1 if batch else 0, 0.0)]
    assert cuts == reference_cuts(limits, batches, size)


def test_rotation_by_bytes_and_time() -> None:
    assert data_full(Limits(None, 100, None), 1, 100)
    assert not data_full(Limits(None, 100, None), 50, 99)
    limits = Limits(None, None, 30.0)
    b = Batcher(limits, 0)
    assert not b.due(1000.0)                       # idle and empty: nothing to flush
    b.add(out([0]), next_offset=1, now=100.0)
    assert not b.due(129.0) and b.due(130.0)
    assert time_due(limits, 0.0, 30.0) and not time_due(limits, None, 99.0)


def test_http_batches_are_bounded_by_batch_records() -> None:
    job = parse_job_spec({"id": "j", "source": {"topic": "t"},
                          "sink": {"type": "http", "url": "http://127.0.0.1:1/x",
                                   "batch_records": 50}})
    assert limits_for(job).max_records == 50


@pytest.mark.parametrize(("committed", "start", "by_ts", "expected"), [
    (7, "latest", None, 7), (-1001, "earliest", None, 2), (-1001, "latest", None, 9),
    (-1001, "timestamp", 5, 5), (-1001, "timestamp", -1, 9)])
def test_start_offset(committed: int, start: str, by_ts: int | None, expected: int) -> None:
    assert start_offset(committed, start, 2, 9, by_ts) == expected


def test_poll_timeout_stays_short_while_records_flow_and_backs_off_when_idle() -> None:
    waits, timeout = [], POLL_IDLE
    for got in (True, True, False, False, False, False, False, False, False, True):
        timeout = next_poll_timeout(timeout, got)
        waits.append(timeout)
    # A stop right after the last record waits for a short consume, not for POLL_IDLE.
    assert waits == [POLL_BUSY, POLL_BUSY, 0.02, 0.04, 0.08, 0.16, POLL_IDLE, POLL_IDLE, POLL_IDLE,
                     POLL_BUSY]


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    rand = random.Random(1)
    delays = [backoff_delay(a, base=0.1, cap=2.0, rand=rand) for a in range(12)]
    assert all(0 <= d <= min(2.0, 0.1 * 2 ** a) for a, d in enumerate(delays))
    assert backoff_delay(10_000, cap=1.0) <= 1.0


def test_retry_classification() -> None:
    assert is_retryable_status(503) and is_retryable_status(429)
    assert not is_retryable_status(400) and not is_retryable_status(404)
    too_big = botocore.exceptions.ClientError(
        {"Error": {"Code": "EntityTooLarge", "Message": "m"}}, "PutObject")
    missing = botocore.exceptions.ClientError(
        {"Error": {"Code": "NoSuchBucket", "Message": "m"}}, "PutObject")
    assert not sink_error(too_big, "k").retryable
    assert sink_error(missing, "k").retryable
    assert sink_error(botocore.exceptions.EndpointConnectionError(endpoint_url="x"), "k").retryable


def test_meter_rates_over_the_report_interval() -> None:
    now = [0.0]
    meter = TaskMeter(clock=lambda: now[0])
    meter.consumed(100, 1000, 0.5)
    now[0] = 2.0
    stats = meter.snapshot(TaskState.RUNNING)
    assert (stats.records_per_s, stats.bytes_per_s, stats.cpu_seconds_per_s) == (50, 500, 0.25)
    now[0] = 2.5  # under a second later: the previous rates stand
    assert meter.snapshot(TaskState.RUNNING).records_per_s == 50


def test_meter_adds_the_sinks_thread_cpu() -> None:
    now = [0.0]
    meter = TaskMeter(clock=lambda: now[0])
    clock = CpuClock()
    assert clock.run(sum, range(100_000)) == sum(range(100_000))
    assert clock.total > 0
    meter.sink_cpu = 2.0
    now[0] = 1.0
    assert meter.snapshot(TaskState.RUNNING).cpu_seconds_per_s == 2.0


def test_file_bodies_frame_newlines_of_passthrough_values_only_where_they_can_occur() -> None:
    """A passthrough hands the consumed values on as lines (raw: checked for newlines, framed as
    JSON strings); encoded lines cannot hold one, and the body skips the check for them."""
    from tasks.spool import MemoryBudget, body_factory
    from tasks.transforms.batch import Plan, transform_batch

    def file_of(transform: dict[str, object], values: list[bytes | None]) -> bytes:
        job = parse_job_spec({"id": "j", "source": {"topic": "t"}, "transform": transform,
                              "sink": {"type": "file", "directory": "/tmp"}})
        out = transform_batch(Plan.of(job, 0), Columns([0, 1], [0, 0], values))
        batcher = Batcher(limits_for(job), 0, body_factory(job.format, MemoryBudget(), None))
        batcher.add(out, 2, 0.0)
        chunk = batcher.flush()
        assert chunk is not None and chunk.body is not None
        return chunk.body.getvalue()

    raw = file_of({"parse": {"format": "raw"}}, [b"two\nlines", b"x"])
    assert raw == b'"two\\nlines"\nx\n'
    encoded = file_of({"parse": {"format": "json"}, "select": "{a: a}"},
                      [b'{"a": "two\\nlines"}', b'{"a": 1}'])
    assert encoded == b'{"a":"two\\nlines"}\n{"a":1}\n'
