"""The API's listener: aiohttp's server with deadlines, and JSON for requests it cannot parse.

aiohttp bounds neither how long a client may take to send a request's head nor (on every
version) how long a connection may sit without one, so a client that sends half a request line
or header (slowloris), authenticated or not, holds a connection and its buffers as long as it
likes. `ApiSite` (a SockSite) serves the app with a protocol that adds:

- a head deadline: a connection whose first request head (request line and headers) is not
  complete `header_timeout` after it opened is answered 408 and closed. Later requests on a
  kept-alive connection get the same bound from aiohttp's keep-alive timer, which create_app
  sets to `header_timeout` (an idle or half-sent next request is closed when it fires);
- a TLS handshake deadline of `header_timeout` (asyncio's default is 60 s);
- bodies: `read_body` has its own deadline (`body_timeout`, 408), and a handler that does not
  read a body is followed by at most `LINGER_SECONDS` of lingering (create_app);
- a request aiohttp's parser refuses (bad bytes in a header, a line too long) is answered with
  the API's JSON error shape and one line, and logged as one warning line without the request's
  bytes (a header may hold a token), instead of a text page and a logged traceback.

It leans on aiohttp's server internals (RequestHandler's `_request_count`, the Server's handler
kwargs): tests/unit/api/test_robustness.py drives every case over raw sockets, so an aiohttp
upgrade that changes them fails there.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import PayloadEncodingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from master.api.encode import json_response
from master.api.errors import HTTP_CODES, error_body
from tasks.logs import get_logger

log = get_logger(__name__)

LINGER_SECONDS = 2.0
# Where aiohttp's message starts quoting the request's bytes (b'...' or '...').
_QUOTED = re.compile(r"""b?['"]|bytearray\(""")


def _timeout_answer(seconds: float) -> bytes:
    body = json.dumps(error_body(
        "timeout", f"the request's head did not arrive within {seconds:g} s")).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)


def parse_failure(status: int, exc: BaseException | None, message: str | None) -> str:
    """One line saying why aiohttp refused a request: the first line of its message, never the
    bytes it quotes (a refused header may hold a token)."""
    text = str(getattr(exc, "message", None) or message or exc or "").strip()
    first = _QUOTED.split(text.splitlines()[0], maxsplit=1)[0].rstrip(" :.") if text else ""
    if isinstance(exc, PayloadEncodingError) and " " not in first:   # only the encoding's name
        first = f"the body is not valid {first or 'encoded'} (Content-Encoding)"
    return first[:200] or f"status {status}"


class _ApiProtocol(RequestHandler):
    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._head_timeout, self._head_overdue)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None and self._request_count:
            self._head_timer.cancel()       # a whole head arrived (or was refused)
            self._head_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_overdue(self) -> None:
        self._head_timer = None
        transport = self.transport
        if self._request_count or transport is None or transport.is_closing():
            return
        log.info("api_request_head_timeout", timeout=self._head_timeout,
                 peer=str(transport.get_extra_info("peername")))
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_timeout_answer(self._head_timeout))
        self.force_close()      # closes after the answer is flushed

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, RequestPayloadError):   # a body that did not decode, read again
            cause = exc.__cause__ or exc           # while lingering: already answered 400
            log.warning("api_malformed_body", reason=parse_failure(400, cause, None))
            return
        super().log_exception(*args, **kw)

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:   # as aiohttp: an answer is already on its way
            raise ConnectionError("response already started; cannot send the error")
        if status >= 500:
            log.error("api_request_failed", status=status,     # a bug: keep the traceback
                      reason=parse_failure(status, exc, message), exc_info=exc)
            body = error_body("internal", "internal error in the master; the reason is in its "
                                          "log")
        else:
            reason = parse_failure(status, exc, message)
            log.warning("api_malformed_request", status=status, reason=reason,
                        peer=request.remote)
            body = error_body(HTTP_CODES.get(status, "invalid"), f"malformed request: {reason}")
        response = json_response(body, status=status)
        response.force_close()
        return response


class ApiSite(web.SockSite):
    """A SockSite whose connections are `_ApiProtocol`s with `header_timeout`, and whose TLS
    handshakes must finish within it."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, *, header_timeout: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(runner, sock, ssl_context=ssl_context)
        self._header_timeout = header_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)       # registers the site with its runner
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        kwargs = dict(server._kwargs)        # what aiohttp passes its own RequestHandler

        def protocol() -> RequestHandler:
            return _ApiProtocol(server, loop=loop, header_timeout=self._header_timeout,
                                **kwargs)

        handshake = self._header_timeout if self._ssl_context is not None else None
        self._server = await loop.create_server(
            protocol, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog,
            ssl_handshake_timeout=handshake)


def handler_args(header_timeout: float) -> dict[str, Any]:
    """aiohttp's own per-connection settings for the API (web.Application(handler_args=...)):
    the keep-alive timer bounds the wait for each next request's head; lingering after an
    unread body is short."""
    return {"keepalive_timeout": header_timeout, "lingering_time": LINGER_SECONDS}
