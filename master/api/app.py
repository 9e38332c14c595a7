"""`create_app`: the master's HTTP API as an aiohttp application.

Middlewares, outermost first: count the request in API_REQUESTS (method, status); turn errors
into JSON (master/api/errors.py); check the bearer token (master/api/auth.py); forward writes to
the leader when this master does not lead (master/api/forward.py). Then the route's handler.
"""

from __future__ import annotations

import ssl

from aiohttp import web
from aiohttp.typedefs import Handler

from master.api.auth import ANONYMOUS, PRINCIPAL, auth_middleware, is_write
from master.api.body import validator_ctx
from master.api.encode import json_response
from master.api.errors import error_middleware
from master.api.forward import forward_client_ctx, forward_middleware
from master.api.handlers import CONTROL, SETTINGS
from master.api.listener import handler_args
from master.api.openapi import OPENAPI_PATH, openapi_document
from master.api.ports import ControlPlane
from master.api.routes import add_routes
from master.api.settings import ApiSettings
from master.metrics import API_REQUESTS
from tasks.errors import ConfigError
from tasks.logs import get_logger

log = get_logger(__name__)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        API_REQUESTS.labels(method=request.method, status=str(status)).inc()
        if is_write(request.method):
            # Writes change the cluster: keep an audit line for each, naming the token (its
            # name, never the secret) that was let through, or `anonymous` for a refused one.
            # (`principal`, not a field named like a secret: the log processors mask those.)
            who = request.get(PRINCIPAL, ANONYMOUS)
            log.info("api_write", method=request.method, path=request.path, status=status,
                     principal=who.name, role=who.role)


async def _openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


def create_app(control: ControlPlane, settings: ApiSettings, *,
               forward_ssl: ssl.SSLContext | None = None) -> web.Application:
    """The API app for one master; the caller runs it (web.AppRunner and
    master.api.listener.ApiSite, which adds the head deadline). Refuses
    settings with no token unless they say `auth: none` (the caller checks the listen address
    with master.api.auth.check_auth_mode). `forward_ssl`: the context a standby forwards to the
    leader with (master.api.forward.master_peer_context); None (tls.insecure) forwards only
    requests without a token, in clear."""
    if not settings.open_mode and not settings.tokens():
        raise ConfigError("the API has no tokens and api.auth is not 'none'")
    app = web.Application(
        # aiohttp's own limit backs up read_body's, for any body read another way.
        client_max_size=settings.max_body_bytes,
        # keep-alive bounded by header_timeout, short lingering (master/api/listener.py)
        handler_args=handler_args(settings.header_timeout),
        middlewares=[
            metrics_middleware,
            error_middleware,
            auth_middleware(settings),
            forward_middleware(control, settings, tls=forward_ssl is not None),
        ],
    )
    app[CONTROL] = control
    app[SETTINGS] = settings
    app.cleanup_ctx.append(forward_client_ctx(settings, forward_ssl))
    app.cleanup_ctx.append(validator_ctx)
    add_routes(app)
    app.router.add_route("GET", OPENAPI_PATH, _openapi)
    if settings.open_mode:
        log.warning(
            "api_open_dev_mode",
            message="api.auth is 'none': every client of this loopback address may read AND "
                    "change this cluster. Development only.",
            master=settings.master_id,
        )
    else:
        log.info("api_auth_enabled", readers=[t.name for t in settings.read_tokens],
                 admins=[t.name for t in settings.admin_tokens], master=settings.master_id)
    return app
