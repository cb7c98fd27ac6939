"""``keel watch`` as a user runs it: the connection to the progress server is cut mid-stream
and refused for a while; it reconnects by itself with ``Last-Event-ID`` and prints every
event once, in order, then exits after the final one."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from keel.progress.server import ProgressServer
from keel.progress.stream import ProgressStream
from tests.conftest import BIN, free_port
from tests.tcp_proxy import TcpProxy
from tests.test_ingestion import stream
from tests.test_progress import events

__all__ = ["stream"]  # the fixture, shared with tests.test_ingestion

pytestmark = pytest.mark.integration


def watch_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "TEMPORAL_"))}


async def start_watch(tmp: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BIN / "keel"),
        "watch",
        *args,
        cwd=tmp,
        env=watch_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.fixture
async def proxied(stream: ProgressStream) -> AsyncIterator[tuple[ProgressServer, TcpProxy]]:
    async with ProgressServer(stream, keepalive_seconds=0.5) as server:
        proxy = await TcpProxy("127.0.0.1", server.port).start()
        yield server, proxy
        await proxy.aclose()


async def test_watch_reconnects_after_a_cut_and_prints_each_event_once(
    stream: ProgressStream, proxied: tuple[ProgressServer, TcpProxy], tmp_path: Path
) -> None:
    server, proxy = proxied
    wid = f"ingest-watch-{uuid.uuid4().hex[:8]}"
    await stream.append(wid, events(wid, range(1, 31), final_at=60))
    proc = await start_watch(tmp_path, wid, "--url", f"http://127.0.0.1:{proxy.port}", "-o", "json")
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[dict[str, object]] = []
    async with asyncio.timeout(30):
        while len(lines) < 30:
            line = await proc.stdout.readline()
            assert line, "keel watch exited early"
            lines.append(json.loads(line))
    proxy.refuse(True)  # cut the open connection, refuse new ones for a while
    await stream.append(wid, events(wid, range(31, 46), final_at=60))
    await asyncio.sleep(1.0)
    proxy.refuse(False)
    await asyncio.sleep(0.5)
    await stream.append(wid, events(wid, range(46, 61), final_at=60))
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    lines += [json.loads(line) for line in out.decode().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, 61))
    assert lines[-1]["final"] is True
    assert f"reconnecting after {wid}:30" in err.decode()
    assert proxy.accepted >= 2 and proxy.refused >= 1

    # Not a terminal: one plain line per event; the whole stream again, from the start.
    proc = await start_watch(tmp_path, wid, "--url", server.url)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    text = out.decode().splitlines()
    assert proc.returncode == 0 and len(text) == 60, err.decode()
    assert text[0].startswith(f"{wid}:1 batch") and text[-1].startswith(f"{wid}:60 finished")


async def test_watch_gives_up_when_no_server_answers_for_the_time_it_was_given(
    tmp_path: Path,
) -> None:
    proc = await start_watch(
        tmp_path, "ingest-x", "--url", f"http://127.0.0.1:{free_port()}", "--reconnect-for", "1"
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 3
    assert "no progress from http://127.0.0.1:" in err.decode()


async def test_watch_waits_out_a_busy_server_and_then_prints_the_stream(
    stream: ProgressStream, tmp_path: Path
) -> None:
    """A server serving its limit of streams answers 503 with Retry-After: keel watch waits
    that long and connects again, and still prints every event once."""
    from tests.test_progress import held_stream

    wid = f"ingest-busy-{uuid.uuid4().hex[:8]}"
    await stream.append(wid, events(wid, range(1, 11), final_at=10))
    async with ProgressServer(stream, keepalive_seconds=0.5, max_streams=1) as server:
        async with held_stream(f"{server.url}/progress/someone-else") as status:
            assert status == 200
            proc = await start_watch(tmp_path, wid, "--url", server.url, "-o", "json")
            assert proc.stderr is not None
            note = await asyncio.wait_for(proc.stderr.readline(), timeout=30)
            assert b"HTTP 503" in note and b"KEEL_PROGRESS_MAX_STREAMS" in note
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    assert [json.loads(line)["seq"] for line in out.decode().splitlines()] == list(range(1, 11))


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("5", 5.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("86400", 30.0),
        ("nan", 0.0),
        ("inf", 30.0),
        ("Wed, 21 Oct 2026 07:28:00 GMT", 0.0),
        ("", 0.0),
    ],
)
def test_a_servers_retry_after_is_taken_within_bounds(given: str, seconds: float) -> None:
    """A hostile or odd ``Retry-After`` can neither park keel watch for a day nor spin it."""
    from keel.cli.watch import _retry_after

    assert _retry_after(httpx.Response(503, headers={"Retry-After": given})) == seconds


async def test_watch_after_the_final_event_ends_at_once_with_nothing_to_show(
    stream: ProgressStream, tmp_path: Path
) -> None:
    """The server answers 204 to a client that has seen the end; keel watch stops there
    (before, it took the empty stream for a dropped connection and reconnected for 300 s)."""
    wid = f"ingest-ended-{uuid.uuid4().hex[:8]}"
    await stream.append(wid, events(wid, range(1, 6), final_at=5))
    async with ProgressServer(stream, keepalive_seconds=0.5) as server:
        proc = await start_watch(
            tmp_path, wid, "--url", server.url, "--last-event-id", f"{wid}:5", "-o", "json"
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, err.decode()
        assert out == b"" and f"nothing after {wid}:5" in err.decode()
        assert "reconnecting" not in err.decode()
        proc = await start_watch(
            tmp_path, wid, "--url", server.url, "--last-event-id", f"{wid}:3", "-o", "json"
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    assert [json.loads(line)["seq"] for line in out.decode().splitlines()] == [4, 5]


async def workflow_without_worker(env: WorkflowEnvironment, wid: str) -> WorkflowHandle[Any, Any]:
    """A workflow that will never run (no worker polls its queue): RUNNING until ended."""
    return await env.client.start_workflow(
        "NoWorkerRunsThis", id=wid, task_queue=f"nobody-{uuid.uuid4().hex[:8]}"
    )


async def start_checked_watch(
    tmp: Path, wid: str, url: str, env: WorkflowEnvironment, *more: str
) -> asyncio.subprocess.Process:
    """``keel watch`` asking ``env``'s Temporal about ``wid`` after half a second of silence."""
    temporal = ["--address", env.client.service_client.config.target_host, "--namespace", "default"]
    return await start_watch(tmp, wid, "--url", url, "--check-after", "0.5", *temporal, *more)


async def test_watch_stops_when_the_workflow_closed_without_its_final_event(
    dev_env: WorkflowEnvironment, stream: ProgressStream, tmp_path: Path
) -> None:
    """A terminated (failed, cancelled) workflow never sends its final event: keel watch
    asks Temporal after a silence and ends, exit 1, saying how it closed and where the
    stream stops; before, it waited for ever, kept alive by the keepalives."""
    wid = f"ingest-killed-{uuid.uuid4().hex[:8]}"
    handle = await workflow_without_worker(dev_env, wid)
    await stream.append(wid, events(wid, range(1, 4), final_at=10))
    await handle.terminate("operator")
    async with ProgressServer(stream, keepalive_seconds=0.2) as server:
        proc = await start_checked_watch(tmp_path, wid, server.url, dev_env, "-o", "json")
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1, err.decode()
    assert [json.loads(line)["seq"] for line in out.decode().splitlines()] == [1, 2, 3]
    assert "has closed (TERMINATED) without its final progress event" in err.decode()
    assert f"stops after {wid}:3" in err.decode()

    # Its stream gone too (expired): the same, said so.
    gone = f"ingest-expired-{uuid.uuid4().hex[:8]}"
    await (await workflow_without_worker(dev_env, gone)).terminate("operator")
    async with ProgressServer(stream, keepalive_seconds=0.2) as server:
        proc = await start_checked_watch(tmp_path, gone, server.url, dev_env)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1 and out == b"", err.decode()
    assert "has closed (TERMINATED) and its progress stream holds no events" in err.decode()


async def test_watch_of_a_running_workflow_without_events_waits_and_says_why(
    dev_env: WorkflowEnvironment, stream: ProgressStream, tmp_path: Path
) -> None:
    """Running, or not started yet: not over. keel watch says so once and keeps waiting;
    the events, when they come, are shown to the final one."""
    wid = f"ingest-slow-{uuid.uuid4().hex[:8]}"
    later = f"ingest-later-{uuid.uuid4().hex[:8]}"
    handle = await workflow_without_worker(dev_env, wid)
    async with ProgressServer(stream, keepalive_seconds=0.2) as server:
        procs = [
            await start_checked_watch(tmp_path, w, server.url, dev_env, "-o", "json")
            for w in (wid, later)
        ]
        notes = []
        for proc in procs:
            assert proc.stderr is not None
            notes.append(await asyncio.wait_for(proc.stderr.readline(), timeout=30))
        assert b"is running and has written no progress yet; still waiting" in notes[0]
        assert f"no workflow {later} in namespace default (yet)".encode() in notes[1]
        await asyncio.sleep(2.0)  # several more checks: still waiting, nothing said twice
        assert [proc.returncode for proc in procs] == [None, None]
        for w in (wid, later):
            await stream.append(w, events(w, range(1, 4), final_at=3))
        results = [await asyncio.wait_for(proc.communicate(), timeout=30) for proc in procs]
    await handle.terminate("test over")
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
        assert [json.loads(line)["seq"] for line in out.decode().splitlines()] == [1, 2, 3]
        assert b"still waiting" not in err  # said once, read above


async def test_watch_does_not_call_a_closed_workflow_over_while_the_server_is_out_of_reach(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Closed in Temporal, but no stream open: the final event may be in Redis, unread. The
    watch gives up only as an unreachable server does (exit 3), never with 'closed without
    its final event'."""
    wid = f"ingest-unread-{uuid.uuid4().hex[:8]}"
    await (await workflow_without_worker(dev_env, wid)).terminate("operator")
    nobody = f"http://127.0.0.1:{free_port()}"
    proc = await start_checked_watch(tmp_path, wid, nobody, dev_env, "--reconnect-for", "3")
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 3, err.decode()
    assert "no progress from" in err.decode() and "has closed" not in err.decode()


async def test_watch_waits_out_a_server_whose_redis_is_out_of_reach(tmp_path: Path) -> None:
    """The server answers 503 while its Redis is gone (before, a 500 that ended keel watch
    with a usage error); keel watch takes any 5xx for a passing fault and gives up only as
    for an unreachable server."""
    gone = ProgressStream.open(f"redis://127.0.0.1:{free_port()}/0")
    try:
        async with ProgressServer(gone, keepalive_seconds=0.2) as server:
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.get(f"{server.url}/progress/anything")
            assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
            assert "the progress store is out of reach" in answer.text
            proc = await start_watch(
                tmp_path,
                "anything",
                "--url",
                server.url,
                "--reconnect-for",
                "1",
                "--check-after",
                "0",
            )
            _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        await gone.aclose()
    assert proc.returncode == 3, err.decode()
    assert "HTTP 503: the progress store is out of reach" in err.decode()
