"""The worker's start-up check of the progress Redis (``redis_problem``), and that a worker
loads the Redis client only when it first appends progress."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from keel.progress.probe import redis_problem
from tests.conftest import free_port


@pytest.fixture
async def http_server() -> AsyncIterator[int]:
    """A TCP server that answers like a web server, not a Redis."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_the_machines_redis_answers() -> None:
    assert await redis_problem("redis://127.0.0.1:6379/0") is None
    assert await redis_problem("redis://:wrong-password@127.0.0.1:6379/0") is None  # reachable


async def test_what_does_not_answer_is_named(http_server: int) -> None:
    refused = await redis_problem(f"redis://127.0.0.1:{free_port()}/0")
    assert refused is not None and "ConnectionRefusedError" in refused
    web = await redis_problem(f"redis://127.0.0.1:{http_server}/0")
    assert web is not None and "not a Redis" in web and "HTTP/1.1" in web
    scheme = await redis_problem("http://127.0.0.1:6379/")
    assert scheme is not None and "not a Redis URL" in scheme
    port = await redis_problem("redis://127.0.0.1:99999/0")
    assert port is not None and "ValueError" in port


def test_a_worker_with_every_app_loads_no_redis_client_until_it_appends() -> None:
    code = """
import asyncio, sys
from keel.testing import offline_settings
from keel.workers.app import AppContext
from keel.workers.apps import resolve_apps
import keel.cli.main, keel.workers.runtime, keel.workers.serve

async def main():
    apps = {app.name: app for app in resolve_apps(())}
    context = AppContext(settings=offline_settings())
    async with apps["ingestion"].activities(context) as activities:
        print("before", "redis" in sys.modules)
        append = next(a for a in activities if a.__name__ == "append")
        print("opened", append.__self__.stream is not None, "redis" in sys.modules)

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["before", "False", "opened", "True", "True"], done.stdout
