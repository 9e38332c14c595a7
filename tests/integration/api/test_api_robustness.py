"""A real master (real ZooKeeper and Kafka, its API over TLS with the session CA) against what a
careless or hostile client sends, over raw sockets: bad header bytes and a non-UTF-8 token get a
JSON 4xx in one line; a deeply nested YAML body, a 5,000-deep `where` and a backtracking regex
are 400s that store nothing; half-sent requests (unauthenticated, or stuck in the TLS handshake)
are closed after `header_timeout`, and while they hang the master answers everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from master.api.settings import ApiSettings
from tests.integration.master.conftest import StartMaster, api_session
from tests.pki import session_pki

HEAD_TIMEOUT = 1.0
SLACK = 8.0
API = ApiSettings.model_validate({"read_tokens": ["r-token"], "admin_tokens": ["a-token"]})
ADMIN = {"Authorization": "Bearer a-token"}


def _tls() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(session_pki().ca_file))


async def raw(url: str, data: bytes, *, tls: bool = True,
              limit: float = HEAD_TIMEOUT + SLACK) -> tuple[bytes, float]:
    """Send `data` on a new connection (TLS unless told), read until the master closes it; the
    answer and how long the close took. Fails if it is still open after `limit` seconds."""
    parts = urlsplit(url)
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port,
                                                   ssl=_tls() if tls else None)
    try:
        if data:
            writer.write(data)
            await writer.drain()
        async with asyncio.timeout(limit):
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                return await reader.read(), time.monotonic() - start
            return b"", time.monotonic() - start
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


def json_answer(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    parsed: dict[str, Any] = json.loads(body)
    assert "\n" not in parsed["message"]
    return int(head.split(b" ", 2)[1]), parsed


def get(path: str, header: bytes) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + header
            + b"Connection: close\r\n\r\n")


@pytest.mark.timeout(180)
async def test_a_real_master_answers_malformed_and_half_sent_requests(
        start_master: StartMaster) -> None:
    api = API.model_copy(update={"master_id": "m1", "header_timeout": HEAD_TIMEOUT})
    master = await start_master("m1", api=api)
    await master.wait_leading(60)
    url = master.http_url
    assert url.startswith("https://")

    # Bad header bytes: a JSON 4xx in one line, before auth looks at anything.
    answer, _ = await raw(url, get("/api/v1/jobs", b"Authorization: Bearer \xff\xfe\xc3\x28\r\n"))
    assert json_answer(answer)[0] == 401
    answer, _ = await raw(url, get("/api/v1/jobs", b"Authorization: Bearer a\x00-token\r\n"))
    status, body = json_answer(answer)
    assert status == 400 and body["message"].startswith("malformed request")
    assert "a-token" not in body["message"]

    # Half-sent requests, held open by the test: each is closed after the head deadline.
    hanging = [
        asyncio.create_task(raw(url, b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n")),
        asyncio.create_task(raw(url, b"GET /api/v1/jo")),
        asyncio.create_task(raw(url, b"", tls=False)),   # TCP only: the handshake never starts
        asyncio.create_task(raw(url, b"\x16\x03\x01", tls=False)),  # a third of a ClientHello
    ]
    try:
        async with api_session() as http:
            # Meanwhile the master answers everyone else, bad bodies with 400s that store nothing.
            bad: list[tuple[bytes, str, str]] = [
                (b"id: " + b"[" * 5000 + b"]" * 5000, "application/yaml", "nests more than 64"),
                (json.dumps({"id": "w", "source": {"topic": "t"},
                             "sink": {"type": "file", "directory": "/tmp/exportd-test"},
                             "transform": {"where": "(" * 5000 + "a" + ")" * 5000}}).encode(),
                 "application/json", "at most 4096"),
                (json.dumps({"id": "r", "source": {"topic": "t"},
                             "sink": {"type": "file", "directory": "/tmp/exportd-test"},
                             "transform": {"parse": {"format": "regex",
                                                     "pattern": r"(?P<x>a)\1"}}}).encode(),
                 "application/json", "backreference"),
            ]
            for data, content_type, reason in bad:
                async with http.post(f"{url}/api/v1/jobs", data=data,
                                     headers={**ADMIN, "Content-Type": content_type}) as r:
                    assert r.status == 400, await r.text()
                    assert reason in (await r.json())["message"]
            async with http.get(f"{url}/api/v1/jobs", headers=ADMIN) as r:
                assert r.status == 200 and await r.json() == []
        for answer, took in await asyncio.gather(*hanging):
            assert took < HEAD_TIMEOUT + SLACK
            if answer:
                assert json_answer(answer)[0] == 408
    finally:
        for task in hanging:
            task.cancel()
        await asyncio.gather(*hanging, return_exceptions=True)
