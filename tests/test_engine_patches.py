"""Runs that were queried while a gate opened finish on another worker: Keel decides its
engine patches in a run's first workflow task (``keel.workflows.patches``), so a query that
splits the task running the gate's local activities no longer turns a later
``workflow.patched`` the other way on replay.

Before this, every run of the probe that was queried as its gate opened failed with a
nondeterminism error on a second worker (``tests/test_deploys.py`` keeps such a history,
recorded before the fix, as an expected failure).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from keel.testing import offline_settings
from keel.workers.runtime import WORKER_DATA_CONVERTER, build_worker, workflow_runner
from keel.workflows.patches import COVERED, ENGINE_PATCHES
from tests.helpers import decide, review
from tests.probe_deploys import GATE, WORKFLOW_TYPE, DeployProbeV1

pytestmark = pytest.mark.integration
RUNS = 4
KEEL = Path(__file__).parent.parent / "keel"


async def queried_until_open(client: Client, queue: str) -> WorkflowHandle[Any, Any]:
    """A probe run, queried as fast as the worker answers from its start until its gate is
    open: the queries land inside the workflow task that opens the gate."""
    handle = client.get_workflow_handle(
        (
            await client.start_workflow(
                WORKFLOW_TYPE, {"change": "q"}, id=f"patches-{uuid.uuid4()}", task_queue=queue
            )
        ).id
    )
    async with asyncio.timeout(60):
        while True:
            gates = await handle.query("gates", result_type=list[dict[str, Any]])
            if any(g["gate"] == GATE.name and g["state"] == "awaiting_approval" for g in gates):
                return handle


async def markers(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The patch ids of the run's marker events, in order."""
    names = []
    async for event in handle.fetch_history_events():
        marker = event.marker_recorded_event_attributes
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and (
            marker.marker_name == "core_patch"
        ):
            names.append(json.loads(marker.details["patch-data"].payloads[0].data)["id"])
    return names


async def test_runs_queried_as_their_gate_opened_finish_on_another_worker(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    settings = offline_settings(data_dir=tmp_path)
    queue = f"patches-{uuid.uuid4()}"
    async with build_worker(client, settings, task_queue=queue, workflows=[DeployProbeV1]):
        handles = [await queried_until_open(client, queue) for _ in range(RUNS)]
    # A new worker holds none of them in its cache: each next task replays the whole run.
    async with build_worker(client, settings, task_queue=queue, workflows=[DeployProbeV1]):
        for handle in handles:
            await decide(handle, review(GATE.name, "approve", "deploy.reviewer"))
        results = [await handle.result() for handle in handles]
    assert [r["state"] for r in results] == ["approved"] * RUNS
    replayer = Replayer(
        workflows=[DeployProbeV1],
        data_converter=WORKER_DATA_CONVERTER,
        workflow_runner=workflow_runner(),
    )
    for handle in handles:
        outcome = await replayer.replay_workflow(
            await handle.fetch_history(), raise_on_replay_failure=False
        )
        assert outcome.replay_failure is None, outcome.replay_failure
        # One marker for the engine's patches, in the first task; none of its own per patch.
        assert await markers(handle) == [ENGINE_PATCHES]


def test_every_engine_patch_is_covered() -> None:
    """A patch the engine checks is one of ``COVERED``, or it is decided lazily again."""
    used = set()
    for path in KEEL.rglob("*.py"):
        source = path.read_text()
        constants = dict(re.findall(r'^([A-Z_]+) = "(keel-[a-z-]+)"', source, re.M))
        for name in re.findall(r"engine_patched\(([A-Z_]+|\"keel-[a-z-]+\")\)", source):
            used.add(name.strip('"') if name.startswith('"') else constants.get(name, name))
    imported = {"NOTIFY_PATCH": "keel-gate-notifications"}
    used = {imported.get(name, name) for name in used}
    assert used == COVERED
