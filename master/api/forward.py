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

Whom a standby forwards to: the leader's address comes from the `leader` znode, which this
master cannot vouch for, so the address is never trusted; the peer's certificate is. With TLS
(the master's `tls` block) a request goes only over https, whatever scheme the znode names, and
only to a peer whose certificate chains to the cluster CA and names a master of this cluster in
its SAN URI (`tasks.tls.is_cluster_master`): the check runs inside the TLS handshake
(`master_peer_context`), so nothing (no header, no token, no body) is sent to any other peer.
Host names are not checked: masters are reached by pod address, the identity is the URI. Without
TLS (`tls.insecure`) a standby forwards only requests that carry no Authorization header (an
`auth: none` cluster); a token is never sent in clear.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from master.api.auth import is_write
from master.api.body import read_body
from master.api.openapi import OPENAPI_PATH
from master.api.ports import ControlPlane, LeaderView
from master.api.settings import ApiSettings
from tasks.errors import ExportdError, Unavailable, ValidationError
from tasks.logs import get_logger
from tasks.tls import TlsSettings, client_ssl_context, is_cluster_master, peer_identities

log = get_logger(__name__)

FORWARDED_BY = "X-Exportd-Forwarded-By"
FORWARDED_TO = "X-Exportd-Forwarded-To"
VIEW = "X-Exportd-View"
_PASSED_HEADERS = ("Authorization", "Content-Type", "Accept")
CLIENT_KEY = web.AppKey("forward_client", aiohttp.ClientSession)
_API = "/api/v1/"
_LOCAL_READS = frozenset(("/api/v1/leader", OPENAPI_PATH))


def master_peer_context(tls: TlsSettings, cluster: str) -> ssl.SSLContext:
    """A client context that completes a handshake only with a master of `cluster`: the
    certificate chains to the CA of `tls` AND its SAN URI names role master in `cluster`.
    Host names are not checked (the identity is the URI). The check runs in the handshake, so a
    failed one sends nothing."""
    context = client_ssl_context(tls)
    context.check_hostname = False

    class MasterPeer(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            cert = self.getpeercert(binary_form=True)
            if not cert or not is_cluster_master(peer_identities(cert), cluster=cluster):
                raise ssl.SSLCertVerificationError(
                    f"the peer's certificate does not name a master of cluster {cluster!r}")

    context.sslobject_class = MasterPeer
    return context


def leader_base_url(leader: LeaderView, *, tls: bool) -> str:
    """The leader's HTTP base URL, without a trailing slash: https with TLS whatever scheme the
    znode names (a forged http:// must not downgrade), else as published (http by default)."""
    base = leader.http.strip().rstrip("/")
    if not base:
        raise Unavailable(f"the leader {leader.id or '?'} has not published an HTTP address yet; "
                          "retry shortly")
    scheme, sep, rest = base.partition("://")
    address = rest if sep else scheme
    if tls:
        return f"https://{address}"
    return base if sep else f"http://{address}"


def forward_target(control: ControlPlane, settings: ApiSettings, already_forwarded: bool,
                   *, tls: bool = True, carries_token: bool = False) -> str:
    """Where to send a request this master may not answer itself, or Unavailable with the
    reason."""
    if not tls and carries_token:
        raise Unavailable("this master runs without TLS (tls.insecure) and never forwards a "
                          "token in clear: send the request to the leader (exportctl tries "
                          "every master)")
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
    return leader_base_url(leader, tls=tls)


def forwards_read(path: str) -> bool:
    """Whether a standby asks the leader for this read (cluster state) rather than answering it
    (this process's health and metrics, who leads, the API document)."""
    return path.startswith(_API) and path not in _LOCAL_READS


async def _relay(request: web.Request, base: str, body: bytes | None,
                 settings: ApiSettings, timeout: float) -> web.Response:
    headers = {name: request.headers[name] for name in _PASSED_HEADERS
               if name in request.headers}
    for name, value in headers.items():
        # aiohttp reads header bytes that are not UTF-8 as surrogates, which cannot be sent on
        # as they came (the leader would see another value): the client's mistake, said so.
        if not value.isascii() and not _utf8(value):
            raise ValidationError(f"the {name} header is not valid UTF-8")
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


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def _local_view(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if request.path.startswith(_API):
        response.headers[VIEW] = "zookeeper"
    return response


def forward_middleware(control: ControlPlane, settings: ApiSettings, *,
                       tls: bool) -> Middleware:
    """`tls`: whether the forwarding client verifies the leader (master_peer_context)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if control.is_leader():
            return await handler(request)
        forwarded = FORWARDED_BY in request.headers
        where: dict[str, Any] = {"tls": tls,
                                 "carries_token": "Authorization" in request.headers}
        if not is_write(request.method):
            if forwarded or not forwards_read(request.path):
                return await _local_view(request, handler)
            try:
                base = forward_target(control, settings, False, **where)
                return await _relay(request, base, None, settings,
                                    settings.read_forward_timeout)
            except (Unavailable, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("api_read_served_locally", path=request.path,
                            reason=getattr(exc, "message", None) or type(exc).__name__)
                return await _local_view(request, handler)
        base = forward_target(control, settings, forwarded, **where)
        body = await read_body(request, settings.max_body_bytes, settings.body_timeout)
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
    settings: ApiSettings, ssl_context: ssl.SSLContext | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx entry: one client session for forwarding (verifying the leader with
    `ssl_context` when given), closed with the app."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=settings.forward_timeout)
        # Idle connections to the leader are dropped well before its header_timeout closes
        # them (masters share their api settings), so a forward never races that close.
        connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True,
                                         keepalive_timeout=settings.header_timeout / 2)
        app[CLIENT_KEY] = aiohttp.ClientSession(timeout=timeout, connector=connector)
        try:
            yield
        finally:
            await app[CLIENT_KEY].close()

    return ctx
