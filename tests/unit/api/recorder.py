"""A TLS listener standing in for a forged leader address: it records every byte a client sends
after the handshake (and answers a request with a 201), so a test can show what reached it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Recorder:
    """A TLS listener standing in for a forged leader address: records every byte a client
    sends it after the handshake, and answers any request with a 201."""

    url: str
    received: list[bytes] = field(default_factory=list)
    handshakes: int = 0

    @property
    def data(self) -> bytes:
        return b"".join(self.received)


@contextlib.asynccontextmanager
async def recording_listener(context: ssl.SSLContext) -> AsyncIterator[Recorder]:
    recorder = Recorder("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        recorder.handshakes += 1
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), 5):
                recorder.received.append(chunk)
                if b"\r\n\r\n" in recorder.data:
                    writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n"
                                 b"Content-Type: application/json\r\nConnection: close\r\n"
                                 b"\r\n{}")
                    await writer.drain()
                    break
        except (OSError, ssl.SSLError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    recorder.url = f"https://127.0.0.1:{port}"
    try:
        yield recorder
    finally:
        server.close()
        await server.wait_closed()
