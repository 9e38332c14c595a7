"""Create-only objects in an Iceberg table's location, on S3 or a local file system.

Tasks write their claims, data files and chunk reports here (tasks/iceberg/layout.py); the
leader lists and reads the reports, and deletes covered reports and orphans. Keys are relative
to the table's location (`s3://bucket/prefix/ns.db/table` or `file:///path/ns.db/table`).

Every write is create-only — S3 `If-None-Match: *`, `link(2)` on files — so storage refuses a
second object under a key: a fenced owner's late write never replaces its successor's.
`put_once` says whether it created the object; the caller reads the winner's when it did not.
A store that ignores conditional writes is detected (tasks/sinks/s3.py) and logged loudly; it
is then written with replacing PUTs, as for the S3 sink.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlparse

import botocore.exceptions

from tasks.errors import SinkError
from tasks.fence import WorkerFence
from tasks.iceberg.catalogs import CatalogSettings
from tasks.sinks.s3 import (
    RACING_CODES,
    TAKEN_CODES,
    conditional_writes,
    error_code,
    s3_client,
    sink_error,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_DELETE_BATCH = 1000   # S3 DeleteObjects takes at most 1,000 keys


@dataclass(frozen=True)
class Listed:
    key: str          # relative to the table location
    modified: float   # epoch seconds
    size: int


class Warehouse(Protocol):
    location: str

    def uri(self, key: str) -> str:
        """The absolute URI of a key (what Iceberg metadata records)."""
        ...

    def key_of(self, uri: str) -> str | None:
        """The key of an absolute URI below this location, None for one elsewhere."""
        ...

    def put_once(self, key: str, data: bytes, *, fence: WorkerFence | None = None) -> bool:
        """Create `key` with `data`; False (nothing written) when it exists. Raises SinkError
        (retryable unless it never can succeed) and Fenced (the worker's lease ran out)."""
        ...

    def read(self, key: str) -> bytes | None:
        """The object's bytes, None when it does not exist."""
        ...

    def list(self, prefix: str, *, limit: int = 100_000) -> list[Listed]:
        """Objects below `prefix` (a relative directory), at most `limit`, in key order."""
        ...

    def delete(self, keys: Iterable[str]) -> int:
        """Delete what exists of `keys`; returns how many were asked for."""
        ...


def open_warehouse(location: str, settings: CatalogSettings) -> Warehouse:
    """The store of a table location (its scheme decides), with the catalog's S3 access."""
    parsed = urlparse(location)
    if parsed.scheme in ("s3", "s3a"):
        s3 = settings.s3
        client = s3_client(endpoint_url=s3.endpoint_url, region=s3.region,
                           access_key=s3.access_key_id,
                           secret_key=(s3.secret_access_key.get_secret_value()
                                       if s3.secret_access_key is not None else None))
        return S3Warehouse(location, client, parsed.netloc, parsed.path.strip("/"))
    if parsed.scheme == "file":
        return FileWarehouse(location, Path(unquote(parsed.path)))
    raise SinkError(f"table location {location!r}: only s3:// and file:// are supported",
                    retryable=False)


class S3Warehouse:
    def __init__(self, location: str, client: S3Client, bucket: str, prefix: str) -> None:
        self.location = location.rstrip("/")
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self._conditional: bool | None = None

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"{self.location}/{key}"

    def key_of(self, uri: str) -> str | None:
        parsed = urlparse(uri)
        if parsed.scheme not in ("s3", "s3a") or parsed.netloc != self.bucket:
            return None
        path = parsed.path.lstrip("/")
        head = f"{self.prefix}/" if self.prefix else ""
        return path[len(head):] if path.startswith(head) else None

    def put_once(self, key: str, data: bytes, *, fence: WorkerFence | None = None) -> bool:
        full = self._full(key)
        try:
            if self._conditional is None:
                self._conditional = conditional_writes(self.client, self.bucket, self.prefix)
            (fence or WorkerFence.unbounded()).check("iceberg put")
            if self._conditional:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=data, IfNoneMatch="*")
            else:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=data)
            return True
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            if code in TAKEN_CODES:
                return False
            if code in RACING_CODES:
                raise SinkError(f"S3 {code}: another write of {full} is under way",
                                key=full, retryable=True) from exc
            raise sink_error(exc, full) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise sink_error(exc, full) from exc

    def read(self, key: str) -> bytes | None:
        full = self._full(key)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise sink_error(exc, full) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise sink_error(exc, full) from exc

    def _pages(self, prefix: str) -> Iterator[Listed]:
        full = self._full(prefix.strip("/")) + "/"
        head = len(self._full(""))
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                yield Listed(item["Key"][head:], item["LastModified"].timestamp(),
                             int(item["Size"]))

    def list(self, prefix: str, *, limit: int = 100_000) -> list[Listed]:
        out: list[Listed] = []
        try:
            for item in self._pages(prefix):
                if len(out) >= limit:
                    break
                out.append(item)
        except botocore.exceptions.ClientError as exc:
            raise sink_error(exc, prefix) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise sink_error(exc, prefix) from exc
        return out

    def delete(self, keys: Iterable[str]) -> int:
        batch = [self._full(k) for k in keys]
        try:
            for i in range(0, len(batch), _DELETE_BATCH):
                objects = [{"Key": k} for k in batch[i:i + _DELETE_BATCH]]
                self.client.delete_objects(Bucket=self.bucket,
                                           Delete={"Objects": objects,  # type: ignore[typeddict-item]
                                                   "Quiet": True})
        except botocore.exceptions.ClientError as exc:
            raise sink_error(exc, self.prefix) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise sink_error(exc, self.prefix) from exc
        return len(batch)


class FileWarehouse:
    def __init__(self, location: str, root: Path) -> None:
        self.location = location.rstrip("/")
        self.root = root

    def uri(self, key: str) -> str:
        return f"{self.location}/{key}"

    def key_of(self, uri: str) -> str | None:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            return None
        path = Path(unquote(parsed.path))
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return None

    def put_once(self, key: str, data: bytes, *, fence: WorkerFence | None = None) -> bool:
        path = self.root / key
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            try:
                with open(tmp, "xb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                (fence or WorkerFence.unbounded()).check("iceberg link")
                try:
                    os.link(tmp, path)   # create-only: fails when the name exists
                except FileExistsError:
                    return False
            finally:
                tmp.unlink(missing_ok=True)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return True
        except OSError as exc:
            raise SinkError(f"cannot write {path}: {exc}", key=str(path), retryable=True) from exc

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SinkError(f"cannot read {self.root / key}: {exc}", retryable=True) from exc

    def list(self, prefix: str, *, limit: int = 100_000) -> list[Listed]:
        base = self.root / prefix.strip("/")
        out: list[Listed] = []
        if not base.is_dir():
            return out
        for directory, _, names in os.walk(base):
            for name in sorted(names):
                if name.startswith(".") and name.endswith(".tmp"):
                    continue   # a write in progress
                path = Path(directory) / name
                with contextlib.suppress(FileNotFoundError):
                    st = path.stat()
                    out.append(Listed(path.relative_to(self.root).as_posix(), st.st_mtime,
                                      st.st_size))
                if len(out) >= limit:
                    return sorted(out, key=lambda item: item.key)
        return sorted(out, key=lambda item: item.key)

    def delete(self, keys: Iterable[str]) -> int:
        count = 0
        for key in keys:
            count += 1
            with contextlib.suppress(FileNotFoundError):
                (self.root / key).unlink()
        return count


def age_s(item: Listed, now: float | None = None) -> float:
    return (time.time() if now is None else now) - item.modified
