"""Bearer-token auth with two roles: `read` (GET routes) and `admin` (every route).

Health, readiness, metrics and the OpenAPI document are open. With no token configured at all
the API runs in open dev mode. The decision is the pure `authorize`; the middleware translates.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from master.api.settings import ApiSettings
from tasks.errors import Forbidden, Unauthorized

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Access(enum.Enum):
    OPEN = "open"
    READ = "read"
    ADMIN = "admin"


def required_access(method: str, path: str) -> Access:
    if path in OPEN_PATHS:
        return Access.OPEN
    return Access.READ if method.upper() in READ_METHODS else Access.ADMIN


def is_write(method: str) -> bool:
    return method.upper() not in READ_METHODS


def _known(token: str, tokens: Iterable[str]) -> bool:
    # compare_digest on every token (no early exit): timing says nothing about which matched.
    found = False
    for candidate in tokens:
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authorize(settings: ApiSettings, need: Access, authorization: str | None) -> None:
    """Return if a request with this Authorization header may proceed, else raise
    Unauthorized (no or unknown token) or Forbidden (a read token on a write)."""
    if need is Access.OPEN or settings.open_mode:
        return
    token = bearer_token(authorization)
    if token is None:
        raise Unauthorized("this route needs 'Authorization: Bearer <token>'")
    if _known(token, settings.admin_tokens):
        return
    if _known(token, settings.read_tokens):
        if need is Access.READ:
            return
        raise Forbidden("this token may only read; writes need an admin token")
    raise Unauthorized("unknown token")


def auth_middleware(settings: ApiSettings) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        authorize(settings, required_access(request.method, request.path),
                  request.headers.get("Authorization"))
        return await handler(request)

    return middleware
