"""HTTP sink (aiohttp): POST one chunk per request, retry with backoff, dead-letter refusals.

Delivery is at-least-once plus a key: each request carries `Idempotency-Key: <task id>:<start
offset>-<end offset>` (`idempotency_key`), the chunk's source offsets [start, end). It is the same
for every retry, and for the re-sent chunk after a restart or on the task's next owner as long
as chunking is deterministic (rotation by records or bytes, tasks/batching.py; `max_seconds` and
a drain cut by time), so the receiver deduplicates by it; docs/architecture/pipeline.md, "HTTP
sink". Before each POST the worker's lease is checked (`Fenced`, tasks/fence.py): a worker
whose lease ran out starts no request. Connection errors, timeouts,
408, 429 and 5xx are retried with exponential backoff and full jitter up to the spec's
max_retries, then reported as a retryable SinkError (the pipeline keeps trying and shows the
error). Any other 4xx means the receiver refuses these records: they are dead-lettered with the
response's status and reason, and the task moves on.

A header's value may hold `${env:EXPORTD_SECRET_<NAME>}` (a token, say): it is replaced from the
environment of the server running the task, so the job spec — stored in ZooKeeper, shown by the
API — holds the reference, never the secret.

Egress (tasks/egress.py): the session resolves names through `EgressResolver`, which keeps only
the addresses the server's egress rules allow, at every connection (a name that turns private
later is refused then, and the task fails with the reason); IP literals are checked when the task
is built; redirects are not
followed (a 3xx is a refusal like another 4xx), so a receiver cannot send the batch elsewhere.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Mapping, Sequence

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from tasks.batching import Chunk
from tasks.egress import IpNetwork, address_allowed
from tasks.errors import SinkError
from tasks.fence import WorkerFence
from tasks.formats import content_encoding, content_type, render_file
from tasks.sinks.base import CpuClock, backoff_delay, rejected
from tasks.spec import Format, HttpSink, resolve_secret_refs
from tasks.transforms.batch import DeadRecord

RETRY_STATUSES = frozenset({408, 425, 429})


def resolve_headers(headers: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The headers with every `${env:EXPORTD_SECRET_...}` replaced from `environ` (the spec
    allows no other reference); ConfigError naming the header and variable if one is unset."""
    return {name: resolve_secret_refs(text, environ, what=f"HTTP header {name}", header=name)
            for name, text in headers.items()}


class EgressDenied(OSError):
    """A name resolved only to addresses the egress rules refuse."""


class EgressResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses HTTP sinks may reach
    (tasks.egress.address_allowed); none left is a connection error naming the rule."""

    def __init__(self, allow: Sequence[IpNetwork], inner: AbstractResolver | None = None) -> None:
        self.allow = tuple(allow)
        self._inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [entry for entry in found if address_allowed(entry["host"], self.allow)]
        if not kept:
            refused = ", ".join(sorted({entry["host"] for entry in found}))
            raise EgressDenied(errno.EACCES,
                               f"{host} resolves to {refused}, which HTTP sinks may not reach "
                               "(egress.http_allow_networks on the servers allows networks)")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def idempotency_key(task_id: str, chunk: Chunk) -> str:
    """`<task id>:<start>-<end>`: the chunk's offsets [start, end) name it, whoever sends it."""
    return f"{task_id}:{chunk.start_offset}-{chunk.end_offset}"


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in RETRY_STATUSES


class HttpSinkWriter:
    chained = False
    commits_offsets = False
    def __init__(self, spec: HttpSink, fmt: Format, *, task_id: str,
                 backoff_base: float = 0.2, allow_networks: Sequence[IpNetwork] = (),
                 fence: WorkerFence | None = None) -> None:
        self.spec, self.fmt, self.task_id = spec, fmt, task_id
        self.fence = fence or WorkerFence.unbounded()
        self.backoff_base = backoff_base
        self.allow_networks = tuple(allow_networks)   # non-public networks it may reach
        self._headers = resolve_headers(spec.headers, os.environ)
        self.cpu = CpuClock()
        self._session: aiohttp.ClientSession | None = None

    def headers_for(self, chunk: Chunk) -> dict[str, str]:
        headers = {**self._headers, "Content-Type": content_type(self.fmt),
                   "Idempotency-Key": idempotency_key(self.task_id, chunk)}
        encoding = content_encoding(self.fmt)
        if encoding:
            headers["Content-Encoding"] = encoding
        return headers

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=EgressResolver(self.allow_networks))
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.spec.timeout))
        return self._session

    async def write(self, chunk: Chunk) -> list[DeadRecord]:
        body = await asyncio.to_thread(self.cpu.run, render_file, self.fmt, chunk.items)
        headers, url = self.headers_for(chunk), str(self.spec.url)
        last = ""
        for attempt in range(self.spec.max_retries + 1):
            if attempt:
                await asyncio.sleep(backoff_delay(attempt - 1, base=self.backoff_base))
            self.fence.check("http")
            try:
                async with self._session_now().post(url, data=body, headers=headers,
                                                    allow_redirects=False) as resp:
                    text = (await resp.text(errors="replace"))[:200]
                    if resp.status < 300:
                        return []
                    last = f"HTTP {resp.status} {resp.reason}: {text}".strip()
                    if not is_retryable_status(resp.status):
                        return rejected(chunk, last)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, EgressDenied):   # not retried: the task fails
                    raise SinkError(f"POST {url} refused: {exc.os_error.strerror}",
                                    retryable=False, url=url) from exc
                last = f"{type(exc).__name__}: {exc}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
        raise SinkError(f"POST {url} failed {self.spec.max_retries + 1} times: {last}",
                        retryable=True, url=url)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
