"""Encoding records into exported files: NDJSON, CSV, Parquet or Avro, compressed with gzip or zstd.

Records are encoded one by one where they are transformed (possibly in a worker process), so the
push stage only joins bytes: an NDJSON or CSV record travels as its encoded line, without the
newline (a raw passthrough value is then the consumed bytes themselves, not a copy). NDJSON lines
are written by orjson, or by the stdlib encoder for what orjson refuses (see encode_ndjson).
Parquet rows travel as dicts and are written at once when the file closes. Every output is
deterministic for the same records (gzip header mtime 0, a level fixed by the job, zlib-ng fed in
fixed-size blocks: see GzipBlocks), so a rewrite after a crash is byte-identical.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import orjson
import zstandard
from zlib_ng import zlib_ng

from tasks.errors import RecordError
from tasks.spec import Format

# Level 6 is zlib's default; gzip with wbits=31 writes mtime 0, so the bytes depend only on data.
GZIP_LEVEL = 6
# zlib-ng is fed exactly this many bytes per call (GzipBlocks): 64 KiB costs no measurable ratio
# and keeps at most that much input waiting in a file body.
GZIP_BLOCK = 64 * 1024
ZSTD_LEVEL = 3

Row = dict[str, Any]
Encoded = bytes | Row
"""One encoded record: an NDJSON/CSV line (without its newline) or a Parquet row."""

Encoder = Callable[[Any], Encoded]

# Formats whose records travel as rows (dicts) and are written at once when the file closes,
# compressed inside the file.
ROW_FORMATS = frozenset({"parquet", "avro"})

# One encoder object: json.dumps with non-default arguments builds a new one per call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _record_encoder(*, allow_nan: bool) -> Callable[[Any], str]:
    """`_JSON` without its per-call cost: JSONEncoder.encode builds a new C encoder for every
    call (~0.6 µs a record). Built once here with the same arguments, except that circular
    references are not tracked (a shared table would not be thread-safe, and parsed records
    cannot be circular; one would end as a RecursionError, dead-lettered all the same)."""
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:  # no C accelerator: the plain encoder
        return json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                                allow_nan=allow_nan).encode
    encoder = json.JSONEncoder(ensure_ascii=False)
    scan = make(None, encoder.default, json.encoder.encode_basestring, None, ":", ",", False,
                False, allow_nan)
    return lambda record: "".join(scan(record, 0))


_RECORD_JSON = _record_encoder(allow_nan=True)  # json.dumps's output and errors
_STRICT_JSON = _record_encoder(allow_nan=False)  # ValueError on NaN and ±Infinity

# orjson writes str subclasses, dataclasses and dates itself; passed through, they raise and take
# the stdlib path, which encodes exactly what json.dumps does (or fails as it does).
_ORJSON_OPTIONS = (orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
                   | orjson.OPT_PASSTHROUGH_DATETIME)


def _nan_to_null(value: Any) -> Any:
    """`value` with NaN and ±Infinity as None; as keys, they become the strings json.dumps
    writes for them (the strict encoder refuses them there too)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_float_key(key): _nan_to_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_null(item) for item in value]
    return value


def _float_key(key: Any) -> Any:
    if isinstance(key, float) and not math.isfinite(key):
        return "NaN" if math.isnan(key) else "Infinity" if key > 0 else "-Infinity"
    return key


def encode_ndjson(record: Any) -> bytes:
    """One JSON line, compact, in UTF-8 (only control characters are escaped). A raw (bytes)
    record is written verbatim when it is a single line.

    orjson writes it (~8x faster than the stdlib), the stdlib encoder whatever orjson refuses:
    non-str keys (json.dumps writes 1, true, null keys as strings), integers beyond 64 bits,
    nesting deeper than 254, str subclasses, and lone surrogates (which then fail to encode as
    UTF-8, a RecordError, as before). The bytes are json.dumps's but for floats, which parse
    back to the same value but may be spelled otherwise: 1e-7 or 0.00001 where Python writes
    1e-07 or 1e-05 (property-tested). One real difference: NaN and ±Infinity become null (on
    both paths), where json.dumps writes NaN/Infinity, which is not JSON and which most readers
    of exported files reject. (orjson also writes uuid.UUID and Enum members, which json.dumps
    refuses; records made by parsing and JMESPath never hold them.) The same record always takes
    the same path, so its line is deterministic."""
    if isinstance(record, bytes):
        if b"\n" not in record:
            return record
        record = record.decode("utf-8", "replace")
    try:
        # A copy (~0.1 µs): orjson allocates each result from a >=1 KiB buffer with malloc and
        # shrinks it in place, so thousands of short lines alive in a task's queues left the heap
        # fragmented: 500 MB instead of 170 for two tasks. The copy is an exact-size small
        # object from Python's own allocator, and the original is freed at once.
        return memoryview(orjson.dumps(record, option=_ORJSON_OPTIONS)).tobytes()
    except Exception:  # orjson.JSONEncodeError (a TypeError), or anything else: the stdlib decides
        pass
    try:
        line = _RECORD_JSON(record).encode()
    except (TypeError, ValueError) as exc:  # json.dumps's error, UnicodeEncodeError included
        raise RecordError(f"cannot encode as JSON: {exc}") from exc
    if b"NaN" in line or b"Infinity" in line:  # tokens, or only text in strings?
        try:
            return _STRICT_JSON(record).encode()
        except ValueError:  # tokens: null, as orjson writes them (rare: walk the record then)
            return _STRICT_JSON(_nan_to_null(record)).encode()
    return line


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return _JSON(value)
    return str(value)


def csv_line(cells: Sequence[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(cells)
    return buf.getvalue().encode()


def encode_csv(record: Any, columns: Sequence[str]) -> bytes:
    if not isinstance(record, dict):
        raise RecordError(f"csv needs an object record, got {type(record).__name__}")
    return csv_line([_csv_cell(record.get(c)) for c in columns])


def encode_row(record: Any) -> Row:
    if not isinstance(record, dict):
        raise RecordError(f"parquet needs an object record, got {type(record).__name__}")
    return record


def make_encoder(fmt: Format) -> Encoder:
    if fmt.type == "ndjson":
        return encode_ndjson
    if fmt.type == "csv":
        columns = tuple(fmt.columns or ())
        return lambda record: encode_csv(record, columns)
    return encode_row


def wants_objects(fmt: Format) -> bool:
    """Whether the format needs records as objects (a raw value becomes {"value": text})."""
    return fmt.type != "ndjson"


def encoded_size(item: Encoded) -> int:
    """Bytes a record counts for in rotation: its line with the newline, or the UTF-8 size of
    a row's compact JSON (Parquet, Avro, Iceberg rows). orjson sizes it (~10x the stdlib's
    speed, which was a sixth of an Iceberg task's CPU); what orjson refuses (dates, huge ints,
    non-str keys) is sized by the stdlib with `str` for the rest. A record always takes the same
    path, so cut points still depend only on the data."""
    if isinstance(item, bytes):
        return len(item) + 1
    try:
        return len(orjson.dumps(item, option=_ORJSON_OPTIONS)) + 1
    except Exception:  # orjson.JSONEncodeError (a TypeError): the stdlib sizes it
        return len(json.dumps(item, separators=(",", ":"), ensure_ascii=False,
                              default=str).encode("utf-8", "replace")) + 1


def level_of(compression: str, level: int | None = None) -> int:
    """The level a file is compressed at: the job's, else the default for the codec."""
    if level is not None:
        return level
    return ZSTD_LEVEL if compression == "zstd" else GZIP_LEVEL


class GzipBlocks:
    """A gzip stream (mtime 0) written by zlib-ng, whose bytes depend only on the data, not on how
    it is split into compress() calls. zlib-ng (~1.8x faster than zlib at level 6) is not
    split-independent by itself: at levels 1, 5 and 6 its output changes with the sizes of the
    pieces it is given. So it is given only pieces of exactly GZIP_BLOCK bytes, then the rest at
    flush(): the same calls for the same data, whatever batches it arrived in. The interface of
    zlib's and zstd's compressors; the stream is standard gzip (stdlib zlib reads it)."""

    def __init__(self, level: int) -> None:
        self._comp = zlib_ng.compressobj(level, zlib_ng.DEFLATED, 31)  # wbits 31: gzip, mtime 0
        self._pending = bytearray()  # fewer than GZIP_BLOCK bytes not yet given to zlib-ng

    def compress(self, data: bytes) -> bytes:
        out = []
        start = 0
        if self._pending:
            start = GZIP_BLOCK - len(self._pending)
            self._pending += data[:start]
            if len(self._pending) < GZIP_BLOCK:
                return b""
            out.append(self._comp.compress(self._pending))
            self._pending.clear()
        whole = start + (len(data) - start) // GZIP_BLOCK * GZIP_BLOCK
        with memoryview(data) as view:  # blocks of `data` itself: no copy but the tail
            for pos in range(start, whole, GZIP_BLOCK):
                out.append(self._comp.compress(view[pos:pos + GZIP_BLOCK]))
            self._pending += view[whole:]
        return b"".join(out)

    def flush(self) -> bytes:
        out = self._comp.compress(self._pending) if self._pending else b""
        self._pending.clear()
        return out + self._comp.flush()


def compress(data: bytes, compression: str, level: int | None = None) -> bytes:
    """The whole file at once: for gzip the bytes a FileBody streams (the same GzipBlocks)."""
    if compression == "gzip":
        comp = GzipBlocks(level_of(compression, level))
        return comp.compress(data) + comp.flush()
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=level_of(compression, level)).compress(data)
    return data


def decompress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return zlib.decompress(data, 31)  # standard gzip, whichever library wrote it
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"),
                                                 ensure_ascii=False, default=str)


def parquet_table(rows: Sequence[Row]) -> Any:
    """The file's columns: every field of every row (in order of first appearance), each typed
    from all its values, so a field added by a later schema version is a column, never dropped
    (pyarrow's from_pylist takes the first row's fields only). Numbers widen as pyarrow infers
    (int and float: double) and nested objects merge their fields. A field whose values have no
    common type (an int in one record, a string in the next) is written as JSON text in this
    file: the values are all kept, typed as what they have in common (docs/architecture/
    pipeline.md, "Schema evolution")."""
    import pyarrow as pa  # optional extra: imported only when Parquet is used

    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    arrays = []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            array = pa.array(values)
            if pa.types.is_null(array.type) or _holds_empty_struct(array.type):
                raise pa.ArrowInvalid("no type Parquet can hold")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            array = pa.array([_json_text(v) for v in values], type=pa.string())
        arrays.append(array)
    return pa.Table.from_arrays(arrays, names=list(names))


def _holds_empty_struct(arrow_type: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(arrow_type):
        return arrow_type.num_fields == 0 or any(
            _holds_empty_struct(arrow_type.field(i).type) for i in range(arrow_type.num_fields))
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return bool(_holds_empty_struct(arrow_type.value_type))
    return False


def _parquet(rows: Sequence[Row], compression: str, level: int | None) -> bytes:
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(parquet_table(rows), out,
                   compression="none" if compression == "none" else compression,
                   compression_level=level)
    return out.getvalue()


# Avro container files carry a sync marker between blocks, random by default: a fixed one keeps a
# rewrite after a crash byte-identical.
AVRO_SYNC_MARKER = b"exportd-avro-v1\x00"
AVRO_CODECS = {"none": "null", "gzip": "deflate", "zstd": "zstandard"}


def avro_schema_of(arrow_schema: Any) -> dict[str, Any]:
    """The writer schema of an Avro file holding `parquet_table`'s columns: every field
    optional (["null", T], default null), nested objects as records, lists as arrays."""
    import pyarrow as pa

    names = itertools.count(1)

    def avro_type(arrow_type: Any) -> Any:
        if pa.types.is_boolean(arrow_type):
            return "boolean"
        if pa.types.is_integer(arrow_type):
            return "long"
        if pa.types.is_floating(arrow_type):
            return "double"
        if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
            return "bytes"
        if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
            return {"type": "array", "items": ["null", avro_type(arrow_type.value_type)]}
        if pa.types.is_struct(arrow_type):
            return record([arrow_type.field(i) for i in range(arrow_type.num_fields)])
        return "string"   # strings, and the JSON text of fields without a common type

    def record(fields: list[Any]) -> dict[str, Any]:
        return {"type": "record", "name": f"Record{next(names)}", "namespace": "exportd",
                "fields": [{"name": f.name, "type": ["null", avro_type(f.type)], "default": None}
                           for f in fields]}

    return record(list(arrow_schema))


def _avro_file(rows: Sequence[Row], compression: str, level: int | None) -> bytes:
    import fastavro

    table = parquet_table(rows)
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(avro_schema_of(table.schema)), table.to_pylist(),
                    codec=AVRO_CODECS[compression], codec_compression_level=level,
                    sync_marker=AVRO_SYNC_MARKER)
    return out.getvalue()


def render_file(fmt: Format, items: Sequence[Encoded]) -> bytes:
    """The complete file for `items` (zlib-ng and zstd release the GIL: call it in a thread)."""
    if fmt.type == "parquet":
        return _parquet([i for i in items if isinstance(i, dict)], fmt.compression,
                        fmt.compression_level)
    if fmt.type == "avro":
        return _avro_file([i for i in items if isinstance(i, dict)], fmt.compression,
                          fmt.compression_level)
    lines = cast(Sequence[bytes], items)  # NDJSON and CSV encoders produce bytes only
    if not lines:
        return compress(b"", fmt.compression, fmt.compression_level)
    if fmt.type == "csv":
        lines = [csv_line(list(fmt.columns or ())), *lines]
    body = b"\n".join(lines) + b"\n"
    if fmt.type == "ndjson" and body.count(b"\n") != len(lines):
        # A raw passthrough value held a newline: frame such values as JSON strings. Counting
        # is cheaper than checking every value on the way in, and it is rare.
        body = b"\n".join(encode_ndjson(line) for line in lines) + b"\n"
    return compress(body, fmt.compression, fmt.compression_level)


def content_type(fmt: Format) -> str:
    return {"ndjson": "application/x-ndjson", "csv": "text/csv",
            "parquet": "application/vnd.apache.parquet", "avro": "application/avro"}[fmt.type]


def content_encoding(fmt: Format) -> str | None:
    if fmt.type in ROW_FORMATS:   # compressed inside the file
        return None
    return {"none": None, "gzip": "gzip", "zstd": "zstd"}[fmt.compression]
