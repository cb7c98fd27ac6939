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

from keel.scenarios.contract_review import APP
from keel.scenarios.contract_review.contracts import ContractReviewInput, RiskClassifierInput
from keel.testing import offline_settings
from keel.workers.engine_memo import with_engine_memo
from keel.workers.runtime import WORKER_DATA_CONVERTER, build_worker, workflow_runner
from keel.workflows import patches
from keel.workflows.patches import COVERED, ENGINE_MEMO, ENGINE_PATCHES
from tests.helpers import decide, review
from tests.probe_deploys import GATE, WORKFLOW_TYPE, DeployProbeV1
from tests.probe_sealed import SealedStateProbe
from tests.probe_workflows import UnstartedAgentNodeProbe

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
        constants = dict(re.findall(r'^([A-Z_]+) = "(keel-[a-z0-9-]+)"', source, re.M))
        for name in re.findall(r"engine_patched\(([A-Z_]+|\"keel-[a-z0-9-]+\")\)", source):
            used.add(name.strip('"') if name.startswith('"') else constants.get(name, name))
    imported = {"NOTIFY_PATCH": "keel-gate-notifications"}
    used = {imported.get(name, name) for name in used}
    assert used == COVERED


async def run_to_the_end(client: Client, queue: str) -> WorkflowHandle[Any, Any]:
    handle = await queried_until_open(client, queue)
    await decide(handle, review(GATE.name, "approve", "deploy.reviewer"))
    assert (await handle.result())["state"] == "approved"
    return handle


async def change_version_upserts(handle: WorkflowHandle[Any, Any]) -> int:
    """Upserts of the ``TemporalChangeVersion`` search attribute (the SDK's, with a marker)."""
    count = 0
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            count += "TemporalChangeVersion" in fields.indexed_fields
    return count


async def replays(handle: WorkflowHandle[Any, Any], workflow: type = DeployProbeV1) -> None:
    outcome = await Replayer(
        workflows=[workflow],
        data_converter=WORKER_DATA_CONVERTER,
        workflow_runner=workflow_runner(),
    ).replay_workflow(await handle.fetch_history(), raise_on_replay_failure=False)
    assert outcome.replay_failure is None, outcome.replay_failure


async def test_a_run_started_by_keels_client_decides_the_patches_without_a_marker(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The memo stands for the marker: no marker, no TemporalChangeVersion upsert, every
    engine patch on (the head is signed: the patched path), and the history replays on a
    plain Replayer and on a new worker (queried in between)."""
    client = with_engine_memo(dev_env.client)
    settings = offline_settings(data_dir=tmp_path)
    queue = f"patches-memo-{uuid.uuid4()}"
    async with build_worker(client, settings, task_queue=queue, workflows=[DeployProbeV1]):
        handle = await run_to_the_end(client, queue)
        ledger = await handle.query("ledger", result_type=list[dict[str, Any]])
        queried = await queried_until_open(client, queue)
    described = await handle.describe()
    assert (await described.memo())[ENGINE_MEMO] == ENGINE_PATCHES
    assert await markers(handle) == []
    assert await change_version_upserts(handle) == 0
    assert any(event["type"] == "ChainHeadSigned" for event in ledger)
    await replays(handle)
    async with build_worker(client, settings, task_queue=queue, workflows=[DeployProbeV1]):
        await decide(queried, review(GATE.name, "approve", "deploy.reviewer"))
        assert (await queried.result())["state"] == "approved"
    assert await markers(queried) == []
    await replays(queried)


async def test_a_run_a_worker_from_before_the_memo_marked_replays_on_this_one(
    dev_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a deploy a new client's run can reach a worker that ignores the memo and
    records the marker; this engine reads that marker on replay and finishes the run."""
    client = with_engine_memo(dev_env.client)
    settings = offline_settings(data_dir=tmp_path)
    queue = f"patches-memo-{uuid.uuid4()}"
    with monkeypatch.context() as old_worker:
        old_worker.setattr(patches, "started_for_this_engine", lambda: None)
        async with build_worker(client, settings, task_queue=queue, workflows=[DeployProbeV1]):
            handle = await queried_until_open(client, queue)
    assert await markers(handle) == [ENGINE_PATCHES]
    async with build_worker(client, settings, task_queue=queue, workflows=[DeployProbeV1]):
        await decide(handle, review(GATE.name, "approve", "deploy.reviewer"))
        assert (await handle.result())["state"] == "approved"
    await replays(handle)


async def test_a_plain_client_still_gets_the_marker(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = offline_settings(data_dir=tmp_path)
    queue = f"patches-memo-{uuid.uuid4()}"
    async with build_worker(dev_env.client, settings, task_queue=queue, workflows=[DeployProbeV1]):
        handle = await run_to_the_end(dev_env.client, queue)
    assert await markers(handle) == [ENGINE_PATCHES]
    assert await change_version_upserts(handle) == 1
    await replays(handle)


@pytest.mark.parametrize("memo", [True, False], ids=["keel-client", "plain-client"])
async def test_a_run_that_never_calls_start_decides_them_first(
    dev_env: WorkflowEnvironment, tmp_path: Path, memo: bool
) -> None:
    """``KeelWorkflow.__init__`` decides: an app whose run method goes straight to an agent
    node records no marker per patch (the node's input is recorded: the patched path)."""
    client = with_engine_memo(dev_env.client) if memo else dev_env.client
    queue = f"patches-unstarted-{uuid.uuid4()}"
    sample = ContractReviewInput.model_validate(APP.sample("contract-low-risk"))
    node_input = RiskClassifierInput(
        **sample.model_dump(include=set(RiskClassifierInput.model_fields))
    )
    settings = offline_settings(data_dir=tmp_path)
    async with build_worker(
        client, settings, task_queue=queue, workflows=[UnstartedAgentNodeProbe]
    ):
        handle = await client.start_workflow(
            UnstartedAgentNodeProbe.run,
            node_input,
            id=f"unstarted-{uuid.uuid4()}",
            task_queue=queue,
        )
        ledger = await handle.result()
    decided = [e for e in ledger if e["type"] == "AgentDecided"]
    assert decided and decided[0]["input"] is not None
    assert await markers(handle) == ([] if memo else [ENGINE_PATCHES])
    assert await change_version_upserts(handle) == (0 if memo else 1)
    await replays(handle, UnstartedAgentNodeProbe)


async def test_a_continued_run_keeps_the_memo_and_records_no_marker(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Continue-as-new carries the start memo over, so the next run decides from it too."""
    client = with_engine_memo(dev_env.client)
    queue = f"patches-continued-{uuid.uuid4()}"
    settings = offline_settings(data_dir=tmp_path)
    async with build_worker(client, settings, task_queue=queue, workflows=[SealedStateProbe]):
        handle = await client.start_workflow(
            "SealedStateProbe", {"mode": "honest"}, id=f"continued-{uuid.uuid4()}", task_queue=queue
        )
        assert (await handle.result())["balance"] == 10
    latest = client.get_workflow_handle(handle.id)
    described = await latest.describe()
    assert described.run_id != handle.result_run_id
    assert (await described.memo())[ENGINE_MEMO] == ENGINE_PATCHES
    for run in (handle, latest):
        assert await markers(run) == []
        assert await change_version_upserts(run) == 0
