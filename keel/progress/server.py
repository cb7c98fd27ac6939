"""The progress server: a workflow's progress events as Server-Sent Events, resumable.

``GET /progress/{workflow_id}`` streams the events after the one the ``Last-Event-ID``
header (or the ``last_event_id`` query parameter, for clients that cannot set headers)
names, each with its ``id:`` (``<workflow id>:<seq>``) and ``event:`` (its kind), and ends
after the workflow's final event. A client that loses the connection reconnects with the
last id it saw and gets exactly the events it missed: the stream is the Redis Stream the
workflow's activities append to, so nothing depends on this process staying up either.
While nothing happens, a comment line every ``keepalive_seconds`` keeps proxies from
closing the connection. A client that has seen the final event already gets ``204 No
Content``, which tells it to stop reconnecting. ``GET /healthz`` answers ``ok``.

Each open stream holds a Redis connection while it waits, so one server serves at most
``max_streams`` at once (``KEEL_PROGRESS_MAX_STREAMS``); one more is answered ``503`` with
``Retry-After`` instead of opening a connection, and a stream's place is given back however
it ends (the final event, the client gone, the server stopping). Without the bound, anyone
who can reach the port could hold Redis's every client slot, and the workflows' appends
would fail with them.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from keel.progress.events import ProgressEvent, seq_of
from keel.progress.stream import ProgressStream

RETRY_MS = 2000
"""What the server tells EventSource clients to wait before reconnecting."""
MAX_STREAMS = 256
"""Streams one server serves at once by default (``KEEL_PROGRESS_MAX_STREAMS``)."""
BUSY_RETRY_SECONDS = 5
"""The ``Retry-After`` of a ``503`` (every stream taken, or Redis out of reach)."""


def sse_frame(event: ProgressEvent) -> str:
    """One event as an SSE frame (its JSON fits one ``data:`` line)."""
    return f"id: {event.id}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"


class _HeldStream(StreamingResponse):
    """A streaming response that gives its place back when it ends, however it ends (also
    when the client is gone before its first byte, and its body never starts)."""

    def __init__(self, body: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def progress_app(
    stream: ProgressStream, *, keepalive_seconds: float = 15.0, max_streams: int = MAX_STREAMS
) -> Starlette:
    """The ASGI app serving ``stream``, at most ``max_streams`` streams at once."""
    if max_streams < 1:
        raise ValueError(f"max_streams must be at least 1, not {max_streams}")
    serving = [0]

    def release() -> None:
        serving[0] -= 1

    async def events(request: Request) -> Response:
        workflow_id = request.path_params["workflow_id"]
        given = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        try:
            after = seq_of(given, workflow_id)
        except ValueError as err:
            return PlainTextResponse(str(err), status_code=400)
        if serving[0] >= max_streams:
            return _unavailable(
                f"this progress server already serves {max_streams} streams, its limit "
                "(KEEL_PROGRESS_MAX_STREAMS)"
            )
        serving[0] += 1
        try:
            last = await stream.last(workflow_id)
        except RedisError as err:
            release()
            return _unavailable(f"the progress store is out of reach ({type(err).__name__})")
        except BaseException:
            release()
            raise
        if last is not None and last.final and last.seq <= after:
            # The client has seen the end already: 204 tells an EventSource (and keel
            # watch) to stop reconnecting, where an empty 200 would bring it back forever.
            release()
            return Response(status_code=204)
        return _HeldStream(_frames(stream, workflow_id, after, keepalive_seconds), release)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            # ``path``: a workflow id may hold slashes (``keel watch`` sends them escaped).
            Route("/progress/{workflow_id:path}", events),
            Route("/healthz", healthz),
        ]
    )


def _unavailable(why: str) -> Response:
    """``503`` with ``Retry-After``: a passing fault, for the client to come back after."""
    return PlainTextResponse(
        f"{why}; try again in {BUSY_RETRY_SECONDS} s",
        status_code=503,
        headers={"Retry-After": str(BUSY_RETRY_SECONDS)},
    )


async def _frames(
    stream: ProgressStream, workflow_id: str, after: int, keepalive_seconds: float
) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    seq = after
    while True:
        found = await stream.read(workflow_id, seq, block_ms=int(keepalive_seconds * 1000))
        if not found:
            yield ": keepalive\n\n"
            continue
        for event in found:
            yield sse_frame(event)
            seq = event.seq
            if event.final:
                return


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the host process (``keel dev``) owns them."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ProgressServer:
    """Serve the progress stream over HTTP for the block (``async with``)."""

    def __init__(
        self,
        stream: ProgressStream,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        keepalive_seconds: float = 15.0,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.stream = stream
        self.host = host
        self.port = port
        config = uvicorn.Config(
            progress_app(stream, keepalive_seconds=keepalive_seconds, max_streams=max_streams),
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> ProgressServer:
        """Listen (``OSError`` if the port is taken), then serve in a task."""
        # Bound here, not by uvicorn: uvicorn ends the process (SystemExit) when it cannot.
        listening = socket.create_server((self.host, self.port))
        self.port = listening.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[listening]))
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


@asynccontextmanager
async def progress_server(
    stream: ProgressStream, *, port: int, host: str = "127.0.0.1", max_streams: int = MAX_STREAMS
) -> AsyncIterator[ProgressServer]:
    """A ``ProgressServer`` on ``port``, or on any free port when that one is taken (a
    second ``keel dev`` on the machine); its ``port`` says which."""
    server = ProgressServer(stream, host=host, port=port, max_streams=max_streams)
    try:
        await server.__aenter__()
    except OSError:
        if port == 0:
            raise
        server = ProgressServer(stream, host=host, port=0, max_streams=max_streams)
        await server.__aenter__()
    try:
        yield server
    finally:
        await server.__aexit__(None, None, None)
