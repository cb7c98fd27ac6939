"""The ingestion scenario as a user drives it: ``keel dev`` (which prints the progress
server's URL), ``keel start ingestion`` on a sample, ``keel watch`` until the final event."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
import redis.asyncio as redis

from tests.conftest import free_port
from tests.test_dev_and_demo import DevStack, keel, sample_file, stack_env
from tests.test_ingestion import REDIS_URL

pytestmark = pytest.mark.integration

APP = "keel.scenarios.ingestion"


async def test_start_an_ingestion_and_watch_it_to_the_end(tmp_path: Path) -> None:
    prefix = f"keel-test:{uuid.uuid4().hex[:12]}"
    env = stack_env(tmp_path, free_port(), free_port()) | {
        "KEEL_PROGRESS_PORT": str(free_port()),
        "KEEL_PROGRESS_STREAM_PREFIX": prefix,
        "KEEL_REDIS_URL": REDIS_URL,
    }
    env["KEEL_PROGRESS_URL"] = f"http://127.0.0.1:{env['KEEL_PROGRESS_PORT']}"
    job = sample_file(tmp_path, "ingestion", "ingestion-demo")
    try:
        async with DevStack(env, "--app", APP) as stack:
            assert stack.proc is not None and stack.proc.stdout is not None
            announced = (await stack.proc.stdout.readline()).decode()
            assert announced.startswith(
                f"progress: {env['KEEL_PROGRESS_URL']}/progress/<workflow id>"
            )
            code, out = await keel(
                env, "start", "ingestion", "--app", APP, "--input", str(job), "--id", "ingest-1"
            )
            assert code == 0, out
            code, out = await keel(env, "watch", "ingest-1", "-o", "json", timeout=60)
            assert code == 0, out
            events = [json.loads(line) for line in out.splitlines()]
            code, text = await keel(env, "watch", "ingest-1", timeout=60)
            assert code == 0, text
    finally:
        store = redis.Redis.from_url(REDIS_URL)
        await store.delete(f"{prefix}:ingest-1")
        await store.aclose()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["data"]["record_id"] for e in events if e["kind"] == "record"] == [
        f"SUP-{n:05d}" for n in range(1, 21)
    ]
    assert [e["kind"] for e in events].count("continued") == 1  # 10 records per run
    assert events[-1]["final"] and events[-1]["done"] == 20
    lines = text.splitlines()  # not a terminal: plain lines, the same events
    assert len(lines) == len(events)
    assert re.match(r"ingest-1:\d+ finished +20/20 20 records: 20 enriched", lines[-1])
