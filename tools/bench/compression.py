"""Compression benchmark: what each `format.compression_level` costs and saves on exported data.

    .venv/bin/python -m tools.bench.compression             # gzip 1-9 and zstd on (c)'s lines
    .venv/bin/python -m tools.bench.compression --body raw  # the consumed records themselves
    .venv/bin/python -m tools.bench.compression --others    # + python-isal and libdeflate where
                                                            #   installed (exportd uses neither)

The body is what the pipeline benchmark's phase (c) compresses: nginx-style records
(`tools.bench.pipeline.record`) through its transform (json, where, select) as NDJSON lines;
`--body raw` takes the records as consumed. Each codec compresses the body the way a FileBody
does (`tasks.formats.compress`: zlib-ng fed in 64 KiB blocks, or zstd), best of `--repeat` in
process CPU time, and the output is checked to decompress to the body. Columns: ratio (body /
compressed), CPU µs per line, MB/s of body.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import random
import time
from collections.abc import Callable
from typing import Any

from tasks.formats import compress, decompress
from tasks.spec import Format, Transform
from tasks.transforms.batch import Columns, Plan, transform_batch
from tools.bench.pipeline import SELECT, WHERE, record

Codec = Callable[[bytes], bytes]


def body(n: int, transformed: bool) -> tuple[bytes, int]:
    """(NDJSON body, lines) of `n` benchmark records, transformed as phase (c) does or raw."""
    rand = random.Random(7)
    values: list[bytes | None] = [record(rand, i) for i in range(n)]
    if not transformed:
        return b"\n".join(v for v in values if v is not None) + b"\n", n
    spec = Transform.model_validate({"parse": {"format": "json"}, "where": WHERE,
                                     "select": SELECT})
    fmt = Format.model_validate({"type": "ndjson", "compression": "gzip"})
    plan = Plan(spec.model_dump_json(), fmt.model_dump_json(), "bench", 0)
    out = transform_batch(plan, Columns(list(range(n)), [0] * n, values))
    lines = [line for line in out.records.values if isinstance(line, bytes)]
    return b"\n".join(lines) + b"\n", len(lines)


def exportd_codecs(gzip_levels: list[int], zstd_levels: list[int]) -> list[tuple[str, Codec]]:
    codecs: list[tuple[str, Codec]] = []
    for level in gzip_levels:
        codecs.append((f"gzip {level} (zlib-ng)",
                       functools.partial(compress, compression="gzip", level=level)))
    for level in zstd_levels:
        codecs.append((f"zstd {level}",
                       functools.partial(compress, compression="zstd", level=level)))
    return codecs


def _optional(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        print(f"{package} not installed: skipped")
        return None


def other_codecs() -> list[tuple[str, Codec]]:
    """Libraries exportd does not use, for comparison, when installed: python-isal (ISA-L,
    streaming, levels 0-3) fed in the same blocks, and libdeflate (the `deflate` package, whole
    buffers only: one gzip member per call)."""
    codecs: list[tuple[str, Codec]] = []
    isal = _optional("isal.isal_zlib", "python-isal")
    libdeflate = _optional("deflate", "deflate (libdeflate)")

    def isal_gzip(data: bytes, level: int) -> bytes:
        comp = isal.compressobj(level, isal.DEFLATED, 31)
        view = memoryview(data)
        out = [comp.compress(view[i:i + 65536]) for i in range(0, len(data), 65536)]
        return b"".join(out) + bytes(comp.flush())

    def libdeflate_gzip(data: bytes, level: int) -> bytes:
        return bytes(libdeflate.gzip_compress(data, level))

    if isal is not None:
        codecs += [(f"isal {lv}", functools.partial(isal_gzip, level=lv)) for lv in (1, 2, 3)]
    if libdeflate is not None:
        codecs += [(f"libdeflate {lv} (one member)", functools.partial(libdeflate_gzip, level=lv))
                   for lv in (1, 4, 5, 6)]
    return codecs


def measure(name: str, codec: Codec, data: bytes, lines: int, repeat: int) -> str:
    best, out = float("inf"), b""
    for _ in range(repeat):
        cpu0 = time.process_time()
        out = codec(data)
        best = min(best, time.process_time() - cpu0)
    if decompress(out, "zstd" if name.startswith("zstd") else "gzip") != data:
        raise SystemExit(f"{name}: the output does not decompress to the body")
    return (f"| {name} | {len(data) / len(out):.2f} | {best / lines * 1e6:.3f} | "
            f"{len(data) / best / 1e6:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--body", choices=("transformed", "raw"), default="transformed")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--others", action="store_true",
                        help="also python-isal and libdeflate, if installed")
    args = parser.parse_args()
    data, lines = body(args.records, args.body == "transformed")
    print(f"body: {lines:,} lines, {len(data) / 1e6:.1f} MB ({len(data) / lines:.0f} B a line)")
    print("\n| codec | ratio | CPU µs/line | MB/s |\n|---|---|---|---|")
    codecs = exportd_codecs(list(range(1, 10)), [1, 3, 6, 9])
    if args.others:
        codecs += other_codecs()
    for name, codec in codecs:
        print(measure(name, codec, data, lines, args.repeat), flush=True)


if __name__ == "__main__":
    main()
