"""Bad input gets a 4xx naming the field and the reason, and nothing reaches the control plane."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from master.api.ports import ServerView
from tests.unit.api.conftest import JOB, Api


def _with(**changes: Any) -> dict[str, Any]:
    return {**JOB, **changes}


@pytest.mark.parametrize(("body", "field", "reason"), [
    (_with(colour="red"), "colour", "Extra inputs are not permitted"),
    (_with(source={"topic": "orders", "batchsize": 5}), "source.batchsize", "Extra inputs"),
    (_with(transform={"where": "status == "}), "transform.where",
     "not a valid JMESPath expression"),
    (_with(source={"topic": "orders", "batch_size": -5}), "source.batch_size",
     "greater than 0"),
    (_with(sink={"type": "s3", "bucket": "exports", "multipart_threshold_bytes": 1024}),
     "sink.s3.multipart_threshold_bytes", "greater than or equal to 5242880"),
    (_with(format={"type": "csv"}), "format", "csv needs columns"),
    (_with(sink={"type": "ftp"}), "sink", "does not match any of the expected tags"),
    ({"source": {"topic": "orders"}, "sink": {"type": "file", "directory": "/x"}}, "id",
     "Field required"),
])
async def test_invalid_spec_is_400_with_field_path(api: Api, body: dict[str, Any], field: str,
                                                   reason: str) -> None:
    async with api.http.post(api.at("/api/v1/jobs"), json=body) as r:
        assert r.status == 400
        answer = await r.json()
    assert answer["error"] == "invalid"
    assert answer["details"]["field"] == field
    assert reason in answer["message"]
    assert answer["details"]["problems"][0]["field"] == field
    assert api.control.writes == 0
    assert api.control.jobs == {}


@pytest.mark.parametrize(("data", "content_type", "status", "message"), [
    (b'{"id": "x",', "application/json", 400, "malformed JSON"),
    (b"id: [unclosed", "application/yaml", 400, "malformed YAML"),
    (b"- a\n- b\n", "application/yaml", 400, "must be a mapping"),
    (b"", "application/json", 400, "empty"),
    (b"\xff\xfe", "application/json", 400, "malformed JSON"),
    (b"base: &a {x: 1}\nid: *a\n", "application/yaml", 400, "aliases"),
    (b"<job/>", "application/xml", 415, "application/json or application/yaml"),
])
async def test_malformed_body(api: Api, data: bytes, content_type: str, status: int,
                              message: str) -> None:
    async with api.http.post(api.at("/api/v1/jobs"), data=data,
                             headers={"Content-Type": content_type}) as r:
        assert r.status == status
        assert message in (await r.json())["message"]
    assert api.control.writes == 0


async def test_body_over_limit_is_413(api: Api) -> None:
    big = {**JOB, "transform": {"add_fields": {"static": {"pad": "x" * (256 * 1024)}}}}
    async with api.http.post(api.at("/api/v1/jobs"), json=big) as r:
        assert r.status == 413
        assert (await r.json())["error"] == "too_large"
    assert api.control.writes == 0


async def test_chunked_body_over_limit_is_413(api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(300):
            yield b" " * 1024

    async with api.http.post(api.at("/api/v1/jobs"), data=chunks(),
                             headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
    assert api.control.writes == 0


@pytest.mark.parametrize(("query", "field"), [
    ("colour=red", "query.colour"),
    ("state=sleeping", "query.state"),
])
async def test_bad_task_filter_is_400(api: Api, query: str, field: str) -> None:
    async with api.http.get(api.at(f"/api/v1/tasks?{query}")) as r:
        assert r.status == 400
        assert (await r.json())["details"]["field"] == field


async def test_unexpected_failure_is_generic_500(api: Api) -> None:
    def boom() -> list[ServerView]:
        raise RuntimeError("secret internals")

    api.control.list_servers = boom  # type: ignore[method-assign]
    async with api.http.get(api.at("/api/v1/servers")) as r:
        assert r.status == 500
        body = await r.json()
    assert body["error"] == "internal"
    assert "secret" not in body["message"]
