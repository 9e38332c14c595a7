"""exportctl and TLS: masters over https verified with --ca / EXPORTD_CA (a certificate that does
not verify, or a CA file that is missing, is one clear line), and the token never follows a
redirect to another origin: a redirecting listener of the test's own sends exportctl to a
second listener that records every header it gets."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from master.api.app import create_app
from master.api.settings import ApiSettings
from tasks.tls import TlsSettings, server_ssl_context
from tests.unit.api.fake_control import FakeControl, serve
from tools.exportctl.main import run
from tools.pki import DevPki, tls_settings_for, write_dev_pki

SETTINGS = ApiSettings.model_validate(
    {"master_id": "m1", "read_tokens": ["r-token"], "admin_tokens": ["a-token"]})


async def exportctl(*argv: str, env: Mapping[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(run, argv, stdout=out, stderr=err, environ=env)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return write_dev_pki(tmp_path_factory.mktemp("pki"), cluster="c1", masters=["m1"],
                         servers=[])


@pytest.fixture
async def tls_master(pki: DevPki) -> AsyncIterator[str]:
    tls = TlsSettings.model_validate(tls_settings_for(pki, "master", "m1"))
    async with serve(create_app(FakeControl(), SETTINGS),
                     server_ssl_context(tls, client_certs=False)) as url:
        yield url


async def test_with_the_ca_it_works_without_it_one_clear_line(
        tls_master: str, pki: DevPki, tmp_path: Path) -> None:
    env = {"EXPORTD_MASTERS": tls_master, "EXPORTD_TOKEN": "a-token"}
    code, out, err = await exportctl("leader", env=env)
    assert code == 1 and out == ""
    assert re.fullmatch(f"exportctl: {tls_master}: the master's certificate is not trusted "
                        r"\([^()]+\): pass the cluster CA with --ca FILE or EXPORTD_CA\n",
                        err), err
    code, out, err = await exportctl("leader", "--ca", str(pki.ca_file), env=env)
    assert (code, err) == (0, "") and out.startswith("leader m1")
    code, out, _ = await exportctl("servers", env={**env, "EXPORTD_CA": str(pki.ca_file)})
    assert code == 0 and out.startswith("SERVER")
    # Scheme-less URLs are https.
    code, _, _ = await exportctl("leader", "--ca", str(pki.ca_file), "--master",
                                 tls_master.removeprefix("https://"), env=env)
    assert code == 0
    # The CA of another cluster: not trusted either, and the hint says to check it.
    other = write_dev_pki(tmp_path / "other", cluster="c1", masters=[], servers=[])
    code, _, err = await exportctl("leader", "--ca", str(other.ca_file), env=env)
    assert code == 1 and len(err.splitlines()) == 1
    assert "certificate is not trusted" in err and "check --ca / EXPORTD_CA" in err
    # A CA file that is not there, or not a certificate: a usage error, one line.
    for bad in (tmp_path / "missing.pem", pki.certs[("master", "m1")].key_file):
        code, _, err = await exportctl("leader", "--ca", str(bad), env=env)
        assert code == 2 and len(err.splitlines()) == 1 and str(bad) in err, err


@dataclass
class Recorded:
    url: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def elsewhere() -> AsyncIterator[Recorded]:
    """Another origin: records the headers of every request it gets."""
    recorded = Recorded()

    async def record(request: web.Request) -> web.Response:
        recorded.requests.append(dict(request.headers))
        return web.json_response({"id": "m9"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    async with serve(app) as url:
        recorded.url = url
        yield recorded


async def test_the_token_never_follows_a_redirect_to_another_origin(
        elsewhere: Recorded) -> None:
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(elsewhere.url + request.path_qs)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    async with serve(app) as url:
        env = {"EXPORTD_MASTERS": url, "EXPORTD_TOKEN": "a-token"}
        for argv in (("leader",), ("cordon", "srv-a")):
            code, out, err = await exportctl(*argv, env=env)
            assert (code, out) == (1, "")
            (line,) = err.splitlines()
            assert line.startswith(f"exportctl: {url}/api/v1/") and "another origin" in line
    assert elsewhere.requests == []


async def test_a_redirect_within_the_origin_keeps_the_token() -> None:
    seen: list[str | None] = []

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/new" + request.path_qs)

    async def new(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"id": "m1", "epoch": 1, "since_unix": 0, "http": "",
                                  "grpc": "", "this_master": "m1", "this_master_leads": True})

    app = web.Application()
    app.router.add_get("/api/v1/leader", moved)
    app.router.add_get("/new/api/v1/leader", new)
    async with serve(app) as url:
        code, _, err = await exportctl("leader", "--json", env={
            "EXPORTD_MASTERS": url, "EXPORTD_TOKEN": "a-token"})
    assert code == 0, err
    assert seen == ["Bearer a-token"]
