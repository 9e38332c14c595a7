"""Standby forwarding: a master that does not lead sends writes on to the leader.

Reads are answered locally (a standby's ControlPlane reads ZooKeeper). A write (any method but
GET/HEAD/OPTIONS) goes to the leader's HTTP base URL from `control.leader()` with the same
method, path, query, body, Content-Type and Authorization, and the leader's answer is returned
as is. A forwarded request carries `X-Exportd-Forwarded-By`; a master that receives one and does
not lead answers 503 instead of forwarding again, so a leadership change mid-flight cannot loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from master.api.auth import is_write
from master.api.body import read_body
from master.api.ports import ControlPlane, LeaderView
from master.api.settings import ApiSettings
from tasks.errors import ExportdError, Unavailable
from tasks.logs import get_logger

log = get_logger(__name__)

FORWARDED_BY = "X-Exportd-Forwarded-By"
FORWARDED_TO = "X-Exportd-Forwarded-To"
_PASSED_HEADERS = ("Authorization", "Content-Type", "Accept")
CLIENT_KEY = web.AppKey("forward_client", aiohttp.ClientSession)


def leader_base_url(leader: LeaderView) -> str:
    """The leader's HTTP base URL, with a scheme and no trailing slash."""
    base = leader.http.strip().rstrip("/")
    if not base:
        raise Unavailable(f"the leader {leader.id or '?'} has not published an HTTP address yet; "
                          "retry shortly")
    return base if "://" in base else f"http://{base}"


def forward_target(control: ControlPlane, settings: ApiSettings, already_forwarded: bool) -> str:
    """Where to send a write this master may not do itself, or Unavailable with the reason."""
    if already_forwarded:
        raise Unavailable("this master received a forwarded write but does not lead "
                          "(leadership is changing); retry shortly")
    try:
        leader = control.leader()
    except ExportdError as exc:
        raise Unavailable(f"no leader is elected, writes cannot be served now: {exc.message}; "
                          "retry shortly") from exc
    if settings.master_id and leader.id == settings.master_id:
        raise Unavailable("this master is taking or losing the lead; retry shortly")
    return leader_base_url(leader)


def forward_middleware(control: ControlPlane, settings: ApiSettings) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_write(request.method) or control.is_leader():
            return await handler(request)
        base = forward_target(control, settings, FORWARDED_BY in request.headers)
        body = await read_body(request, settings.max_body_bytes)
        headers = {name: request.headers[name] for name in _PASSED_HEADERS
                   if name in request.headers}
        headers[FORWARDED_BY] = settings.master_id or "standby"
        url = base + request.rel_url.path_qs
        client = request.app[CLIENT_KEY]
        try:
            async with client.request(request.method, url, data=body, headers=headers,
                                      allow_redirects=False) as answer:
                payload = await answer.read()
                log.info("api_write_forwarded", method=request.method, path=request.path,
                         leader=base, status=answer.status)
                out_headers = {FORWARDED_TO: base}
                for name in ("Content-Type", "WWW-Authenticate", "Retry-After"):
                    if name in answer.headers:
                        out_headers[name] = answer.headers[name]
                return web.Response(status=answer.status, body=payload, headers=out_headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"the leader at {base} did not answer the forwarded write: "
                              f"{type(exc).__name__} {exc}".strip() + "; retry shortly") from exc

    return middleware


def forward_client_ctx(
    settings: ApiSettings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx entry: one client session for forwarding, closed with the app."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=settings.forward_timeout)
        app[CLIENT_KEY] = aiohttp.ClientSession(timeout=timeout)
        try:
            yield
        finally:
            await app[CLIENT_KEY].close()

    return ctx
