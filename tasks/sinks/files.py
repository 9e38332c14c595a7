"""Local file sink: each chunk's file published create-only under its deterministic name.

A chunk's body is built in an anonymous temporary file in the sink's own directory (the
factory puts the file sink's spool there): on Linux that is an O_TMPFILE, which gets its name
by a hard link, so the finished file is never copied. Anywhere else — another file system, no
O_TMPFILE — it is copied in the kernel into a temporary name, which is then linked. Either way a
reader never sees a partial file, and a crash leaves no partial file under a real name.

Publishing is `link(2)`, which fails when the name exists: like S3's `If-None-Match: *`, the
file system refuses a second file under a name, so a fenced owner's late write never replaces
its successor's. The file's end offset travels with it in the extended attribute
`user.exportd.end-offset`, set before the link; a writer that finds its name taken raises
KeyTaken with the winner's end, and the pipeline continues after it. A file system without user
extended attributes is detected at the first write and written with rename (replacing), the
weaker mode of OPERATIONS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from tasks.batching import Chunk
from tasks.errors import SinkError
from tasks.fence import WorkerFence
from tasks.formats import render_file
from tasks.logs import get_logger
from tasks.naming import extension, object_key
from tasks.partitioning import PathRenderer
from tasks.sinks.base import END_OFFSET_XATTR, CpuClock, KeyTaken
from tasks.sinks.partitioned import claim_conflict, claim_name, split
from tasks.spec import FileSink, Format
from tasks.transforms.batch import DeadRecord

COPY_BLOCK = 1024 * 1024
_NO_XATTR = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM})

log = get_logger(__name__)


def write_once(path: Path, data: bytes | BinaryIO, *, end_offset: int,
               fence: WorkerFence | None = None) -> None:
    """Publish `data` (bytes, or a file object read to its end) under `path`, create-only, with
    its end offset attached. Raises KeyTaken (with the existing file's end) if `path` exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fence = fence or WorkerFence.unbounded()
    if not isinstance(data, bytes) and _link_unnamed(data, path, end_offset, fence):
        _sync_dir(path.parent)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            if isinstance(data, bytes):
                fh.write(data)
            else:
                _copy(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
            create_only = _mark(fh.fileno(), end_offset)
        fence.check("file link")
        if create_only:
            _link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(path.parent)


def end_offset_of(path: Path) -> int | None:
    """The end offset recorded on an exported file; None when it has none (written by a
    version before chained files)."""
    try:
        value = os.getxattr(path, END_OFFSET_XATTR)
    except OSError as exc:
        if exc.errno == errno.ENODATA or exc.errno in _NO_XATTR:
            return None
        raise
    return int(value)


def _mark(fd: int, end_offset: int) -> bool:
    """Attach the end offset; False when the file system has no user extended attributes."""
    try:
        os.setxattr(fd, END_OFFSET_XATTR, str(end_offset).encode())
    except OSError as exc:
        if exc.errno not in _NO_XATTR:
            raise
        log.error("file_sink_xattrs_unsupported", consequence="files are replaced, not "
                  "refused: a write a fenced owner had in flight may overwrite its successor's")
        return False
    return True


def _link(src: Path | str, path: Path, *, src_dir_fd: int | None = None,
          follow_symlinks: bool = False) -> None:
    try:
        os.link(src, path, src_dir_fd=src_dir_fd, follow_symlinks=follow_symlinks)
    except FileExistsError:
        end = end_offset_of(path)
        if end is not None:
            raise KeyTaken(str(path), end) from None
        # A file of a version before chained files, cut from this same start: as before the
        # upgrade, it is replaced.
        log.warning("file_replacing_file_without_end_offset", path=str(path))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.old")
        os.link(src, tmp, src_dir_fd=src_dir_fd, follow_symlinks=follow_symlinks)
        os.replace(tmp, path)


def _sync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _link_unnamed(src: BinaryIO, path: Path, end_offset: int, fence: WorkerFence) -> bool:
    """Give an O_TMPFILE file (tasks.spool.unnamed_file) the name `path`, create-only, after an
    fsync; False when it cannot be linked (another file system, a named file, O_EXCL, no /proc,
    no extended attributes) and must be copied instead."""
    try:
        fd = src.fileno()
    except (OSError, io.UnsupportedOperation):
        return False
    try:
        os.fsync(fd)
        if not _mark(fd, end_offset):
            return False
    except OSError:
        return False
    fence.check("file link")
    # linkat(AT_SYMLINK_FOLLOW) on the /proc link; os.link only passes the flag (instead of
    # calling link(2), which would link the /proc symlink itself) when given a dir fd.
    root = os.open("/", os.O_RDONLY)
    try:
        _link(f"/proc/self/fd/{fd}", path, src_dir_fd=root, follow_symlinks=True)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise
        return False
    finally:
        os.close(root)
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
    chained = True
    commits_offsets = False

    def __init__(self, spec: FileSink, fmt: Format, *, topic: str, partition: int,
                 fence: WorkerFence | None = None, renderer: PathRenderer | None = None) -> None:
        self.root, self.spec, self.fmt = Path(spec.directory), spec, fmt
        # Records of one chunk in several directories (tasks/sinks/partitioned.py).
        self.renderer = renderer
        self.topic, self.partition, self.ext = topic, partition, extension(fmt)
        self.fence = fence or WorkerFence.unbounded()
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
                    write_once(path, body, end_offset=chunk.end_offset, fence=self.fence)
            else:
                write_once(path, render_file(self.fmt, chunk.items),
                           end_offset=chunk.end_offset, fence=self.fence)
        except OSError as exc:
            raise SinkError(f"cannot write {path}: {exc}", retryable=True, path=str(path)) from exc

    def _write_partitioned(self, chunk: Chunk, renderer: PathRenderer) -> list[DeadRecord]:
        """Claim the chunk, then write one file per directory (tasks/sinks/partitioned.py)."""
        files, dead = split(chunk, renderer, self.ext)
        claim = self.root / claim_name(self.topic, self.partition, chunk.start_offset)
        try:
            try:
                write_once(claim, b"", end_offset=chunk.end_offset, fence=self.fence)
            except KeyTaken as taken:
                conflict = claim_conflict(str(claim), chunk, taken.end_offset)
                if conflict is not None:
                    raise conflict from None
            for name, items in files:
                # A file that exists is the same chunk's, written before: the same bytes.
                with contextlib.suppress(KeyTaken):
                    write_once(self.root / name, render_file(self.fmt, items),
                               end_offset=chunk.end_offset, fence=self.fence)
        except OSError as exc:
            raise SinkError(f"cannot write below {self.root}: {exc}", retryable=True,
                            path=str(self.root)) from exc
        return dead

    async def write(self, chunk: Chunk) -> list[DeadRecord]:
        if self.renderer is not None:
            return await asyncio.to_thread(self.cpu.run, self._write_partitioned, chunk,
                                           self.renderer)
        await asyncio.to_thread(self.cpu.run, self._write, chunk)
        return []

    async def close(self) -> None:
        return None
