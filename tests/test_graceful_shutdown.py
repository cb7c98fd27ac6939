"""SIGTERM drains a ``keel worker``: it stops taking work, lets in-flight activities finish
for ``KEEL_SHUTDOWN_GRACE_SECONDS``, cancels what is left (Temporal retries it on another
worker) and exits 0. A deploy that replaces workers therefore loses no work and repeats
none that could finish in time.

The activity (``tests.probe_drain_app``) records each attempt's start and end, and whether
the worker was already shutting down when it ended: proof that the SIGTERM came first.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from keel.testing import offline_settings
from keel.workers.runtime import build_worker
from tests.conftest import free_port
from tests.probe_drain_app import WORKFLOW_TYPE, DrainProbeWorkflow
from tests.test_fault_injection import KeelWorker, worker_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def drain_env(client: Client, queue: str, tmp_path: Path, grace: float) -> dict[str, str]:
    return worker_env(
        client.service_client.config.target_host,
        queue,
        tmp_path / "data",
        free_port(),
        KEEL_APPS="tests.probe_drain_app",
        KEEL_SHUTDOWN_GRACE_SECONDS=str(grace),
        PYTHONPATH=str(REPO),
    )


def entries(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


async def until(check: Any, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def terminated(worker: KeelWorker) -> int:
    """Send SIGTERM; the exit code once the process has drained and left."""
    worker.proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(worker.proc.wait(), timeout=120)


async def activity_events(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    kinds = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
        EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
    }
    return [e async for e in handle.fetch_history_events() if e.event_type in kinds]


async def test_sigterm_lets_an_in_flight_activity_finish_within_the_grace(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    queue = f"drain-finish-{uuid.uuid4()}"
    log = tmp_path / "work.jsonl"
    worker = await KeelWorker.start(drain_env(client, queue, tmp_path, grace=60), tmp_path)
    handle = await client.start_workflow(
        WORKFLOW_TYPE,
        {"seconds": [3], "log": str(log)},
        id=f"drain-finish-{uuid.uuid4()}",
        task_queue=queue,
    )
    await until(lambda: entries(log))

    assert await terminated(worker) == 0, worker.output
    pid = worker.proc.pid
    assert entries(log) == [
        {"event": "started", "attempt": 1, "pid": pid, "worker_shutdown": False},
        {"event": "completed", "attempt": 1, "pid": pid, "worker_shutdown": True},
    ]
    assert "keel worker: stopped" in worker.output
    # Its completion reached Temporal before the process left: one attempt, completed.
    events = await activity_events(handle)
    assert [e.event_type for e in events] == [
        EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    ]
    assert events[0].activity_task_started_event_attributes.attempt == 1

    async with build_worker(
        client,
        offline_settings(data_dir=tmp_path),
        task_queue=queue,
        workflows=[DrainProbeWorkflow],
    ):
        assert await handle.result() == "done by attempt 1"


async def test_an_activity_longer_than_the_grace_is_cancelled_and_retried_by_the_next_worker(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    queue = f"drain-cancel-{uuid.uuid4()}"
    log = tmp_path / "work.jsonl"
    env = drain_env(client, queue, tmp_path, grace=1)
    first = await KeelWorker.start(env, tmp_path)
    handle = await client.start_workflow(
        WORKFLOW_TYPE,
        {"seconds": [3600, 0.2], "log": str(log)},
        id=f"drain-cancel-{uuid.uuid4()}",
        task_queue=queue,
    )
    await until(lambda: entries(log))

    assert await terminated(first) == 0, first.output
    assert entries(log) == [
        {"event": "started", "attempt": 1, "pid": first.proc.pid, "worker_shutdown": False},
        {"event": "cancelled", "attempt": 1, "pid": first.proc.pid, "worker_shutdown": True},
    ]

    second = await KeelWorker.start(env, tmp_path)
    try:
        assert await handle.result() == "done by attempt 2"
    finally:
        assert await terminated(second) == 0, second.output
    assert entries(log)[2:] == [
        {"event": "started", "attempt": 2, "pid": second.proc.pid, "worker_shutdown": False},
        {"event": "completed", "attempt": 2, "pid": second.proc.pid, "worker_shutdown": False},
    ]
    # The cancelled attempt was reported failed (retried at once, not after a heartbeat
    # timeout), and the retry completed: nothing lost, nothing done twice.
    events = await activity_events(handle)
    assert [e.event_type for e in events] == [
        EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    ]
    started = events[0].activity_task_started_event_attributes
    assert started.attempt == 2
    assert started.last_failure.application_failure_info.type == "WorkerShutdown"
