"""Bearer tokens: read tokens may GET, admin tokens may do everything, probes stay open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from master.api.app import create_app
from master.api.auth import Access, authorize, bearer_token, required_access
from master.api.settings import ApiSettings
from tasks.errors import Forbidden, Unauthorized
from tests.unit.api.conftest import JOB, Api
from tests.unit.api.fake_control import FakeControl, serve

SECURED = ApiSettings(master_id="m1", read_tokens=["r-token"], admin_tokens=["a-token"])


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
    authorize(ApiSettings(), Access.ADMIN, None)  # open dev mode
    authorize(SECURED, Access.READ, "Bearer r-token")
    authorize(SECURED, Access.ADMIN, "bearer  a-token ")
    with pytest.raises(Forbidden):
        authorize(SECURED, Access.ADMIN, "Bearer r-token")
    with pytest.raises(Unauthorized):
        authorize(SECURED, Access.READ, "Bearer ")
    assert bearer_token("Token abc") is None
