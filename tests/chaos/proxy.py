"""A loopback HTTP/1.1 reverse proxy in front of moto that can hold one S3 write in flight.

The chaos test points the servers' S3 endpoint here. Bytes pass through unchanged in both
directions (one upstream connection per client connection, responses piped raw); the proxy only
frames requests (head, then a Content-Length or chunked body) so it can recognise a *write that
lands*: a PutObject (PUT without `partNumber`, not a copy) or a CompleteMultipartUpload (POST
with `uploadId`) under `path_prefix`. After `arm()`, the next such write is parked whole — the
sender has sent it and waits for the answer, as if it were on the wire — until `release()`,
when it is forwarded unchanged; `wait_answered()` then returns once moto's answer went back into
the sender's socket. That is the issue's fault 2: a write a stalled server sent before its lease
ran out, landing after its successor's.

The proxy runs its own asyncio loop on a daemon thread; the methods here are called from the
test's thread. Every loop is bounded in count, every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

STATUS = re.compile(r"HTTP/1\.[01] (\d{3})[^\r\n]*")
HEAD_LIMIT = 1 << 20          # request head bytes
PIPE_BLOCK = 64 * 1024
MAX_REQUESTS = 1_000_000      # per connection: bounds the request loop
MAX_BLOCKS = 1 << 40          # per pipe: bounds the copy loop


@dataclass(frozen=True)
class HeldWrite:
    method: str
    target: str               # path and query as sent, e.g. /bucket/chaos/t/partition=3/t+3+...
    peer_port: int            # the sender's local port: which process sent it
    held_at: float            # time.monotonic()

    @property
    def key(self) -> str:
        """The object key (the path without the bucket)."""
        path = unquote(urlsplit(self.target).path).lstrip("/")
        return path.split("/", 1)[1] if "/" in path else ""


@dataclass
class _Conn:
    answered: asyncio.Event | None = None   # set by the response pipe once answered
    seen: bytes = b""                       # the answer so far


@dataclass
class HoldingProxy:
    """`start(upstream)` listens on 127.0.0.1:`port` (0: any free port) and returns its URL."""

    path_prefix: str = "/"
    port: int = 0
    writes: list[tuple[float, int, str, str]] = field(default_factory=list)  # (t, port, m, target)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._upstream = ("127.0.0.1", 0)
        self._armed = False
        self._held: HeldWrite | None = None
        self._held_event = threading.Event()
        self._answered_event = threading.Event()
        self._release: asyncio.Event | None = None
        self.answer = ""
        self._lock = threading.Lock()

    # -- control (test thread) -----------------------------------------------------------------

    def start(self, upstream: str) -> str:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=10)
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Release anything held, close the listener and every connection, end the thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def arm(self) -> None:
        """Hold the next write that lands (see the module docstring)."""
        with self._lock:
            self._held, self._armed = None, True
            self._held_event.clear()
            self._answered_event.clear()

    def wait_held(self, timeout: float) -> HeldWrite:
        if not self._held_event.wait(timeout):
            raise TimeoutError(f"no S3 write reached the proxy within {timeout:.0f}s of arming")
        assert self._held is not None
        return self._held

    def release(self) -> None:
        """Forward the held write unchanged."""
        release = self._release
        if release is not None:
            self._loop.call_soon_threadsafe(release.set)

    def wait_answered(self, timeout: float) -> str:
        """Block until the store's answer to the released write reached the sender's socket;
        return its status line (e.g. `HTTP/1.1 412 Precondition Failed`)."""
        if not self._answered_event.wait(timeout):
            raise TimeoutError(f"the released write was not answered within {timeout:.0f}s")
        return self.answer

    def writes_since(self, since: float) -> list[tuple[float, int, str, str]]:
        with self._lock:
            return [w for w in self.writes if w[0] >= since]

    # -- the loop ------------------------------------------------------------------------------

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  limit=HEAD_LIMIT)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        if self._release is not None:
            self._release.set()
        if self._server is not None:
            self._server.close()
            if hasattr(self._server, "close_clients"):
                self._server.close_clients()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer_port = int(writer.get_extra_info("peername")[1])
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        conn = _Conn()
        back = asyncio.create_task(self._pipe_back(up_reader, writer, conn))
        try:
            await self._requests(reader, up_writer, conn, peer_port)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            # The client is done: close upstream, let the last answer through, then end.
            with contextlib.suppress(Exception):
                up_writer.write_eof()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(back, timeout=5)
            back.cancel()
            for w in (up_writer, writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe_back(self, up: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         conn: _Conn) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            for _ in range(MAX_BLOCKS):
                data = await up.read(PIPE_BLOCK)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                if conn.answered is not None:
                    conn.seen += data
                    final = _final_status(conn.seen)
                    if final is not None:   # not only a `100 Continue` yet
                        conn.answered.set()
                        conn.answered = None
                        self.answer = final
                        self._answered_event.set()
        with contextlib.suppress(Exception):
            writer.close()

    async def _requests(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter,
                        conn: _Conn, peer_port: int) -> None:
        for _ in range(MAX_REQUESTS):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return   # the client closed its connection
            method, target, headers = _parse_head(head)
            if self._is_write(method, target, headers):
                with self._lock:
                    self.writes.append((time.monotonic(), peer_port, method, target))
                    hold = self._armed
                    if hold:
                        self._armed = False
                if hold:
                    body = b"".join([chunk async for chunk in _body(reader, headers)])
                    self._release = asyncio.Event()
                    self._held = HeldWrite(method, target, peer_port, time.monotonic())
                    self._held_event.set()
                    await self._release.wait()
                    conn.answered = asyncio.Event()
                    up.write(head + body)
                    await up.drain()
                    continue
            up.write(head)
            async for chunk in _body(reader, headers):
                up.write(chunk)
                await up.drain()
            await up.drain()

    def _is_write(self, method: str, target: str, headers: dict[str, str]) -> bool:
        parts = urlsplit(target)
        if not unquote(parts.path).startswith(self.path_prefix):
            return False
        query = parts.query
        if method == "PUT":
            return "partNumber=" not in query and "x-amz-copy-source" not in headers
        return method == "POST" and "uploadId=" in query


def _final_status(answer: bytes) -> str | None:
    """The first status line of `answer` that is not an interim 1xx one, if it came yet."""
    for match in STATUS.finditer(answer.decode("latin-1")):
        if not match.group(1).startswith("1"):
            return match.group(0)
    return None


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The request body's raw bytes, in pieces, exactly as framed on the wire."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        for _ in range(MAX_BLOCKS):
            size_line = await reader.readuntil(b"\r\n")
            yield size_line
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                for _ in range(MAX_REQUESTS):   # trailers, then the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    yield trailer
                    if trailer == b"\r\n":
                        return
                return
            yield await reader.readexactly(size + 2)
        return
    remaining = int(headers.get("content-length", "0") or 0)
    for _ in range(MAX_BLOCKS):
        if remaining <= 0:
            return
        data = await reader.readexactly(min(remaining, PIPE_BLOCK))
        remaining -= len(data)
        yield data
