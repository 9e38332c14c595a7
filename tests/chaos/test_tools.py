"""The chaos test's own tools, checked on their own: the audit finds what it must (pure), and the
proxy holds a write until released and passes everything else unchanged (real moto)."""

from __future__ import annotations

import threading
from typing import Any

import botocore.exceptions
import pytest

from tests.chaos.audit import Piece, Record, audit, chain_problems
from tests.chaos.proxy import HoldingProxy
from tests.chaos.readback import s3_client

SOURCE = {(0, 0): "a", (0, 1): "b", (0, 2): "c", (1, 5): "d"}
BOUNDS = {0: (0, 3), 1: (5, 6)}


def test_audit_passes_every_record_once() -> None:
    records = [Record(i, p, o, f"{p}+{o}") for (p, o), i in SOURCE.items()]
    report = audit("s3", SOURCE, BOUNDS, records,
                   [Piece("0+0", 0, 0, 2), Piece("0+2", 0, 2, 3), Piece("1+5", 1, 5, 6)])
    assert report.ok, report.summary()


def test_audit_names_duplicated_lost_and_foreign_ids() -> None:
    records = [Record("a", 0, 0, "x"), Record("a", 0, 0, "y"), Record("b", 0, 1, "x"),
               Record("z", 1, 5, "x")]
    report = audit("kafka", SOURCE, BOUNDS, records)
    assert report.duplicated == {"a": 2}
    assert report.lost == ["c", "d"]
    assert report.foreign == ["z@1:5"]
    assert not report.ok
    assert "lost: c, d" in report.summary()


def test_chain_finds_gaps_overlaps_missing_metadata_and_strays() -> None:
    problems = chain_problems(
        [Piece("0+0", 0, 0, 2), Piece("0+1", 0, 1, 3), Piece("1+5", 1, 5, None)], BOUNDS)
    assert problems == ["partition 0: overlap [1, 2) at 0+1",
                        "partition 1: 1 of 1 objects have no end-offset metadata (first: 1+5)"]
    assert chain_problems([Piece("0+1", 0, 1, 2)], {0: (0, 3)}) == [
        "partition 0: gap [0, 1) before 0+1", "partition 0: the chain ends at 2, the source at 3"]
    stray = chain_problems([Piece("0+0", 0, 0, 3)], {0: (0, 3)}, [Record("a", 0, 4, "0+0")])
    assert stray[0].startswith("1 records lie outside their object's range")


def test_proxy_holds_a_write_until_released(s3: str) -> None:
    direct = s3_client(s3)
    direct.create_bucket(Bucket="chaos-proxy")
    proxy = HoldingProxy(path_prefix="/chaos-proxy/held/")
    try:
        client = s3_client(proxy.start(s3))
        client.put_object(Bucket="chaos-proxy", Key="other/a", Body=b"passes")   # not held
        assert direct.get_object(Bucket="chaos-proxy", Key="other/a")["Body"].read() == b"passes"
        proxy.arm()
        result: dict[str, Any] = {}

        def late_write() -> None:
            try:
                result["put"] = client.put_object(Bucket="chaos-proxy", Key="held/k+0+1.ndjson",
                                                  Body=b"late", IfNoneMatch="*")
            except botocore.exceptions.ClientError as exc:
                result["error"] = exc.response["Error"]["Code"]

        sender = threading.Thread(target=late_write)
        sender.start()
        held = proxy.wait_held(30)
        assert held.key == "held/k+0+1.ndjson" and held.method == "PUT"
        # Parked: S3 has not seen it; another writer takes the key meanwhile.
        direct.put_object(Bucket="chaos-proxy", Key="held/k+0+1.ndjson", Body=b"first")
        proxy.release()
        assert "412" in proxy.wait_answered(30)
        sender.join(30)
        assert result == {"error": "PreconditionFailed"}   # the late create-only write
        body = direct.get_object(Bucket="chaos-proxy", Key="held/k+0+1.ndjson")["Body"].read()
        assert body == b"first"
    finally:
        proxy.stop()


def test_proxy_passes_the_refusal_through(s3: str) -> None:
    direct = s3_client(s3)
    direct.create_bucket(Bucket="chaos-proxy2")
    direct.put_object(Bucket="chaos-proxy2", Key="k", Body=b"x")
    proxy = HoldingProxy()
    try:
        client = s3_client(proxy.start(s3))
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            client.put_object(Bucket="chaos-proxy2", Key="k", Body=b"y", IfNoneMatch="*")
        assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    finally:
        proxy.stop()
