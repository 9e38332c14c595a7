"""Bearer-token auth with two roles: `read` (GET routes) and `admin` (every route).

Health, readiness, metrics and the OpenAPI document are open. Every other route needs a
configured token: `authorize` is the one pure decision (which principal, may it do this), the
middleware only translates and leaves the principal on the request for the audit line. Tokens
are compared in constant time, as SHA-256 digests of their bytes, every configured token on every
call, so neither timing nor length tells which (or how long a) token matched. `check_auth_mode`
is the start-up rule: tokens are required, and `auth: none` (no auth) only on loopback.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: a token's name and role; `anonymous` on open routes / auth none."""

    name: str
    role: str


ANONYMOUS = Principal("anonymous", "none")
PRINCIPAL = web.RequestKey("principal", Principal)


def required_access(method: str, path: str) -> Access:
    if path in OPEN_PATHS:
        return Access.OPEN
    return Access.READ if method.upper() in READ_METHODS else Access.ADMIN


def is_write(method: str) -> bool:
    return method.upper() not in READ_METHODS


def _digest(token: str) -> bytes:
    # surrogateescape: a header that is not UTF-8 reaches us with surrogates; it is just an
    # unknown token (401), never an encoding error (500).
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def match_token(settings: ApiSettings, token: str) -> Principal | None:
    """The principal a token belongs to, or None. Compares against every configured token (no
    early exit)."""
    given = _digest(token)
    found: Principal | None = None
    for candidate, role in settings.tokens():
        if hmac.compare_digest(given, _digest(candidate.token)) and found is None:
            found = Principal(candidate.name, role)
    return found


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authorize(settings: ApiSettings, need: Access, authorization: str | None) -> Principal:
    """The principal of a request with this Authorization header if it may proceed, else
    Unauthorized (no or unknown token) or Forbidden (a read token on a write)."""
    if need is Access.OPEN or settings.open_mode:
        return ANONYMOUS
    token = bearer_token(authorization)
    if token is None:
        raise Unauthorized("this route needs 'Authorization: Bearer <token>'")
    principal = match_token(settings, token)
    if principal is None:
        raise Unauthorized("unknown token")
    if need is Access.ADMIN and principal.role != "admin":
        raise Forbidden("this token may only read; writes need an admin token",
                        principal=principal.name)
    return principal


def is_loopback(host: str) -> bool:
    """Whether a listen address accepts connections from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_auth_mode(settings: ApiSettings, listen_host: str) -> str | None:
    """The start-up rule, as the one line to print when it is broken (None when it holds):
    the API needs tokens, unless the operator says `api.auth: none`, which is allowed only on a
    loopback listen address (no one else can reach the open API)."""
    if settings.auth == "none":
        if is_loopback(listen_host):
            return None
        return (f"api.auth is 'none' (no auth) but http.host is {listen_host!r}: an open API "
                "is allowed only on a loopback address (127.0.0.1, ::1); configure "
                "api.admin_tokens / api.read_tokens instead (docs/SECURITY.md, 'API')")
    if settings.tokens():
        return None
    return ("the API has no tokens: set api.admin_tokens (e.g. {name: ci, token: ...}) and/or "
            "api.read_tokens, or api.auth: none for an open API on a loopback address "
            "(development only; docs/SECURITY.md, 'API')")


def auth_middleware(settings: ApiSettings) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            request[PRINCIPAL] = authorize(settings, required_access(request.method,
                                                                     request.path),
                                           request.headers.get("Authorization"))
        except Forbidden as exc:   # a known token, refused: the audit line still names it
            request[PRINCIPAL] = Principal(str(exc.details.get("principal", "?")), "read")
            raise
        return await handler(request)

    return middleware
