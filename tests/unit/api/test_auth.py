"""Bearer tokens: read tokens may GET, admin tokens may do everything, probes stay open."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
import structlog

from master.api.app import create_app
from master.api.auth import (
    Access,
    Principal,
    authorize,
    bearer_token,
    check_auth_mode,
    required_access,
)
from master.api.settings import ApiSettings
from tasks.errors import ConfigError, Forbidden, Unauthorized
from tasks.redact import redact_processor
from tests.unit.api.conftest import JOB, Api
from tests.unit.api.fake_control import FakeControl, serve

SECURED = ApiSettings.model_validate(
    {"master_id": "m1", "read_tokens": ["r-token"], "admin_tokens": ["a-token"]})


@pytest.fixture
async def secured(control: FakeControl) -> AsyncIterator[Api]:
    async with serve(create_app(control, SECURED)) as url, aiohttp.ClientSession() as http:
        yield Api(url, http, control)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_no_or_unknown_token_is_401(secured: Api) -> None:
    for headers in ({}, _bearer("guess"), {"Authorization": "Basic cjpy"}):
        async with secured.http.get(secured.at("/api/v1/servers"), headers=headers) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await r.json())["error"] == "unauthorized"


async def test_read_token_reads_but_may_not_write(secured: Api) -> None:
    async with secured.http.get(secured.at("/api/v1/servers"), headers=_bearer("r-token")) as r:
        assert r.status == 200
    async with secured.http.post(secured.at("/api/v1/jobs"), json=JOB,
                                 headers=_bearer("r-token")) as r:
        assert r.status == 403
        assert (await r.json())["error"] == "forbidden"
    assert secured.control.writes == 0


async def test_admin_token_writes(secured: Api) -> None:
    async with secured.http.post(secured.at("/api/v1/jobs"), json=JOB,
                                 headers=_bearer("a-token")) as r:
        assert r.status == 201
    async with secured.http.get(secured.at("/api/v1/jobs"), headers=_bearer("a-token")) as r:
        assert r.status == 200


async def test_probes_and_openapi_are_open(secured: Api) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"):
        async with secured.http.get(secured.at(path)) as r:
            assert r.status == 200, path


def test_required_access() -> None:
    assert required_access("GET", "/healthz") is Access.OPEN
    assert required_access("GET", "/api/v1/servers/x/drain") is Access.READ
    assert required_access("POST", "/api/v1/servers/x/drain") is Access.ADMIN
    assert required_access("DELETE", "/api/v1/jobs/x") is Access.ADMIN


def test_authorize_decisions() -> None:
    assert authorize(ApiSettings(auth="none"), Access.ADMIN, None).name == "anonymous"
    assert authorize(SECURED, Access.READ, "Bearer r-token") == Principal("read-1", "read")
    assert authorize(SECURED, Access.ADMIN, "bearer  a-token ") == Principal("admin-1", "admin")
    with pytest.raises(Unauthorized):
        authorize(ApiSettings.model_validate({"admin_tokens": ["a"]}), Access.READ, None)
    with pytest.raises(Forbidden):
        authorize(SECURED, Access.ADMIN, "Bearer r-token")
    with pytest.raises(Unauthorized):
        authorize(SECURED, Access.READ, "Bearer ")
    assert bearer_token("Token abc") is None


async def _raw_get(url: str, authorization: bytes) -> bytes:
    """A GET with a raw (not necessarily UTF-8) Authorization header; the status line back."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET /api/v1/servers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Authorization: " + authorization + b"\r\n\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


async def test_a_bearer_header_that_is_not_utf8_is_401_not_500(secured: Api) -> None:
    for raw in (b"Bearer \xff\xfe\xfd", b"Bearer a-tok\xe9n", b"\xc3\x28 x"):
        assert (await _raw_get(secured.url, raw)).split()[1] == b"401", raw


def test_tokens_carry_names_in_every_accepted_form() -> None:
    def names(**kw: object) -> list[tuple[str, str]]:
        return [(t.name, role) for t, role in ApiSettings.model_validate(kw).tokens()]

    assert names(admin_tokens={"ci": "x1", "ops": "x2"}) == [("ci", "admin"), ("ops", "admin")]
    assert names(admin_tokens=[{"name": "ci", "token": "x1"}], read_tokens="x2") == [
        ("ci", "admin"), ("read-1", "read")]
    assert names(read_tokens=["x1", "x2"]) == [("read-1", "read"), ("read-2", "read")]
    for bad in ({"admin_tokens": {"ci": "x1"}, "read_tokens": {"ci": "x2"}},   # name twice
                {"admin_tokens": ["same"], "read_tokens": ["same"]},            # token twice
                {"admin_tokens": [{"name": "bad name", "token": "x"}]},
                {"admin_tokens": ["x"], "auth": "none"}):
        with pytest.raises(ValueError):
            ApiSettings.model_validate(bad)


def test_tokens_are_required_unless_auth_none_on_loopback() -> None:
    assert check_auth_mode(SECURED, "0.0.0.0") is None
    assert "no tokens" in (check_auth_mode(ApiSettings(), "127.0.0.1") or "")
    open_api = ApiSettings(auth="none")
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert check_auth_mode(open_api, host) is None, host
    for host in ("0.0.0.0", "::", "", "10.0.0.5", "master-0.example"):
        assert "only on a loopback" in (check_auth_mode(open_api, host) or ""), host
    with pytest.raises(ConfigError):
        create_app(FakeControl(), ApiSettings())


def test_master_without_tokens_refuses_to_start_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")}
    runs = {
        "no tokens": {},
        "open on a wildcard": {"EXPORTD_API__AUTH": "none", "EXPORTD_HTTP__HOST": "0.0.0.0"},
    }
    for why, extra in runs.items():
        done = subprocess.run([sys.executable, "-m", "master.main"], env={**env, **extra},
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2, why
        (line,) = done.stderr.splitlines()
        assert line.startswith("exportd-master: invalid MasterSettings: api: "), line


async def test_the_audit_line_names_the_token_never_the_secret(secured: Api) -> None:
    with structlog.testing.capture_logs() as logs:
        async with secured.http.post(secured.at("/api/v1/jobs"), json=JOB,
                                     headers=_bearer("a-token")) as r:
            assert r.status == 201
        async with secured.http.post(secured.at("/api/v1/jobs/orders/pause"),
                                     headers=_bearer("r-token")) as r:
            assert r.status == 403
        async with secured.http.delete(secured.at("/api/v1/jobs/orders")) as r:
            assert r.status == 401
    # As the log processors leave it (they mask fields named like secrets).
    audit = [(e["path"], e["status"], e["principal"]) for e in
             (redact_processor(None, "info", dict(e)) for e in logs) if e["event"] == "api_write"]
    assert audit == [("/api/v1/jobs", 201, "admin-1"), ("/api/v1/jobs/orders/pause", 403,
                     "read-1"), ("/api/v1/jobs/orders", 401, "anonymous")]
    assert "a-token" not in repr(logs) and "r-token" not in repr(logs)
