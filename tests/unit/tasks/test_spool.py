"""File bodies built as chunks fill (tasks/spool.py): same bytes as rendering the file at once,
whatever the batches; spilling to disk beyond the host's budget; the budget given back."""

from __future__ import annotations

import gzip
import io
import itertools
import os
import random
import zlib
from pathlib import Path
from typing import Literal

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from zlib_ng import zlib_ng

from tasks.batching import Batcher, Limits
from tasks.formats import GZIP_BLOCK, GzipBlocks, compress, decompress, render_file
from tasks.sinks.base import KeyTaken
from tasks.sinks.files import end_offset_of, write_once
from tasks.spec import Format
from tasks.spool import FileBody, MemoryBudget, body_factory
from tasks.transforms.batch import Columns, TransformOutput

lines_strategy = st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=60)


def split(items: list[bytes], cuts: list[int]) -> list[list[bytes]]:
    bounds = sorted({min(c, len(items)) for c in cuts} | {0, len(items)})
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


def body_of(fmt: Format, batches: list[list[bytes]], budget: MemoryBudget) -> bytes:
    body = FileBody(fmt, budget)
    for batch in batches:
        body.add(batch)
    data = body.getvalue()
    body.close()
    return data


@settings(max_examples=60)
@given(lines_strategy, st.lists(st.integers(0, 60), max_size=6),
       st.sampled_from(["none", "gzip"]), st.integers(1, 200))
def test_body_is_the_rendered_file_whatever_the_batches(
        items: list[bytes], cuts: list[int], compression: Literal["none", "gzip"],
        budget_bytes: int) -> None:
    """Byte-identical to render_file (so a rewrite is too), in memory or spilled to disk."""
    fmt = Format(compression=compression)
    budget = MemoryBudget(budget_bytes)
    if items:
        assert body_of(fmt, split(items, cuts), budget) == render_file(fmt, items)
    assert budget.used == 0


@settings(max_examples=30)
@given(lines_strategy, st.lists(st.integers(0, 60), max_size=6))
def test_zstd_body_does_not_depend_on_the_batches(items: list[bytes], cuts: list[int]) -> None:
    fmt = Format(compression="zstd")
    whole = body_of(fmt, [items], MemoryBudget())
    assert body_of(fmt, split(items, cuts), MemoryBudget(50)) == whole
    assert zstandard.ZstdDecompressor().decompressobj().decompress(whole) == b"".join(
        line + b"\n" for line in items)


def test_csv_header_and_raw_values_with_newlines() -> None:
    csv_fmt = Format(type="csv", columns=["a", "b"])
    assert body_of(csv_fmt, [[b"1,2"], [b"3,4"]], MemoryBudget()) == b"a,b\n1,2\n3,4\n"
    ndjson = [[b'{"a":1}'], [b"two\nlines", b"x"]]
    assert body_of(Format(), ndjson, MemoryBudget()) == b'{"a":1}\n"two\\nlines"\nx\n'


def test_bodies_spill_beyond_the_shared_budget_and_give_it_back(tmp_path: object) -> None:
    budget = MemoryBudget(1000)
    fmt = Format()
    small, large = FileBody(fmt, budget), FileBody(fmt, budget)
    small.add([b"x" * 99])                    # 100 bytes: fits
    large.add([b"y" * 2000])                  # does not fit next to it: straight to disk
    assert not small.spilled and large.spilled and budget.used == 100
    small.add([b"z" * 949])                   # 950 more would pass the limit: spills, gives back
    assert small.spilled and budget.used == 0 and budget.peak == 100
    assert small.getvalue() == b"x" * 99 + b"\n" + b"z" * 949 + b"\n"
    assert large.getvalue() == large.getvalue() == b"y" * 2000 + b"\n"  # re-readable (retries)
    small.close()
    large.close()
    assert budget.used == 0


def test_batcher_renders_chunks_into_bodies_with_the_same_cuts() -> None:
    limits = Limits(max_records=4, max_bytes=30, max_seconds=None)
    budget = MemoryBudget()
    make = body_factory(Format(compression="gzip"), budget, None)
    assert make is not None
    with_body, with_rows = Batcher(limits, 0, make), Batcher(limits, 0)
    values = [b"a" * (n % 7) for n in range(40)]
    chunks = {"body": [], "rows": []}  # type: dict[str, list[tuple[int, int, int, int, bytes]]]
    for pos in range(0, 40, 9):
        batch = values[pos:pos + 9]
        offsets = list(range(pos, pos + len(batch)))
        for name, batcher in (("body", with_body), ("rows", with_rows)):
            out = TransformOutput(records=Columns(list(offsets), [o * 10 for o in offsets],
                                                  list(batch)))
            for c in batcher.add(out, offsets[-1] + 1, 0.0):
                data = (decompress(c.body.getvalue(), "gzip") if c.body is not None
                        else b"".join(v + b"\n" for v in c.items))  # type: ignore[operator]
                chunks[name].append((c.start_offset, c.end_offset, c.records,
                                     c.first_timestamp_ms, data))
                c.release()
    assert chunks["body"] == chunks["rows"] and len(chunks["body"]) > 5
    with_body.current.release()
    assert budget.used == 0


def test_plain_gzip_readers_read_bodies() -> None:
    body = FileBody(Format(compression="gzip"), MemoryBudget())
    body.add([b"1", b"2"])
    assert gzip.decompress(body.getvalue()) == b"1\n2\n"
    body.close()


def test_a_body_without_budget_is_on_disk_from_the_start_and_copies_whole(tmp_path: Path) -> None:
    body = FileBody(Format(), None, tmp_path / "spool")
    body.add([b"a" * 100, b"b"])
    assert body.spilled
    target = tmp_path / "out" / "f.ndjson"
    with body.reader() as reader:
        write_once(target, reader, end_offset=2)
    assert target.read_bytes() == b"a" * 100 + b"\nb\n"
    body.close()


@settings(max_examples=30)
@given(lines_strategy, st.lists(st.integers(0, 60), max_size=6),
       st.sampled_from([("gzip", 1), ("gzip", 9), ("zstd", 1), ("zstd", 19)]))
def test_a_jobs_compression_level_keeps_bodies_independent_of_the_batches(
        lines: list[bytes], cuts: list[int], codec: tuple[str, int]) -> None:
    compression, level = codec
    fmt = Format.model_validate({"compression": compression, "compression_level": level})
    data = body_of(fmt, split(lines, cuts), MemoryBudget())
    assert data == body_of(fmt, [lines], MemoryBudget())
    if compression == "gzip" and lines:  # a zstd stream's header lacks only the content size
        assert data == render_file(fmt, lines)
    assert decompress(data, compression) == b"".join(line + b"\n" for line in lines)


def test_compression_level_changes_the_output_and_is_checked() -> None:
    lines = [b'{"id":%d,"path":"/api/items/%d"}' % (i, i * 7) for i in range(2000)]
    fast = render_file(Format(compression="gzip", compression_level=1), lines)
    default = render_file(Format(compression="gzip"), lines)
    assert fast != default and len(fast) > len(default)
    assert gzip.decompress(fast) == gzip.decompress(default)
    for bad in ({"compression": "gzip", "compression_level": 10},
                {"compression": "zstd", "compression_level": 0},
                {"compression": "none", "compression_level": 3}):
        with pytest.raises(ValueError, match="compression_level"):
            Format.model_validate(bad)


def test_a_file_sink_body_is_linked_into_place_not_copied(tmp_path: Path) -> None:
    """An O_TMPFILE body becomes the exported file by a hard link (Linux); a retried delivery
    of the same body finds its own file (create-only) and leaves one file, no temporary name."""
    body = FileBody(Format(compression="gzip"), None, tmp_path)
    body.add([b'{"a":1}'] * 100)
    target = tmp_path / "out" / "t+0+00000000000000000000.ndjson.gz"
    with body.reader() as reader:
        write_once(target, reader, end_offset=100)
    with body.reader() as reader, pytest.raises(KeyTaken) as taken:
        write_once(target, reader, end_offset=100)
    assert taken.value.end_offset == end_offset_of(target) == 100
    with body.reader() as reader:
        linked = os.fstat(reader.fileno()).st_ino == os.stat(target).st_ino
    body.close()
    assert sorted(os.listdir(tmp_path / "out")) == [target.name]
    assert gzip.decompress(target.read_bytes()) == b'{"a":1}\n' * 100
    assert linked or not getattr(os, "O_TMPFILE", 0)
    assert os.stat(target).st_nlink == 1


def ndjson_lines(seed: int, n: int) -> list[bytes]:
    """Access-log-like lines (~100 bytes): repetitive enough for matches across block edges."""
    rand = random.Random(seed)
    return [b'{"t":"2026-11-22T07:%02d:%02d.%03dZ","ip":"10.%d.%d.%d","m":"%s",'
            b'"p":"/api/items/%d","s":%d,"b":%d}'
            % (i // 60000 % 60, i // 1000 % 60, i % 1000, i % 256, rand.randrange(256),
               rand.randrange(256), rand.choice((b"GET", b"GET", b"POST")), rand.randrange(10**6),
               rand.choice((200, 200, 404, 500)), rand.randrange(10**5))
            for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(0, 2**32), st.integers(0, 4000),
       st.lists(st.integers(0, 4000), max_size=8))
def test_gzip_bodies_do_not_depend_on_the_batches_at_any_level(
        level: int, seed: int, n: int, cuts: list[int]) -> None:
    """zlib-ng's own output depends on the sizes of the pieces it is given (levels 1, 5, 6):
    fed in fixed blocks, a body over many blocks is the one-shot render whatever the batches."""
    lines = ndjson_lines(seed, n)
    fmt = Format.model_validate({"compression": "gzip", "compression_level": level})
    data = body_of(fmt, split(lines, cuts), MemoryBudget(100_000))
    text = b"".join(line + b"\n" for line in lines)
    assert data == compress(text, "gzip", level)
    if lines:
        assert data == render_file(fmt, lines)
    assert zlib.decompress(data, 31) == text
    assert data[4:8] == b"\0\0\0\0"  # gzip header mtime 0


@pytest.mark.parametrize("level", [1, 5, 6, 9])
def test_gzip_blocks_are_split_independent_where_zlib_ng_is_not(level: int) -> None:
    text = b"\n".join(ndjson_lines(level, 3000)) + b"\n"  # ~300 KB: several blocks
    assert len(text) > 4 * GZIP_BLOCK
    splits = ([text], [text[i:i + 1000] for i in range(0, len(text), 1000)],
              [text[:GZIP_BLOCK - 1], text[GZIP_BLOCK - 1:GZIP_BLOCK + 1], text[GZIP_BLOCK + 1:]],
              [text[:2 * GZIP_BLOCK], b"", text[2 * GZIP_BLOCK:]])

    def fed(comp: GzipBlocks | zlib_ng._Compress, pieces: list[bytes]) -> bytes:
        return b"".join(comp.compress(piece) for piece in pieces) + comp.flush()

    outputs = {fed(GzipBlocks(level), pieces) for pieces in splits}
    assert outputs == {compress(text, "gzip", level)}
    assert zlib.decompress(outputs.pop(), 31) == text
    # Why GzipBlocks exists: zlib-ng itself, given the same pieces, writes other bytes.
    plain = {fed(zlib_ng.compressobj(level, zlib_ng.DEFLATED, 31), pieces) for pieces in splits}
    assert len(plain) > 1 or level == 9


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 5 * GZIP_BLOCK), st.lists(st.integers(0, 5 * GZIP_BLOCK), max_size=10),
       st.sampled_from([1, 6]))
def test_gzip_blocks_cut_anywhere_in_the_bytes(size: int, cuts: list[int], level: int) -> None:
    text = (b"\n".join(ndjson_lines(size, size // 90 + 1)) * 2)[:size]
    bounds = sorted({min(c, size) for c in cuts} | {0, size})
    comp = GzipBlocks(level)
    data = b"".join(comp.compress(text[a:b]) for a, b in itertools.pairwise(bounds))
    data += comp.flush()
    assert data == compress(text, "gzip", level)
    assert zlib.decompress(data, 31) == text and data[4:8] == b"\0\0\0\0"


def test_reader_windows_read_memory_and_spilled_bodies_without_a_whole_copy(
        tmp_path: Path) -> None:
    """Uploads stream from `reader(start, length)` windows: a memoryview on a body in memory,
    pread on a spilled one; seekable (botocore rewinds to hash and retry)."""
    lines = [b"%05d" % i for i in range(2000)]
    whole = b"".join(line + b"\n" for line in lines)
    for room in (10**6, 0):   # in memory, then spilled
        budget = MemoryBudget(room)
        body = FileBody(Format(), budget, tmp_path)
        body.add(lines)
        assert body.spilled == (room == 0)
        with body.reader(100, 250) as window:
            assert window.read(50) == whole[100:150] and window.tell() == 50
            assert window.read() == whole[150:350] and window.read() == b""
            window.seek(0)
            assert window.read(10) == whole[100:110]
            with pytest.raises(io.UnsupportedOperation):
                window.fileno()   # a part of the file: never handed out as the whole
        with body.reader() as all_of_it:
            assert len(all_of_it) == len(whole)  # type: ignore[arg-type]
            assert all_of_it.read() == whole
        body.close()
        assert budget.used == 0 and budget.spilled == 0
        assert budget.spilled_total == (len(whole) if room == 0 else 0)
