"""An HTTP receiver on 127.0.0.1 for the HTTP sink's tests, scripted per request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Request:
    key: str
    records: list[dict[str, Any]]
    authorization: str = ""


Decide = Callable[[Request, int], int]
"""(request, request number) -> the status to answer."""


@dataclass
class Receiver:
    decide: Decide = lambda _req, _n: 200
    delay: float = 0.0
    accepted: list[Request] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        req = Request(request.headers.get("Idempotency-Key", ""),
                      [json.loads(line) for line in body.splitlines() if line],
                      request.headers.get("Authorization", ""))
        status = self.decide(req, len(self.statuses))
        self.statuses.append(status)
        if self.delay:
            await asyncio.sleep(self.delay)
        if status < 300:
            self.accepted.append(req)
            return web.Response(status=status)
        return web.Response(status=status, text="poison record" if status < 500 else "boom")

    async def __aenter__(self) -> Receiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/ingest", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = int(self._runner.addresses[0][1])
        self.url = f"http://127.0.0.1:{port}/ingest"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
