"""Local file sink: render the file, write it under a temporary name, fsync, rename.

A reader never sees a partial file, and a rewrite after a crash replaces the file of the same
name atomically (names are deterministic, tasks/naming.py).

A chunk's body is built in an anonymous temporary file in the sink's own directory (the
factory puts the file sink's spool there): on Linux that is an O_TMPFILE, which gets its name
by a hard link, so the finished file is never copied (the passthrough benchmark wrote every
byte twice before). Anywhere else — another file system, no O_TMPFILE — it is copied in the
kernel. Either way a crash leaves no partial file: an O_TMPFILE has no name until it is done.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from tasks.batching import Chunk
from tasks.errors import SinkError
from tasks.formats import render_file
from tasks.naming import extension, object_key
from tasks.sinks.base import CpuClock
from tasks.spec import FileSink, Format
from tasks.transforms.batch import DeadRecord

COPY_BLOCK = 1024 * 1024


def write_atomically(path: Path, data: bytes | BinaryIO) -> None:
    """Write `data` (bytes, or a file object read to its end) under `path`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if not isinstance(data, bytes) and _link_unnamed(data, tmp):
        _publish(tmp, path)
        return
    with open(tmp, "wb") as fh:
        if isinstance(data, bytes):
            fh.write(data)
        else:
            _copy(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    _publish(tmp, path)


def _publish(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    # A body linked again by a retried delivery: tmp and path are the same file, and rename(2)
    # then leaves both names in place.
    tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _link_unnamed(src: BinaryIO, tmp: Path) -> bool:
    """Give an O_TMPFILE file (tasks.spool.unnamed_file) the name `tmp`, after an fsync; False
    when it cannot be linked (another file system, a named file, O_EXCL, no /proc)."""
    try:
        fd = src.fileno()
    except (OSError, io.UnsupportedOperation):
        return False
    try:
        os.fsync(fd)
        tmp.unlink(missing_ok=True)   # left by a delivery that failed after linking
        # linkat(AT_SYMLINK_FOLLOW) on the /proc link; os.link only passes the flag (instead
        # of calling link(2), which would link the /proc symlink itself) when given a dir fd.
        root = os.open("/", os.O_RDONLY)
        try:
            os.link(f"/proc/self/fd/{fd}", tmp, src_dir_fd=root, follow_symlinks=True)
        finally:
            os.close(root)
    except OSError:
        return False
    return True


def _copy(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy a file object's rest into another; in the kernel when both are real files."""
    try:
        in_fd = src.fileno()
    except (OSError, io.UnsupportedOperation):
        shutil.copyfileobj(src, dst, COPY_BLOCK)
        return
    dst.flush()
    out_fd, offset = dst.fileno(), src.tell()
    for _ in range(1 << 40):  # bounded: every pass copies at least one byte or ends
        sent = os.sendfile(out_fd, in_fd, offset, COPY_BLOCK * 64)
        if sent == 0:
            return
        offset += sent


class FileSinkWriter:
    def __init__(self, spec: FileSink, fmt: Format, *, topic: str, partition: int) -> None:
        self.root, self.spec, self.fmt = Path(spec.directory), spec, fmt
        self.topic, self.partition, self.ext = topic, partition, extension(fmt)
        self.cpu = CpuClock()

    def path_for(self, chunk: Chunk) -> Path:
        return self.root / object_key(prefix="", template=self.spec.path, topic=self.topic,
                                      partition=self.partition, start_offset=chunk.start_offset,
                                      first_timestamp_ms=chunk.first_timestamp_ms, ext=self.ext)

    def _write(self, chunk: Chunk) -> None:
        path = self.path_for(chunk)
        try:
            if chunk.body is not None:  # rendered while the chunk filled (tasks/spool.py)
                with chunk.body.reader() as body:
                    write_atomically(path, body)
            else:
                write_atomically(path, render_file(self.fmt, chunk.items))
        except OSError as exc:
            raise SinkError(f"cannot write {path}: {exc}", retryable=True, path=str(path)) from exc

    async def write(self, chunk: Chunk) -> list[DeadRecord]:
        await asyncio.to_thread(self.cpu.run, self._write, chunk)
        return []

    async def close(self) -> None:
        return None
