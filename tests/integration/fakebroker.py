"""A "broker" an attacker would run: a TCP listener on loopback that records every byte it
receives and relays the connection to a real broker (so a Kafka client talks to it as to a
cluster, SASL handshake included, and would send it a password if it had one to send).

    async with RecordingRelay("127.0.0.1:9093") as relay:   # relay.bootstrap: its host:port
        ...
        assert b"password" not in relay.received()
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any


class RecordingRelay:
    def __init__(self, target: str | None) -> None:
        self.target = target          # host:port to relay to; None: record and answer nothing
        self.connections = 0
        self._chunks: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.bootstrap = ""

    def received(self) -> bytes:
        return b"".join(self._chunks)

    async def __aenter__(self) -> RecordingRelay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.bootstrap = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.target is None:
                while chunk := await reader.read(65536):
                    self._chunks.append(chunk)
                return
            host, _, port = self.target.rpartition(":")
            up_reader, upstream = await asyncio.open_connection(host, int(port))
            back = asyncio.create_task(self._pump(up_reader, writer, record=False))
            try:
                await self._pump(reader, upstream, record=True)
            finally:
                back.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await back
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    record: bool) -> None:
        while chunk := await reader.read(65536):
            if record:
                self._chunks.append(chunk)
            writer.write(chunk)
            await writer.drain()
