"""Standby forwarding: a master that does not lead sends requests on to the leader.

A write (any method but GET/HEAD/OPTIONS) goes to the leader's HTTP base URL from
`control.leader()` with the same method, path, query, body, Content-Type and Authorization, and
the leader's answer is returned as is. A forwarded request carries `X-Exportd-Forwarded-By`; a
master that receives one and does not lead answers 503 instead of forwarding again, so a
leadership change mid-flight cannot loop.

A read of the cluster (`/api/v1/...` but the `leader` and `openapi.json` routes) goes to the
leader too: only the leader has the servers' reports, so a standby's own view (ZooKeeper alone)
has no task states, loads, rates or histories, and a placement map or an `explain` read through a
Service that picks any master would change from one call to the next. When no leader is known or
it does not answer within `read_forward_timeout`, the standby answers from its own view, marked
`X-Exportd-View: zookeeper`; a read that was already forwarded is answered locally the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from master.api.auth import is_write
from master.api.body import read_body
from master.api.openapi import OPENAPI_PATH
from master.api.ports import ControlPlane, LeaderView
from master.api.settings import ApiSettings
from tasks.errors import ExportdError, Unavailable
from tasks.logs import get_logger

log = get_logger(__name__)

FORWARDED_BY = "X-Exportd-Forwarded-By"
FORWARDED_TO = "X-Exportd-Forwarded-To"
VIEW = "X-Exportd-View"
_PASSED_HEADERS = ("Authorization", "Content-Type", "Accept")
CLIENT_KEY = web.AppKey("forward_client", aiohttp.ClientSession)
_API = "/api/v1/"
_LOCAL_READS = frozenset(("/api/v1/leader", OPENAPI_PATH))


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


def forwards_read(path: str) -> bool:
    """Whether a standby asks the leader for this read (cluster state) rather than answering it
    (this process's health and metrics, who leads, the API document)."""
    return path.startswith(_API) and path not in _LOCAL_READS


async def _relay(request: web.Request, base: str, body: bytes | None,
                 settings: ApiSettings, timeout: float) -> web.Response:
    headers = {name: request.headers[name] for name in _PASSED_HEADERS
               if name in request.headers}
    headers[FORWARDED_BY] = settings.master_id or "standby"
    url = base + request.rel_url.path_qs
    client = request.app[CLIENT_KEY]
    async with client.request(request.method, url, data=body, headers=headers,
                              allow_redirects=False,
                              timeout=aiohttp.ClientTimeout(total=timeout)) as answer:
        payload = await answer.read()
        out_headers = {FORWARDED_TO: base}
        for name in ("Content-Type", "WWW-Authenticate", "Retry-After"):
            if name in answer.headers:
                out_headers[name] = answer.headers[name]
        return web.Response(status=answer.status, body=payload, headers=out_headers)


async def _local_view(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if request.path.startswith(_API):
        response.headers[VIEW] = "zookeeper"
    return response


def forward_middleware(control: ControlPlane, settings: ApiSettings) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if control.is_leader():
            return await handler(request)
        forwarded = FORWARDED_BY in request.headers
        if not is_write(request.method):
            if forwarded or not forwards_read(request.path):
                return await _local_view(request, handler)
            try:
                base = forward_target(control, settings, False)
                return await _relay(request, base, None, settings,
                                    settings.read_forward_timeout)
            except (Unavailable, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("api_read_served_locally", path=request.path,
                            reason=getattr(exc, "message", None) or type(exc).__name__)
                return await _local_view(request, handler)
        base = forward_target(control, settings, forwarded)
        body = await read_body(request, settings.max_body_bytes)
        try:
            response = await _relay(request, base, body, settings, settings.forward_timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"the leader at {base} did not answer the forwarded write: "
                              f"{type(exc).__name__} {exc}".strip() + "; retry shortly") from exc
        log.info("api_write_forwarded", method=request.method, path=request.path,
                 leader=base, status=response.status)
        return response

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
