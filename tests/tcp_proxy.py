"""A TCP proxy the test controls, between the code under test and PostgreSQL.

``cut()`` aborts every open connection (both sides, with a reset), as a failed network or a
restarted database would; ``refuse(True)`` also aborts every new connection as soon as it is
accepted, until ``refuse(False)``: an outage."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """``127.0.0.1:port`` -> ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.refusing = False
        self.accepted = 0
        self.refused = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        """The proxy's port on 127.0.0.1."""
        assert self._server is not None, "the proxy is not running"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> TcpProxy:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Abort every open connection (call on the proxy's event loop)."""
        self.cuts += 1
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    def refuse(self, refusing: bool) -> None:
        """Start (cutting what is open) or end an outage."""
        self.refusing = refusing
        if refusing:
            self.cut()

    def from_thread(self, refusing: bool | None = None) -> None:
        """``cut()`` (or ``refuse(refusing)``) from another thread, once it has happened."""
        assert self._loop is not None

        async def act() -> None:
            if refusing is None:
                self.cut()
            else:
                self.refuse(refusing)

        asyncio.run_coroutine_threadsafe(act(), self._loop).result(timeout=10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._open -= {writer, up_writer}
            for end in (writer, up_writer):
                end.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
