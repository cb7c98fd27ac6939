"""Supplier ingestion through a killed worker and a killed dev server: a ``keel worker``
process is SIGKILLed mid-run and replaced, then the dev server itself (a ``temporal server
start-dev`` subprocess over a persistent SQLite file) is SIGKILLed and started again on the
same file. The run ends with every record looked up and enriched once (each activity
completed once per record across every run's history, one ``AgentDecided`` per record in the
whole ledger) and every progress event in the Redis Stream once, in order, with no gap.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from keel.cli.commands import full_chain
from keel.contracts.agent_node import AGENT_NODE_ACTIVITY
from keel.contracts.ledger import verify_chain
from keel.progress.stream import ProgressStream
from keel.scenarios.ingestion import SupplierIngestionWorkflow
from keel.scenarios.ingestion.contracts import IngestionResult
from keel.scenarios.ingestion.fixtures import job
from keel.scenarios.ingestion.tools import LOOKUP_PAGE
from keel.workers.devstack import server_limit_args, temporal_cli
from tests.conftest import free_port
from tests.test_fault_injection import KeelWorker, worker_env
from tests.test_ingestion import (
    REDIS_URL,
    assert_complete_stream,
    assert_history_bounded,
    assert_once_each,
    completions,
    run_histories,
    stream,
)

__all__ = ["stream"]  # the fixture, shared with tests.test_ingestion

pytestmark = pytest.mark.integration

RECORDS = 300


class DevServer:
    """``temporal server start-dev`` on ``port`` over the SQLite file ``db``."""

    def __init__(self, db: Path, port: int) -> None:
        self.db = db
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Client:
        """Start it; returns a client once the frontend answers."""
        self.proc = await asyncio.create_subprocess_exec(
            temporal_cli(),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db),
            "--port",
            str(self.port),
            "--headless",
            "--log-level",
            "error",
            *server_limit_args(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(60):
            while True:
                try:
                    client = await Client.connect(
                        self.address, data_converter=pydantic_data_converter
                    )
                    await client.count_workflows()
                    return client
                except RuntimeError:
                    assert self.proc.returncode is None, "the dev server exited"
                    await asyncio.sleep(0.3)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


def retried_attempts(histories: list[History]) -> int:
    """Activity attempts after the first, and workflow tasks that timed out, in all runs."""
    return sum(
        1
        for history in histories
        for event in history.events
        if event.activity_task_started_event_attributes.attempt > 1
        or event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
    )


async def records_seen(stream: ProgressStream, workflow_id: str) -> int:
    return sum(1 for e in await stream.all(workflow_id) if e.kind == "record")


async def until_records(stream: ProgressStream, workflow_id: str, count: int) -> None:
    async with asyncio.timeout(120):
        while await records_seen(stream, workflow_id) < count:
            await asyncio.sleep(0.05)


async def test_a_killed_worker_and_a_killed_server_lose_and_duplicate_nothing(
    stream: ProgressStream, tmp_path: Path
) -> None:
    server = DevServer(tmp_path / "temporal.db", free_port())
    client = await server.start()
    queue = f"ingest-crash-{uuid.uuid4()}"
    env = worker_env(
        server.address,
        queue,
        tmp_path / "data",
        free_port(),
        KEEL_APPS="keel.scenarios.ingestion",
        KEEL_REDIS_URL=REDIS_URL,
        KEEL_PROGRESS_STREAM_PREFIX=stream.prefix,
    )
    workers = [await KeelWorker.start(env, tmp_path)]
    workflow_id = f"ingest-crash-{uuid.uuid4().hex[:8]}"
    try:
        await client.start_workflow(
            SupplierIngestionWorkflow.run,
            job("crash", "Through two crashes", RECORDS, batch_size=20, records_per_run=50),
            id=workflow_id,
            task_queue=queue,
        )
        await until_records(stream, workflow_id, 70)  # into the second run
        workers[0].proc.send_signal(signal.SIGKILL)
        assert await workers[0].proc.wait() == -signal.SIGKILL
        killed_at = await records_seen(stream, workflow_id)
        assert killed_at < RECORDS
        workers.append(await KeelWorker.start(env, tmp_path))

        await until_records(stream, workflow_id, killed_at + 60)
        await server.kill()  # the worker stays up and must find the server again
        down_at = await records_seen(stream, workflow_id)
        assert down_at < RECORDS
        await asyncio.sleep(2)
        client = await server.start()
        result = await asyncio.wait_for(
            client.get_workflow_handle(workflow_id, result_type=IngestionResult).result(), 180
        )
        histories = await run_histories(client, workflow_id)
        chain = await full_chain(client, workflow_id)
    finally:
        for worker in workers:
            await worker.stop()
        if server.proc is not None and server.proc.returncode is None:
            await server.kill()

    assert (result.total, result.runs) == (RECORDS, RECORDS // 50)
    assert result.enriched + result.defaulted + result.denied == RECORDS
    ids = {f"SUP-{n:05d}" for n in range(1, RECORDS + 1)}
    denied = {e.node for e in chain if e.type == "PolicyApplied" and e.action == "deny"}  # type: ignore[attr-defined]
    assert denied == {"SUP-00137"}
    agent_calls = completions(histories, AGENT_NODE_ACTIVITY, "node")
    assert_once_each(agent_calls, ids - denied)
    lookups = completions(histories, LOOKUP_PAGE, "record_id")
    assert_once_each(lookups, ids)
    decided = [e.node for e in chain if e.type == "AgentDecided"]  # type: ignore[attr-defined]
    assert sorted(decided) == sorted(ids - denied)
    assert verify_chain(chain).ok
    assert_history_bounded(histories, 50)
    assert retried_attempts(histories) > 0  # the crashes did cut work in flight
    events = await stream.all(workflow_id)
    assert_complete_stream(events, workflow_id, RECORDS)
    assert result.last_event_id == events[-1].id
