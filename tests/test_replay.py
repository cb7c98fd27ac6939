"""Histories of finished executions replay with ``Replayer`` without nondeterminism errors."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from keel.offline import OfflineFault
from keel.workers.apps import resolve_apps, workflows_of
from tests.conftest import BIN, keel_worker
from tests.helpers import decide, review, signal_review, start_review, wait_for_gate
from tests.samples import load_sample


async def test_finished_histories_replay(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    client = dev_env.client
    faults = [OfflineFault(kind="malformed_json", workflow_id_prefix="replay-retry")]
    async with keel_worker(client, faults=faults) as tq:
        low = await start_review(client, tq, "low", prefix="replay-retry")
        medium = await start_review(client, tq, "medium", prefix="replay-medium")
        high = await start_review(client, tq, "high", prefix="replay-high")
        await wait_for_gate(medium, "standard-review")
        await signal_review(medium, {"gate": "nope", "decision": "approve", "reviewer": "x"})
        await decide(medium, review("standard-review", "approve", "legal.sam"))
        await wait_for_gate(high, "general-counsel")
        await decide(high, review("general-counsel", "reject", "gc.morgan", comment="clause 2"))
        await wait_for_gate(high, "general-counsel-2")
        await signal_review(high, review("general-counsel-2", "approve", "gc.morgan"))
        await decide(high, review("general-counsel-2", "approve", "deputy-gc.alex"))
        results = await asyncio.gather(low.result(), medium.result(), high.result())
    assert [r.outcome for r in results] == ["approved"] * 3

    replayer = Replayer(
        workflows=workflows_of(resolve_apps()), data_converter=pydantic_data_converter
    )
    for handle in (low, medium, high):
        history = await handle.fetch_history()
        outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert outcome.replay_failure is None, f"{handle.id}: {outcome.replay_failure}"

    # The same check from an exported history file, with no server involved.
    path = tmp_path / f"{high.id}.json"
    path.write_text((await high.fetch_history()).to_json())
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "keel"),
        "replay",
        str(path),
        env={"TEMPORAL_ADDRESS": "127.0.0.1:1", "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert "deterministic" in out.decode()


async def test_replay_detects_a_changed_workflow(dev_env: WorkflowEnvironment) -> None:
    """The replay check can fail: a history replayed against different code is caught."""
    from tests.probe_changed_workflow import ChangedContractReview

    async with keel_worker(dev_env.client) as tq:
        handle = await start_review(dev_env.client, tq, "low", prefix="replay-changed")
        await handle.result()
    replayer = Replayer(workflows=[ChangedContractReview], data_converter=pydantic_data_converter)
    outcome = await replayer.replay_workflow(
        await handle.fetch_history(), raise_on_replay_failure=False
    )
    assert outcome.replay_failure is not None


async def test_incident_histories_replay(dev_env: WorkflowEnvironment) -> None:
    """Plans, fan-out, gates, compensation and continue-as-new all replay deterministically."""
    from tests.standins import ScriptedPlanner, StandInTools, plan, rollback, task

    client = dev_env.client
    planner = ScriptedPlanner(
        plan(task("metrics", "metrics_lookup"), task("deploys", "deploy_history")),
        plan(rollback("undo-me"), task("notify", "update_incident", after=["undo-me"])),
    )
    tools = StandInTools(fail=["notify"])
    async with keel_worker(client, provider=planner, tools=tools.activities()) as tq:
        page = {**load_sample("incident-page"), "continue_after_rounds": 1}
        handle = await client.start_workflow(
            "IncidentInvestigation",
            {"page": page, "carry": None},
            id=f"replay-incident-{uuid.uuid4()}",
            task_queue=tq,
        )
        await wait_for_gate(handle, "approve-undo-me")
        await decide(handle, review("approve-undo-me", "approve", "oncall.lead"))
        result = await handle.result()
        assert result["outcome"] == "compensated"
        histories = [
            await client.get_workflow_handle(e.id, run_id=e.run_id).fetch_history()
            async for e in client.list_workflows(f"WorkflowId STARTS_WITH '{handle.id}'")
        ]
    # Two runs of the parent, four task children and one compensation child.
    assert len(histories) == 7
    replayer = Replayer(
        workflows=workflows_of(resolve_apps()), data_converter=pydantic_data_converter
    )
    async with replayer.workflow_replay_iterator(_aiter(histories)) as results:
        async for outcome in results:
            assert outcome.replay_failure is None, outcome.replay_failure


async def _aiter(items: list[Any]) -> Any:
    for item in items:
        yield item
