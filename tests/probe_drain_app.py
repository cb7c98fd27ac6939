"""A slow activity for the graceful-shutdown tests: the tests' own app ``test-drain``.

``TestDrainProbe`` runs ``test.drain_work`` once (retried on failure) and returns its
result. The activity works for ``seconds[attempt - 1]`` seconds (the last entry for later
attempts), heartbeating, and appends what happened to the JSON-lines file ``log``:
``started``, then ``completed`` or ``cancelled``, each with the attempt, the process id and
whether the worker was shutting down at that moment. Served with ``keel worker --app
tests.probe_drain_app``; the sandbox re-imports this module, so it stays import-safe.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from keel.workers.app import App

WORKFLOW_TYPE = "TestDrainProbe"


class DrainWork(BaseModel):
    seconds: list[float] = Field(min_length=1)
    log: str


def note(work: DrainWork, event: str) -> None:
    entry = {
        "event": event,
        "attempt": activity.info().attempt,
        "pid": os.getpid(),
        "worker_shutdown": activity.is_worker_shutdown(),
    }
    with open(work.log, "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


@activity.defn(name="test.drain_work")
async def drain_work(work: DrainWork) -> str:
    """Work for this attempt's seconds, heartbeating; say how it ended."""
    attempt = activity.info().attempt
    seconds = work.seconds[min(attempt, len(work.seconds)) - 1]
    note(work, "started")
    until = time.monotonic() + seconds
    try:
        while time.monotonic() < until:
            activity.heartbeat()
            await asyncio.sleep(min(0.2, max(until - time.monotonic(), 0)))
    except asyncio.CancelledError:
        note(work, "cancelled")
        raise
    note(work, "completed")
    return f"done by attempt {attempt}"


@workflow.defn(name=WORKFLOW_TYPE)
class DrainProbeWorkflow:
    @workflow.run
    async def run(self, raw: dict[str, Any]) -> str:
        return await workflow.execute_activity(
            drain_work,
            DrainWork.model_validate(raw),
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(seconds=20),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200)),
        )


APP = App(name="test-drain", workflows=[DrainProbeWorkflow], activities=[drain_work])
