"""S3 sink (boto3): one create-only object per chunk, chained by offsets; multipart above the
spec's threshold.

The key is deterministic (tasks/naming.py: the chunk's start offset), the object's user metadata
`end-offset` records where it ends, and every write is conditional (`If-None-Match: *` on the PUT
and on CompleteMultipartUpload): storage refuses a second object under a key, so a write that a
fenced owner had on the wire when its lease ran out cannot replace its successor's object. A
writer that finds its key taken raises KeyTaken with the winner's end offset; the pipeline then
treats its records up to there as exported and continues after it (tasks/pipeline.py). So any
number of owners, in any order, leave one chain of objects in which every record appears once.

Whether the store honours conditional writes is probed once per (endpoint, bucket), at the first
write: a store that ignores them (some S3-compatible servers) is logged loudly and written with
plain PUTs that replace — exactly-once then rests on the workers' lease alone (OPERATIONS.md).

Uploads stream from the chunk's body (tasks/spool.py `BodyRange`): a PUT or an UploadPart reads
the body's memory or spill file as botocore sends it, so no copy of a file or a part is made;
each upload holds one of the host's upload slots (`MemoryBudget.upload_slot`) from its first
request to its last, so uploads closing together wait instead of multiplying buffers.

Failures are retryable (the pipeline backs off and shows the error) except requests that can
never succeed as they are (e.g. EntityTooLarge).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
import botocore.config
import botocore.exceptions

from tasks.batching import Chunk
from tasks.errors import SinkError
from tasks.fence import WorkerFence
from tasks.formats import content_encoding, content_type, render_file
from tasks.logs import get_logger
from tasks.naming import extension, object_key
from tasks.partitioning import PathRenderer
from tasks.sinks.base import END_OFFSET_META, CpuClock, KeyTaken
from tasks.sinks.partitioned import claim_conflict, claim_name, joined, split
from tasks.spec import Format, S3Sink
from tasks.spool import BodyRange
from tasks.transforms.batch import DeadRecord

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Requests that can never succeed as they are. Everything else is retried, including a missing
# bucket or denied access: an operator can fix those, and the task shows the error meanwhile.
_PERMANENT_CODES = frozenset({"EntityTooLarge", "InvalidArgument", "InvalidRequest",
                              "KeyTooLongError", "InvalidBucketName", "MalformedXML"})
# A conditional write lost: the key exists (412), or another conditional write to it is under
# way (409; S3 asks to retry, and the retry then finds the winner).
TAKEN_CODES = frozenset({"PreconditionFailed", "412"})
RACING_CODES = frozenset({"ConditionalRequestConflict", "409"})

log = get_logger(__name__)

OpenRange = Callable[[int, int], BinaryIO]
"""Opens a window (start, length) on the bytes to upload; the caller closes it."""

# (endpoint, bucket) -> whether the store refuses a second If-None-Match: * write of a key.
_conditional: dict[tuple[str, str], bool] = {}
_conditional_lock = threading.Lock()


def s3_client(*, endpoint_url: str | None, region: str | None, access_key: str | None,
              secret_key: str | None) -> S3Client:
    # The pipeline retries with its own backoff; botocore's retries would only hide outages.
    config = botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"},
                                    connect_timeout=5, read_timeout=60,
                                    s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=config)


def error_code(exc: botocore.exceptions.ClientError) -> str:
    err: Any = exc.response.get("Error", {})
    return str(err.get("Code", ""))


def conditional_writes(client: S3Client, bucket: str, prefix: str) -> bool:
    """Whether this store refuses a create-only PUT of an existing key: probed once per
    (endpoint, bucket) by writing one small object twice under `<prefix>/.exportd/`."""
    where = (client.meta.endpoint_url, bucket)
    with _conditional_lock:
        known = _conditional.get(where)
        if known is not None:
            return known
        key = "/".join(p for p in (prefix.strip("/"), ".exportd", f"probe-{uuid.uuid4().hex}")
                       if p)
        client.put_object(Bucket=bucket, Key=key, Body=b"", IfNoneMatch="*")
        try:
            client.put_object(Bucket=bucket, Key=key, Body=b"", IfNoneMatch="*")
            honoured = False
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) not in TAKEN_CODES | RACING_CODES:
                raise
            honoured = True
        with contextlib.suppress(botocore.exceptions.BotoCoreError,
                                 botocore.exceptions.ClientError):
            client.delete_object(Bucket=bucket, Key=key)
        if not honoured:
            log.error("s3_conditional_writes_unsupported", endpoint=where[0], bucket=bucket,
                      consequence="objects are replaced, not refused: a write a fenced owner "
                      "had in flight may overwrite its successor's (docs/OPERATIONS.md)")
        _conditional[where] = honoured
        return honoured


def sink_error(exc: Exception, key: str) -> SinkError:
    """Classify a boto3 failure."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err: Any = exc.response.get("Error", {})
        retryable = err.get("Code") not in _PERMANENT_CODES
        return SinkError(f"S3 {err.get('Code')}: {err.get('Message')}", retryable=retryable,
                         key=key)
    return SinkError(f"S3 unreachable: {exc}", retryable=True, key=key)


def _opener(data: memoryview) -> Callable[[int, int], BinaryIO]:
    """Windows on a rendered file, for `_send`."""
    def window(start: int, length: int) -> BinaryIO:
        return cast(BinaryIO, BodyRange(data[start:start + length]))
    return window


class S3SinkWriter:
    chained = True
    commits_offsets = False

    def __init__(self, spec: S3Sink, fmt: Format, client: S3Client, *, topic: str,
                 partition: int, fence: WorkerFence | None = None,
                 renderer: PathRenderer | None = None) -> None:
        self.spec, self.fmt, self.client = spec, fmt, client
        # Records of one chunk in several directories (tasks/sinks/partitioned.py).
        self.renderer = renderer
        self.topic, self.partition, self.ext = topic, partition, extension(fmt)
        self.fence = fence or WorkerFence.unbounded()
        self.cpu = CpuClock()
        self._create_only: bool | None = None   # probed at the first write

    def key_for(self, chunk: Chunk) -> str:
        return object_key(prefix=self.spec.prefix, template=self.spec.path, topic=self.topic,
                          partition=self.partition, start_offset=chunk.start_offset,
                          first_timestamp_ms=chunk.first_timestamp_ms, ext=self.ext)

    def _extra(self, end_offset: int) -> dict[str, Any]:
        """Arguments of both put_object and create_multipart_upload."""
        extra: dict[str, Any] = {"ContentType": content_type(self.fmt),
                                 "Metadata": {END_OFFSET_META: str(end_offset)}}
        encoding = content_encoding(self.fmt)
        if encoding:
            extra["ContentEncoding"] = encoding
        spec = self.spec
        if spec.server_side_encryption is not None:
            extra["ServerSideEncryption"] = spec.server_side_encryption
        if spec.kms_key_id is not None:
            extra["SSEKMSKeyId"] = spec.kms_key_id
        if spec.storage_class is not None:
            extra["StorageClass"] = spec.storage_class
        return extra

    def _conditional(self) -> bool:
        """Whether the store honours create-only writes, probed at the first write."""
        if self._create_only is None:
            self._create_only = conditional_writes(self.client, self.spec.bucket,
                                                   self.spec.prefix)
        return self._create_only

    def _condition(self, conditional: bool) -> dict[str, Any]:
        return {"IfNoneMatch": "*"} if conditional else {}

    def _multipart(self, key: str, body: OpenRange, size: int, end_offset: int,
                   conditional: bool) -> None:
        part = self.spec.multipart_threshold_bytes
        upload = self.client.create_multipart_upload(Bucket=self.spec.bucket, Key=key,
                                                     **self._extra(end_offset))
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number in range(1, 10_001):  # S3 allows at most 10,000 parts
                start = (number - 1) * part
                if start >= size:
                    break
                with body(start, part) as window:  # streamed: no part buffer
                    done = self.client.upload_part(Bucket=self.spec.bucket, Key=key,
                                                   UploadId=upload_id, PartNumber=number,
                                                   Body=window)
                parts.append({"ETag": done["ETag"], "PartNumber": number})
            self.fence.check("s3 complete multipart upload")   # the write that publishes
            self.client.complete_multipart_upload(Bucket=self.spec.bucket, Key=key,
                                                  UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                                                  **self._condition(conditional))
        except BaseException:
            # Best effort: a bucket lifecycle rule cleans up what this cannot.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.spec.bucket, Key=key,
                                                   UploadId=upload_id)
            raise

    def _upload(self, key: str, chunk: Chunk, *, conditional: bool) -> None:
        body = chunk.body
        if body is not None:  # rendered while the chunk filled (tasks/spool.py)
            # One of the host's upload slots (its memory budget's), held for the whole upload.
            slot = (body.budget.upload_slot() if body.budget is not None
                    else contextlib.nullcontext())
            with slot:
                self._send(key, body.reader, body.size, chunk.end_offset, conditional)
        else:   # Parquet: rendered at close, from rows
            data = memoryview(render_file(self.fmt, chunk.items))
            self._send(key, _opener(data), len(data), chunk.end_offset, conditional)

    def _send(self, key: str, body: OpenRange, size: int, end_offset: int,
              conditional: bool) -> None:
        """Upload `size` bytes that `body(start, length)` opens windows on. The request streams
        from the window (botocore reads it in blocks, and seeks back to hash or retry): no
        whole copy of the file and no part buffer is made."""
        if size > self.spec.multipart_threshold_bytes:
            self._multipart(key, body, size, end_offset, conditional)
            return
        with body(0, size) as window:
            self.fence.check("s3 put")   # last moment before the request goes out
            self.client.put_object(Bucket=self.spec.bucket, Key=key, Body=window,
                                   **self._extra(end_offset), **self._condition(conditional))

    def winner_end(self, key: str) -> int | None:
        """The end offset of the object another owner wrote under `key`; None when it has
        none (written by a version before chained objects)."""
        head = self.client.head_object(Bucket=self.spec.bucket, Key=key)
        value = head.get("Metadata", {}).get(END_OFFSET_META)
        return int(value) if value is not None and value.isdigit() else None

    def _write(self, chunk: Chunk) -> None:
        key = self.key_for(chunk)
        try:
            conditional = self._conditional()
            try:
                self._upload(key, chunk, conditional=conditional)
            except botocore.exceptions.ClientError as exc:
                code = error_code(exc)
                if code in RACING_CODES:
                    raise SinkError(f"S3 {code}: another write of {key} is under way",
                                    key=key, retryable=True) from exc
                if code not in TAKEN_CODES:
                    raise
                end = self.winner_end(key)
                if end is not None:
                    raise KeyTaken(key, end) from exc
                # An object of a version before chained objects, delivered but not committed
                # when the task moved: it was cut from this same start, as before the upgrade it
                # is replaced (the one case where exactly-once rests on the lease alone).
                log.warning("s3_replacing_object_without_end_offset", key=key)
                self._upload(key, chunk, conditional=False)
        except botocore.exceptions.ClientError as exc:
            raise sink_error(exc, key) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise sink_error(exc, key) from exc

    def _write_partitioned(self, chunk: Chunk, renderer: PathRenderer) -> list[DeadRecord]:
        """Claim the chunk, then write one object per directory (tasks/sinks/partitioned.py)."""
        files, dead = split(chunk, renderer, self.ext)
        claim = joined(self.spec.prefix, [claim_name(self.topic, self.partition,
                                                     chunk.start_offset)])
        try:
            conditional = self._conditional()
            try:
                self.fence.check("s3 claim")
                self.client.put_object(Bucket=self.spec.bucket, Key=claim, Body=b"",
                                       **self._extra(chunk.end_offset),
                                       **self._condition(conditional))
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) not in TAKEN_CODES:
                    raise
                conflict = claim_conflict(claim, chunk, self.winner_end(claim))
                if conflict is not None:
                    raise conflict from exc
            for name, items in files:
                key = joined(self.spec.prefix, [name])
                data = memoryview(render_file(self.fmt, items))
                try:
                    self._send(key, _opener(data), len(data), chunk.end_offset, conditional)
                except botocore.exceptions.ClientError as exc:
                    if error_code(exc) not in TAKEN_CODES:
                        raise
                    # The same chunk's object, written by an earlier try or owner: the same
                    # records in the same bytes.
        except botocore.exceptions.ClientError as exc:
            raise sink_error(exc, claim) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise sink_error(exc, claim) from exc
        return dead

    async def write(self, chunk: Chunk) -> list[DeadRecord]:
        if self.renderer is not None:
            return await asyncio.to_thread(self.cpu.run, self._write_partitioned, chunk,
                                           self.renderer)
        await asyncio.to_thread(self.cpu.run, self._write, chunk)
        return []

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)
