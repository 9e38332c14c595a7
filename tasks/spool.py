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

The budget's counters live in shared memory, handed to each worker process of the host when it
starts: all workers draw on one budget (tasks/budget.py has the sizes and decisions). Spilled
bytes count against the host's spill budget; a body whose write takes the spill past it marks
itself `pressed` and its chunk ends after that batch (tasks/batching.py), and a new body waits
for room before its first write. Bodies are uploaded through `BodyRange` windows that read the
memory or the file as the request asks, never as a whole copy.

A gzip or uncompressed body is byte for byte what rendering the whole file at once gives (a zstd
frame lacks only the content size in its header). Neither stream depends on how the input is
split into batches (property-tested): zstd's does not by itself; gzip's (zlib-ng, mtime 0) would,
so it is fed in fixed-size blocks (formats.GzipBlocks). A rewrite after a crash is therefore
byte-identical whatever batches the records arrived in.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import multiprocessing
import multiprocessing.context
import multiprocessing.sharedctypes
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from tasks import budget as policy
from tasks.formats import GzipBlocks, csv_line, encode_ndjson, level_of
from tasks.spec import Format

# Bodies of all tasks of a host keep at most this much in memory together; the rest spills to
# temporary files. 64 MiB is a few compressed files of the default rotation, or two uncompressed
# ones. A server sizes it from its memory budget instead (`MemoryBudget.for_host`).
DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024
# A new body that finds the spill budget full waits this long for room (the push stage, and so
# the pull, pause behind it) before it writes anyway and ends its chunk after one batch.
SPILL_WAIT_S = 2.0
# How long an upload waits for one of the host's slots before it goes anyway (logged).
UPLOAD_WAIT_S = 600.0

# The shared counters (`MemoryBudget._cells`), one int64 each.
_BODIES, _BODIES_PEAK, _SPILLED, _SPILL_PEAK, _SPILLED_TOTAL = range(5)
_PREFETCH, _TASKS, _PAUSED, _PAUSES_TOTAL, _CUTS_TOTAL, _UPLOADS = range(5, 11)
_PIPELINE, _PIPELINE_PEAK = 11, 12
_CELLS = 13
# Prefetch reserved per worker process (by its index), so that what a dead worker had reserved
# can be given back by the pool (`forget_owner`).
MAX_OWNERS = 1024


class MemoryBudget:
    """The host's budget, kept in counters every process of the host shares (shared memory and
    a process-shared lock, handed to each worker process when it starts): the memory of open
    file bodies (`limit`), the disk of spilled ones (`spill_limit`, None: unbounded), what the
    consumers' prefetch reserved (`prefetch_share`, None: librdkafka sizes as before), and
    `upload_slots` uploads in flight at once. Thread- and process-safe. The policy is
    tasks/budget.py's; this only counts."""

    def __init__(self, limit: int = DEFAULT_BUDGET_BYTES, *, spill_limit: int | None = None,
                 prefetch_share: int | None = None,
                 upload_slots: int = policy.MAX_UPLOADS,
                 pipeline_share: int | None = None) -> None:
        self.limit = limit
        self.pipeline_share = pipeline_share
        self.total = limit          # the host's whole budget (for_host), for reports
        self.spill_limit = spill_limit
        self.prefetch_share = prefetch_share
        self.upload_slots = upload_slots
        ctx = multiprocessing.get_context("spawn")   # its locks pickle to any start method
        self._lock = ctx.Lock()
        self._cells = multiprocessing.sharedctypes.RawArray(ctypes.c_int64, _CELLS)
        self._owners = multiprocessing.sharedctypes.RawArray(ctypes.c_int64, MAX_OWNERS)
        self.owner = -1   # this process's index among the host's workers; -1: not a worker
        self._uploads = ctx.BoundedSemaphore(upload_slots)
        self._prefetch: dict[object, int] = {}     # this process's reservations, by task

    @classmethod
    def for_host(cls, total: int, spill_limit: int | None = None) -> MemoryBudget:
        """A server's budget of `total` bytes, split by kind (tasks/budget.py)."""
        parts = policy.split(total)
        made = cls(parts.bodies, spill_limit=spill_limit, prefetch_share=parts.prefetch,
                   upload_slots=policy.upload_slots(parts.uploads),
                   pipeline_share=parts.pipeline)
        made.total = total
        return made

    def snapshot(self) -> dict[str, int]:
        """The counters, for metrics: bytes used by kind (prefetch: what the consumers'
        settings allow; uploads: slots in use x UPLOAD_BUFFER_BYTES, an estimate), spill, and
        the counts of paused sources, pauses, early cuts and uploads in flight."""
        with self._lock:
            cells = [int(c) for c in self._cells]
        return {"bodies": cells[_BODIES], "prefetch": cells[_PREFETCH],
                "pipeline": cells[_PIPELINE], "pipeline_peak": cells[_PIPELINE_PEAK],
                "uploads": cells[_UPLOADS] * policy.UPLOAD_BUFFER_BYTES,
                "spilled": cells[_SPILLED], "spilled_total": cells[_SPILLED_TOTAL],
                "paused": cells[_PAUSED], "pauses_total": cells[_PAUSES_TOTAL],
                "cuts_total": cells[_CUTS_TOTAL], "uploads_in_flight": cells[_UPLOADS],
                "tasks": cells[_TASKS]}

    def __getstate__(self) -> dict[str, Any]:
        """To a worker process being started: the same counters. Pickled any other way: an
        unused budget of the same limits (counters are shared only by inheritance)."""
        state: dict[str, Any] = {"limit": self.limit, "spill_limit": self.spill_limit,
                                 "prefetch_share": self.prefetch_share,
                                 "upload_slots": self.upload_slots,
                                 "pipeline_share": self.pipeline_share}
        if multiprocessing.context.get_spawning_popen() is not None:
            state.update(lock=self._lock, cells=self._cells, uploads=self._uploads,
                         owners=self._owners)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limit"], spill_limit=state["spill_limit"],  # type: ignore[misc]
                      prefetch_share=state["prefetch_share"], upload_slots=state["upload_slots"],
                      pipeline_share=state["pipeline_share"])
        if "cells" in state:
            self._lock, self._cells, self._uploads, self._owners = (
                state["lock"], state["cells"], state["uploads"], state["owners"])

    def _add(self, cell: int, n: int, peak: int | None = None) -> int:
        with self._lock:
            self._cells[cell] += n
            value = int(self._cells[cell])
            if peak is not None and value > self._cells[peak]:
                self._cells[peak] = value
            return value

    # -- bodies in memory ---------------------------------------------------------------

    @property
    def used(self) -> int:
        return int(self._cells[_BODIES])

    @property
    def peak(self) -> int:
        return int(self._cells[_BODIES_PEAK])

    def take(self, n: int) -> bool:
        with self._lock:
            if self._cells[_BODIES] + n > self.limit:
                return False
            self._cells[_BODIES] += n
            self._cells[_BODIES_PEAK] = max(self._cells[_BODIES_PEAK], self._cells[_BODIES])
            return True

    def give(self, n: int) -> None:
        self._add(_BODIES, -n)

    # -- bodies on disk -----------------------------------------------------------------

    @property
    def spilled(self) -> int:
        return int(self._cells[_SPILLED])

    @property
    def spill_peak(self) -> int:
        return int(self._cells[_SPILL_PEAK])

    @property
    def spilled_total(self) -> int:
        """Bytes ever written to spill files (a counter)."""
        return int(self._cells[_SPILLED_TOTAL])

    @property
    def paused(self) -> int:
        """Bodies waiting for spill room now: their tasks' pull is paused."""
        return int(self._cells[_PAUSED])

    @property
    def pauses_total(self) -> int:
        return int(self._cells[_PAUSES_TOTAL])

    @property
    def cuts_total(self) -> int:
        """Chunks ended early because the spill budget was full."""
        return int(self._cells[_CUTS_TOTAL])

    def spill(self, n: int) -> bool:
        """Count `n` bytes written to disk (they are written: the records are consumed);
        True when the host's spill is now past its budget and the body should end its chunk."""
        with self._lock:
            self._cells[_SPILLED] += n
            self._cells[_SPILLED_TOTAL] += n
            now = int(self._cells[_SPILLED])
            self._cells[_SPILL_PEAK] = max(self._cells[_SPILL_PEAK], now)
        return policy.cut_early(now, self.spill_limit)

    def unspill(self, n: int) -> None:
        self._add(_SPILLED, -n)

    def cut(self) -> None:
        self._add(_CUTS_TOTAL, 1)

    def wait_for_spill_room(self, timeout: float = SPILL_WAIT_S) -> bool:
        """Block (a push thread) while the spill budget is full, up to `timeout`; False when it
        still is. Counted as a pause of the task's source."""
        if not policy.spill_full(self.spilled, self.spill_limit):
            return True
        self.paused_by(1)
        try:
            deadline = time.monotonic() + timeout
            delay = 0.005
            while policy.spill_full(self.spilled, self.spill_limit):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            return True
        finally:
            self.paused_by(-1)

    # -- batches in the pipelines --------------------------------------------------------

    @property
    def pipeline(self) -> int:
        """Bytes of consumed batches the host's pipelines hold before they reach a chunk."""
        return int(self._cells[_PIPELINE])

    @property
    def pipeline_peak(self) -> int:
        return int(self._cells[_PIPELINE_PEAK])

    def hold_batch(self, n: int) -> None:
        self._add(_PIPELINE, n, _PIPELINE_PEAK)

    def drop_batch(self, n: int) -> None:
        self._add(_PIPELINE, -n)

    def pipeline_full(self) -> bool:
        return policy.full(self.pipeline, self.pipeline_share)

    def paused_by(self, delta: int) -> None:
        """A task's pull starts (+1) or ends (-1) waiting for the budget (metrics)."""
        self._add(_PAUSED, delta)
        if delta > 0:
            self._add(_PAUSES_TOTAL, 1)

    # -- prefetch and tasks ---------------------------------------------------------------

    @property
    def tasks(self) -> int:
        return int(self._cells[_TASKS])

    @property
    def prefetch(self) -> int:
        """Bytes the host's consumers may prefetch together (what their settings allow)."""
        return int(self._cells[_PREFETCH])

    def task_started(self) -> None:
        self._add(_TASKS, 1)

    def task_stopped(self) -> None:
        self._add(_TASKS, -1)

    def reserve_prefetch(self, key: object) -> dict[str, int]:
        """librdkafka properties for a new consumer of task `key` (none without a prefetch
        share), its bytes reserved until `release_prefetch(key)`."""
        if self.prefetch_share is None:
            return {}
        with self._lock:
            n = policy.prefetch_bytes(self.prefetch_share, int(self._cells[_TASKS]),
                                      int(self._cells[_PREFETCH]))
            self._cells[_PREFETCH] += n
            if 0 <= self.owner < MAX_OWNERS:
                self._owners[self.owner] += n
        self.release_prefetch(key)    # a task built twice in one process: keep one
        self._prefetch[key] = n
        return policy.prefetch_properties(n)

    def release_prefetch(self, key: object) -> None:
        n = self._prefetch.pop(key, 0)
        if n:
            with self._lock:
                self._cells[_PREFETCH] -= n
                if 0 <= self.owner < MAX_OWNERS:
                    self._owners[self.owner] -= n

    def forget_owner(self, owner: int) -> None:
        """Worker `owner` died: give back whatever its consumers had reserved."""
        if 0 <= owner < MAX_OWNERS:
            with self._lock:
                self._cells[_PREFETCH] -= self._owners[owner]
                self._owners[owner] = 0

    # -- uploads --------------------------------------------------------------------------

    @property
    def uploads(self) -> int:
        """Uploads in flight on the host."""
        return int(self._cells[_UPLOADS])

    @contextlib.contextmanager
    def upload_slot(self) -> Iterator[None]:
        """One of the host's `upload_slots`, for the duration of one upload (a thread)."""
        got = self._uploads.acquire(timeout=UPLOAD_WAIT_S)
        self._add(_UPLOADS, 1)
        try:
            yield
        finally:
            self._add(_UPLOADS, -1)
            if got:
                self._uploads.release()


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
        self._spilled = 0       # bytes counted in the budget's spill
        # The host's spill passed its budget with one of this body's writes: its chunk ends now
        # (tasks/batching.py), is delivered and gives the room back.
        self.pressed = False
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
        if self.size == 0 and self.budget is not None:
            # A new body while the host's spill is full: wait for a delivery to give room back
            # (the task's pull pauses behind its push stage); after the wait, write anyway and
            # end the chunk after this batch.
            self.budget.wait_for_spill_room()
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
        self._count_spill(len(out))

    def _count_spill(self, n: int) -> None:
        if self.budget is not None and n:
            self._spilled += n
            if self.budget.spill(n):
                self.pressed = True

    def _spill(self) -> None:
        """Move what is in memory to a temporary file and give its room back to the budget."""
        assert self._mem is not None
        if self.spool_dir is not None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        disk = unnamed_file(self.spool_dir)
        disk.write(self._mem)
        moved = len(self._mem)
        self._mem = None
        self._disk = disk
        self._release()
        self._count_spill(moved)

    def _release(self) -> None:
        if self._held and self.budget is not None:
            self.budget.give(self._held)
            self._held = 0

    def cut_early(self) -> None:
        """Its chunk ends before its limits because the spill budget is full (counted)."""
        if self.budget is not None:
            self.budget.cut()

    def _release_spill(self) -> None:
        if self._spilled and self.budget is not None:
            self.budget.unspill(self._spilled)
            self._spilled = 0

    def finish(self) -> None:
        """Write the compressor's tail; the body is complete. Idempotent."""
        if not self.finished:
            self._store(self._comp.flush())
            self.finished = True

    def reader(self, start: int = 0, length: int | None = None) -> BinaryIO:
        """A new seekable file object on bytes [start, start + length) of the finished file
        (default: all of it), at its start; the caller closes it. Each call starts over: a
        retried delivery reads the body again. Nothing is copied: it reads the body's memory
        through a view, or its file with pread, as the upload asks for bytes."""
        self.finish()
        length = self.size - start if length is None else min(length, self.size - start)
        if self._mem is not None:
            return BodyRange(memoryview(self._mem)[start:start + length])  # type: ignore[return-value]
        assert self._disk is not None
        self._disk.flush()  # the file object buffers: pread reads the descriptor
        return BodyRange(os.dup(self._disk.fileno()), start, length)  # type: ignore[return-value]

    def getvalue(self) -> bytes:
        """The whole finished file as one bytes object (small files, tests)."""
        with self.reader() as fh:
            return fh.read()

    def close(self) -> None:
        """Free the memory or the temporary file. Idempotent."""
        self._release()
        self._release_spill()
        self._mem = None
        if self._disk is not None:
            self._disk.close()
            self._disk = None


class BodyRange(io.RawIOBase):
    """A read-only, seekable window on a body: a memoryview, or a file descriptor (its own,
    closed with the window) read with pread so that windows on one file do not share an
    offset. An upload streams from it (botocore reads it in blocks, seeks back to hash or
    retry)."""

    def __init__(self, source: memoryview | int, start: int = 0, length: int = 0) -> None:
        super().__init__()
        self._view = source if isinstance(source, memoryview) else None
        self._fd = source if isinstance(source, int) else -1
        self._start = 0 if self._view is not None else start
        self._len = len(self._view) if self._view is not None else length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self._len

    def fileno(self) -> int:
        """The descriptor, when the window is its whole file (the file sink links or sendfiles
        it, tasks/sinks/files.py)."""
        if self._fd < 0 or self._start != 0 or self._len != os.fstat(self._fd).st_size:
            raise io.UnsupportedOperation("fileno")
        return self._fd

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._len}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        left = max(0, self._len - self._pos)
        n = left if size is None or size < 0 else min(size, left)
        if n == 0:
            return b""
        if self._view is not None:
            data = bytes(self._view[self._pos:self._pos + n])
        else:
            data = os.pread(self._fd, n, self._start + self._pos)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._view is not None:
                self._view.release()
                self._view = None
        super().close()


def body_factory(fmt: Format, budget: MemoryBudget | None,
                 spool_dir: Path | None) -> Callable[[], FileBody] | None:
    """How chunks of a file-like sink (S3, files) build their bodies; None for Parquet, which is
    written from rows when the file closes. Without a budget, bodies go straight to disk."""
    if fmt.type in ("parquet", "avro"):
        return None
    return lambda: FileBody(fmt, budget, spool_dir)
