"""S3 sink (boto3): one object per chunk, multipart above the spec's threshold.

The key is deterministic (tasks/naming.py), and a PUT replaces an object of the same key: a task
restarted after a crash rewrites the object the crashed run may already have uploaded, instead of
adding a second copy. Failures are retryable (the pipeline backs off and shows the error) except
requests that can never succeed as they are (e.g. EntityTooLarge).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
import botocore.config
import botocore.exceptions

from tasks.batching import Chunk
from tasks.errors import SinkError
from tasks.formats import content_encoding, content_type, render_file
from tasks.naming import extension, object_key
from tasks.sinks.base import CpuClock
from tasks.spec import Format, S3Sink
from tasks.transforms.batch import DeadRecord

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Requests that can never succeed as they are. Everything else is retried, including a missing
# bucket or denied access: an operator can fix those, and the task shows the error meanwhile.
_PERMANENT_CODES = frozenset({"EntityTooLarge", "InvalidArgument", "InvalidRequest",
                              "KeyTooLongError", "InvalidBucketName", "MalformedXML"})


def s3_client(*, endpoint_url: str | None, region: str | None, access_key: str | None,
              secret_key: str | None) -> S3Client:
    # The pipeline retries with its own backoff; botocore's retries would only hide outages.
    config = botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"},
                                    connect_timeout=5, read_timeout=60,
                                    s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=config)


def sink_error(exc: Exception, key: str) -> SinkError:
    """Classify a boto3 failure."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err: Any = exc.response.get("Error", {})
        retryable = err.get("Code") not in _PERMANENT_CODES
        return SinkError(f"S3 {err.get('Code')}: {err.get('Message')}", retryable=retryable,
                         key=key)
    return SinkError(f"S3 unreachable: {exc}", retryable=True, key=key)


class S3SinkWriter:
    def __init__(self, spec: S3Sink, fmt: Format, client: S3Client, *, topic: str,
                 partition: int) -> None:
        self.spec, self.fmt, self.client = spec, fmt, client
        self.topic, self.partition, self.ext = topic, partition, extension(fmt)
        self.cpu = CpuClock()

    def key_for(self, chunk: Chunk) -> str:
        return object_key(prefix=self.spec.prefix, template=self.spec.path, topic=self.topic,
                          partition=self.partition, start_offset=chunk.start_offset,
                          first_timestamp_ms=chunk.first_timestamp_ms, ext=self.ext)

    def _extra(self) -> dict[str, str]:
        """Arguments of both put_object and create_multipart_upload."""
        extra = {"ContentType": content_type(self.fmt)}
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

    def _multipart(self, key: str, body: BinaryIO) -> None:
        part = self.spec.multipart_threshold_bytes
        upload = self.client.create_multipart_upload(Bucket=self.spec.bucket, Key=key,
                                                     **self._extra())  # type: ignore[arg-type]
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number in range(1, 10_001):  # S3 allows at most 10,000 parts
                data = body.read(part)  # one part in memory at a time
                if not data:
                    break
                done = self.client.upload_part(Bucket=self.spec.bucket, Key=key,
                                               UploadId=upload_id, PartNumber=number,
                                               Body=data)
                parts.append({"ETag": done["ETag"], "PartNumber": number})
            self.client.complete_multipart_upload(Bucket=self.spec.bucket, Key=key,
                                                  UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})  # type: ignore[typeddict-item]
        except BaseException:
            # Best effort: a bucket lifecycle rule cleans up what this cannot.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.spec.bucket, Key=key,
                                                   UploadId=upload_id)
            raise

    def _upload(self, key: str, body: BinaryIO, size: int) -> None:
        if size > self.spec.multipart_threshold_bytes:
            self._multipart(key, body)
        else:
            self.client.put_object(Bucket=self.spec.bucket, Key=key, Body=body.read(),
                                   **self._extra())  # type: ignore[arg-type]

    def _write(self, chunk: Chunk) -> None:
        key = self.key_for(chunk)
        try:
            if chunk.body is not None:  # rendered while the chunk filled (tasks/spool.py)
                with chunk.body.reader() as reader:
                    self._upload(key, reader, chunk.body.size)
            else:
                body = render_file(self.fmt, chunk.items)
                with io.BytesIO(body) as reader:
                    self._upload(key, reader, len(body))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise sink_error(exc, key) from exc

    async def write(self, chunk: Chunk) -> list[DeadRecord]:
        await asyncio.to_thread(self.cpu.run, self._write, chunk)
        return []

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)
