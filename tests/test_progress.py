"""The progress stream: appends that a retry cannot duplicate nor leave a gap in, and the SSE
server that resumes from ``Last-Event-ID`` — against a live ingestion run, a client that
drops the connection mid-stream and comes back sees every event once, in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import cast

import httpx
import pytest
from redis.exceptions import ResponseError
from temporalio.testing import WorkflowEnvironment

from keel.cli.watch import sse_data
from keel.progress.events import ProgressEvent, event_id, seq_of
from keel.progress.server import ProgressServer
from keel.progress.stream import ProgressGapError, ProgressStream
from keel.scenarios.ingestion import APP, SupplierIngestionWorkflow
from keel.scenarios.ingestion.fixtures import job
from keel.testing import keel_worker
from tests.test_ingestion import REDIS_URL, assert_complete_stream, settings_for, stream

__all__ = ["stream"]  # the fixture, shared with tests.test_ingestion


def events(workflow_id: str, seqs: range, *, final_at: int | None = None) -> list[ProgressEvent]:
    return [
        ProgressEvent(
            id=event_id(workflow_id, seq),
            seq=seq,
            workflow_id=workflow_id,
            kind="finished" if seq == final_at else "batch",
            done=seq,
            total=final_at or 100,
            message=f"event {seq}",
            at=datetime(2026, 12, 1, tzinfo=UTC),
            final=seq == final_at,
        )
        for seq in seqs
    ]


async def test_a_retried_append_adds_nothing_twice_and_a_gap_is_refused(
    stream: ProgressStream,
) -> None:
    wid = f"wf-{uuid.uuid4().hex[:8]}"
    assert await stream.append(wid, events(wid, range(1, 6))) == (5, 5)
    # A retry of the same batch, and one that overlaps the next: only the new ones land.
    assert await stream.append(wid, events(wid, range(1, 6))) == (0, 5)
    assert await stream.append(wid, events(wid, range(3, 9))) == (3, 8)
    with pytest.raises(ProgressGapError, match="is 9, not 10"):
        await stream.append(wid, events(wid, range(10, 12)))
    # Two attempts racing (a worker presumed dead that was not): each event once.
    await asyncio.gather(*(stream.append(wid, events(wid, range(9, 20))) for _ in range(4)))
    assert [e.seq for e in await stream.all(wid)] == list(range(1, 20))


def test_a_last_event_id_names_a_seq_of_this_workflow_only() -> None:
    assert seq_of("ingest-1:42", "ingest-1") == 42
    assert seq_of("a:b:7", "a:b") == 7  # workflow ids may hold colons
    assert seq_of("other:42", "ingest-1") == 0
    assert seq_of(None, "ingest-1") == 0
    with pytest.raises(ValueError, match="no sequence number"):
        seq_of("ingest-1:x", "ingest-1")


@pytest.fixture
async def server(stream: ProgressStream) -> AsyncIterator[ProgressServer]:
    async with ProgressServer(stream, keepalive_seconds=0.5) as running:
        yield running


async def read_sse(
    url: str, *, last_event_id: str | None = None, stop_after: int | None = None
) -> tuple[list[ProgressEvent], int]:
    """Events from one connection (closed after ``stop_after`` events), and the status."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    seen: list[ProgressEvent] = []
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        if response.status_code != 200:
            return seen, response.status_code
        async for data in sse_data(response.aiter_lines()):
            seen.append(ProgressEvent.model_validate_json(data))
            if stop_after is not None and len(seen) >= stop_after:
                break
    return seen, 200


async def test_a_client_that_disconnects_mid_run_resumes_without_a_gap_or_a_duplicate(
    keel_env: WorkflowEnvironment, stream: ProgressStream, server: ProgressServer
) -> None:
    client = keel_env.client
    workflow_id = f"ingest-sse-{uuid.uuid4().hex[:8]}"
    url = f"{server.url}/progress/{workflow_id}"
    async with keel_worker(client, apps=[APP], settings=settings_for(stream)) as task_queue:
        # Connected before the workflow exists: the stream waits for its first event.
        first_part = asyncio.create_task(read_sse(url, stop_after=40))
        handle = await client.start_workflow(
            SupplierIngestionWorkflow.run,
            job("sse", "Watched", 120, batch_size=10, records_per_run=50),
            id=workflow_id,
            task_queue=task_queue,
        )
        first, _ = await first_part
        assert len(first) == 40
        rest, _ = await read_sse(url, last_event_id=first[-1].id)
        await handle.result()
    union = first + rest
    assert_complete_stream(union, workflow_id, 120)
    assert union == await stream.all(workflow_id)
    # Reconnecting after the final event ends at once; a bad id is refused.
    # After the final event: 204, so that an EventSource stops reconnecting.
    assert await read_sse(url, last_event_id=union[-1].id) == ([], 204)
    assert (await read_sse(url, last_event_id=f"{workflow_id}:zz"))[1] == 400
    # From an id in the middle: exactly the rest.
    tail, _ = await read_sse(url, last_event_id=union[99].id)
    assert tail == union[100:]


async def test_an_append_that_cannot_reach_redis_fails_retryably_saying_what_to_check() -> None:
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from keel.progress.activities import ProgressActivities
    from keel.progress.events import AppendProgress
    from tests.conftest import free_port

    unreachable = ProgressActivities(ProgressStream.open(f"redis://127.0.0.1:{free_port()}/0"))
    wid = "wf-unreachable"
    with pytest.raises(ApplicationError) as failure:
        await ActivityEnvironment().run(
            unreachable.append, AppendProgress(workflow_id=wid, events=events(wid, range(1, 3)))
        )
    await unreachable.aclose()
    assert failure.value.type == "ProgressStoreUnavailable" and not failure.value.non_retryable
    assert "check KEEL_REDIS_URL" in failure.value.message


async def test_a_key_that_holds_another_stream_is_refused_not_overwritten(
    stream: ProgressStream,
) -> None:
    wid = f"wf-{uuid.uuid4().hex[:8]}"
    await stream.redis.xadd(stream.key(wid), {"someone": "else"})
    with pytest.raises(ResponseError, match="KEEL_FOREIGN"):
        await stream.append(wid, events(wid, range(1, 2)))
    assert await stream.redis.xlen(stream.key(wid)) == 1


async def test_a_taken_port_gives_a_server_on_another_one(stream: ProgressStream) -> None:
    import socket

    from keel.progress.server import progress_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with progress_server(stream, port=port) as running:
            assert running.port not in (0, port)
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"{running.url}/healthz")
    assert answer.text == "ok"


@asynccontextmanager
async def held_stream(url: str) -> AsyncIterator[int]:
    """A stream kept open for the block (its first line read): yields the status."""
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("GET", url) as response,
    ):
        # Read the first line (the retry: line, sent at once) through an iterator held for
        # the block: a ``break`` out of ``aiter_lines`` would close the connection as soon
        # as the abandoned generator is collected.
        lines = cast(AsyncGenerator[str, None], response.aiter_lines())
        try:
            if response.status_code == 200:
                assert (await anext(lines)).startswith("retry:")
            yield response.status_code
        finally:
            await lines.aclose()


async def status_when_free(url: str, seconds: float = 10.0) -> int:
    """The status of a stream opened once the server has a place for it (it gives a place
    back when it notices the client is gone, a moment after); the stream is closed at once."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("GET", url) as response,
        ):
            status = response.status_code
        if status != 503 or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.1)


async def both_open(urls: list[str], seconds: float = 10.0) -> bool:
    """Whether two streams are open at once within ``seconds`` (places come back a moment
    after their clients are gone)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        async with held_stream(urls[0]) as first, held_stream(urls[1]) as second:
            if (first, second) == (200, 200):
                return True
        await asyncio.sleep(0.1)
    return False


async def test_a_server_serves_its_limit_of_streams_and_a_flood_cannot_hold_redis(
    stream: ProgressStream,
) -> None:
    """Each waiting stream holds a Redis connection: past the limit, a client gets 503 with
    Retry-After, and no connection; a stream's place comes back however it ends."""
    name = f"keel-progress-test-{uuid.uuid4().hex[:8]}"
    served = ProgressStream.open(
        REDIS_URL, prefix=stream.prefix, max_connections=4, client_name=name
    )
    finished = f"done-{uuid.uuid4().hex[:6]}"
    await stream.append(finished, events(finished, range(1, 4), final_at=3))
    try:
        async with ProgressServer(served, keepalive_seconds=0.2, max_streams=2) as server:
            waiting = [f"{server.url}/progress/never-{i}" for i in range(3)]
            async with held_stream(waiting[0]) as first, held_stream(waiting[1]) as second:
                assert (first, second) == (200, 200)
                async with httpx.AsyncClient(timeout=30) as client:
                    refused = await client.get(waiting[2])
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "5"
                assert "KEEL_PROGRESS_MAX_STREAMS" in refused.text
                # A flood while both places are taken: every one refused, no connection.
                flood = await asyncio.gather(*(status_when_free(waiting[2], 0) for _ in range(40)))
                assert set(flood) == {503}
                names = [c.get("name") for c in await stream.redis.client_list()]
                assert 2 <= names.count(name) <= 4
            assert await both_open(waiting[:2])
            # Clients gone before their stream's first byte give their places back too.
            for _ in range(5):
                _, writer = await asyncio.open_connection(server.host, server.port)
                writer.write(
                    f"GET /progress/never-0 HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode()
                )
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            # Every place is back: two streams at once again, and one to the end of a run.
            assert await both_open(waiting[:2])
            seen, status = await read_sse(f"{server.url}/progress/{finished}")
            assert (status, [e.seq for e in seen]) == (200, [1, 2, 3])
    finally:
        await served.aclose()


async def test_a_workflow_id_with_slashes_is_served_as_keel_watch_asks_for_it(
    stream: ProgressStream, server: ProgressServer
) -> None:
    from urllib.parse import quote

    wid = f"team/q4 batch%{uuid.uuid4().hex[:6]}/?#"
    await stream.append(wid, events(wid, range(1, 5), final_at=4))
    url = f"{server.url}/progress/{quote(wid, safe='')}"  # as keel watch builds it
    seen, status = await read_sse(url)
    assert status == 200 and [e.seq for e in seen] == [1, 2, 3, 4]
    assert {e.workflow_id for e in seen} == {wid}
    rest, _ = await read_sse(url, last_event_id=seen[1].id)
    assert [e.seq for e in rest] == [3, 4]
