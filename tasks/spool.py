"""The body of one exported file, built while its chunk fills: compressed as it grows, in memory
while a host-wide budget allows, on disk beyond it.

Without this a chunk held every encoded record as a Python object until it closed, and the sink
then joined and compressed the whole file: ~3 copies of up to `rotation.max_bytes` per task, so
a server's memory grew with its number of tasks times the file size (the classic out-of-memory
of exporters that buffer whole parts per partition). A `FileBody` instead takes each batch's
lines as one joined bytes object, feeds it straight to a streaming compressor, and keeps only
the compressed output: in a `bytearray` while the `MemoryBudget` shared by every task of the
host grants the room, else in an anonymous temporary file. Whatever the number of tasks, bodies
hold at most the budget in memory.

A gzip or uncompressed body is byte for byte what rendering the whole file at once gives (a zstd
frame lacks only the content size in its header). Neither stream depends on how the input is
split into batches (property-tested): zstd's does not by itself; gzip's (zlib-ng, mtime 0) would,
so it is fed in fixed-size blocks (formats.GzipBlocks). A rewrite after a crash is therefore
byte-identical whatever batches the records arrived in.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import zstandard

from tasks.formats import GzipBlocks, csv_line, encode_ndjson, level_of
from tasks.spec import Format

# Bodies of all tasks of a host keep at most this much in memory together; the rest spills to
# temporary files. 64 MiB is a few compressed files of the default rotation, or two uncompressed
# ones; a server's other memory (librdkafka prefetch, batches in the queues) comes on top.
DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024


class MemoryBudget:
    """Bytes that the file bodies of one host may keep in memory, all tasks together. Thread-safe:
    bodies grow in the push stages' threads."""

    def __init__(self, limit: int = DEFAULT_BUDGET_BYTES) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, int]:
        """Pickled (to a worker process) as an unused budget of the same limit."""
        return {"limit": self.limit}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state["limit"])  # type: ignore[misc]

    def take(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            self.peak = max(self.peak, self.used)
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


class _Raw:
    """No compression: the same interface as GzipBlocks and zstd's compressor."""

    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def _compressor(fmt: Format) -> _Raw | GzipBlocks | zstandard.ZstdCompressionObj:
    level = level_of(fmt.compression, fmt.compression_level)
    if fmt.compression == "gzip":
        return GzipBlocks(level)  # the one formats.compress uses: the same bytes
    if fmt.compression == "zstd":
        return zstandard.ZstdCompressor(level=level).compressobj()
    return _Raw()


def unnamed_file(directory: Path | None) -> BinaryIO:
    """An anonymous read-write file: nothing to clean up after a crash. On Linux an O_TMPFILE
    without O_EXCL, which the file sink can later give a name by a hard link instead of copying
    it (sinks/files.py); elsewhere a TemporaryFile, unlinked at once where the OS allows."""
    where = str(directory) if directory is not None else tempfile.gettempdir()
    flag = getattr(os, "O_TMPFILE", 0)
    if flag:
        try:
            fd = os.open(where, flag | os.O_RDWR, 0o666)   # the umask applies, as for open()
        except OSError:
            pass   # a file system without O_TMPFILE
        else:
            return os.fdopen(fd, "w+b")
    return tempfile.TemporaryFile(dir=directory)


class FileBody:
    """An NDJSON or CSV file under construction. Not thread-safe: one push stage writes it."""

    def __init__(self, fmt: Format, budget: MemoryBudget | None,
                 spool_dir: Path | None = None) -> None:
        """Without a budget the body goes to a temporary file from the start."""
        self.fmt, self.budget, self.spool_dir = fmt, budget, spool_dir
        self._comp = _compressor(fmt)
        self._mem: bytearray | None = bytearray()
        self._disk: BinaryIO | None = None
        self._held = 0          # bytes taken from the budget
        self.size = 0           # bytes of the finished (compressed) file so far
        self.lines = 0
        self.finished = False
        if budget is None:
            self._spill()

    @property
    def spilled(self) -> bool:
        return self._disk is not None

    def add(self, lines: Sequence[bytes], *, raw: bool = True) -> None:
        """Append lines (without their newlines): one join, one compressor call. `raw`: they are
        consumed values as they came (a passthrough), which may hold a newline; lines an encoder
        wrote never do (JSON escapes it), and skip the count (~0.4 ms a 5,000-line batch)."""
        if not lines:
            return
        if self.lines == 0 and self.fmt.type == "csv":
            self._put(csv_line(list(self.fmt.columns or ())) + b"\n")
        data = b"\n".join(lines)
        if raw and self.fmt.type == "ndjson" and data.count(b"\n") != len(lines) - 1:
            # A raw passthrough value held a newline: frame such values as JSON strings.
            # Counting (C speed) is cheaper than checking every value on the way in; it is rare.
            data = b"\n".join(encode_ndjson(line) for line in lines)
        self._put(data)
        self._put(b"\n")
        self.lines += len(lines)

    def _put(self, data: bytes) -> None:
        self._store(self._comp.compress(data))

    def _store(self, out: bytes) -> None:
        if not out:
            return
        if self._mem is not None:
            if self.budget is not None and self.budget.take(len(out)):
                self._held += len(out)
                self._mem += out
                self.size += len(out)
                return
            self._spill()
        assert self._disk is not None
        self._disk.write(out)
        self.size += len(out)

    def _spill(self) -> None:
        """Move what is in memory to a temporary file and give its room back to the budget."""
        assert self._mem is not None
        if self.spool_dir is not None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        disk = unnamed_file(self.spool_dir)
        disk.write(self._mem)
        self._mem = None
        self._disk = disk
        self._release()

    def _release(self) -> None:
        if self._held and self.budget is not None:
            self.budget.give(self._held)
            self._held = 0

    def finish(self) -> None:
        """Write the compressor's tail; the body is complete. Idempotent."""
        if not self.finished:
            self._store(self._comp.flush())
            self.finished = True

    def reader(self) -> BinaryIO:
        """A new file object on the finished file, at its start; the caller closes it. Each call
        starts over: a retried delivery reads the body again."""
        self.finish()
        if self._mem is not None:
            return io.BytesIO(bytes(self._mem))  # a copy of at most the budget
        assert self._disk is not None
        self._disk.flush()  # the file object buffers: the new one reads the descriptor
        fd = os.dup(self._disk.fileno())  # its own file object; the offset is shared, so rewind
        os.lseek(fd, 0, os.SEEK_SET)
        return os.fdopen(fd, "rb")

    def getvalue(self) -> bytes:
        """The whole finished file as one bytes object (small files, tests)."""
        with self.reader() as fh:
            return fh.read()

    def close(self) -> None:
        """Free the memory or the temporary file. Idempotent."""
        self._release()
        self._mem = None
        if self._disk is not None:
            self._disk.close()
            self._disk = None


def body_factory(fmt: Format, budget: MemoryBudget | None,
                 spool_dir: Path | None) -> Callable[[], FileBody] | None:
    """How chunks of a file-like sink (S3, files) build their bodies; None for Parquet, which is
    written from rows when the file closes. Without a budget, bodies go straight to disk."""
    if fmt.type == "parquet":
        return None
    return lambda: FileBody(fmt, budget, spool_dir)
