"""The one place where errors become HTTP responses.

Every `tasks.errors.ExportdError` is answered with its own `http_status` and `to_dict()` as the
JSON body; aiohttp's own errors (unknown route 404, wrong method 405, body too large 413) get the
same JSON shape; anything else is a bug: 500 with a generic body, the traceback goes to the log.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from master.api.encode import json_response
from tasks.errors import ExportdError, PayloadTooLarge, Unauthorized, ValidationError
from tasks.logs import get_logger

log = get_logger(__name__)

# aiohttp's HTTP errors by status -> our error codes, so clients see one vocabulary.
HTTP_CODES = {
    400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 408: "timeout", 409: "conflict", 413: "too_large",
    415: "unsupported_media_type", 431: "too_large", 503: "unavailable",
}
# Headers of an aiohttp HTTPException worth keeping on the JSON answer (405 names the methods).
_KEPT_HEADERS = ("Allow", "Retry-After")


class UnsupportedMediaType(ValidationError):
    """A request body in a format the route does not read."""

    http_status = 415
    code = "unsupported_media_type"


class RequestTimeout(ExportdError):
    """A request's body did not arrive within `api.body_timeout`."""

    http_status = 408
    grpc_code = "DEADLINE_EXCEEDED"
    code = "timeout"


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    """The JSON body of every error (the shape of ExportdError.to_dict())."""
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return body


def exportd_error_response(exc: ExportdError) -> web.Response:
    headers = None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": 'Bearer realm="exportd"'}
    return json_response(exc.to_dict(), status=exc.http_status, headers=headers)


def http_exception_response(exc: web.HTTPException, request: web.Request) -> web.Response:
    if exc.status == 413:
        # aiohttp's own limit (client_max_size) tripped: answer like PayloadTooLarge.
        return exportd_error_response(PayloadTooLarge(exc.text or "request body too large"))
    code = HTTP_CODES.get(exc.status, "http_error")
    message = f"{exc.reason}: {request.method} {request.path}"
    headers = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
    return json_response(error_body(code, message), status=exc.status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ExportdError as exc:
        return exportd_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are answers, not errors
            raise
        return http_exception_response(exc, request)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("api_unhandled_error", method=request.method, path=request.path)
        return json_response(
            error_body("internal", "internal error in the master; the traceback is in its log"),
            status=500,
        )
