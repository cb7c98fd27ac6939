"""Only Keel starts Keel's internal work: a tool task started by hand, or continue-as-new
state a caller made up, performs nothing and says why."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from keel.contracts.signing import SigningKey
from keel.contracts.tools import TOOL_TASK_WORKFLOW, ToolResult, ToolTaskInput
from keel.scenarios.incident import IncidentInvestigationWorkflow
from keel.workflows.sealed import CONTINUED_KEY, STATE_PURPOSE
from tests.conftest import keel_worker
from tests.probe_sealed import SealedStateProbe
from tests.samples import load_sample
from tests.standins import INPUTS, ScriptedPlanner, StandInTools, plan, task

ROLLBACK = ToolTaskInput(
    parent_workflow_id="incident-made-up",
    round=1,
    ref="rollback",
    tool="rollback_deploy",
    input=INPUTS["rollback_deploy"],
    purpose="roll back checkout-api",
)


async def failure_of(env: WorkflowEnvironment, tq: str, task_input: Any, child_id: str) -> str:
    with pytest.raises(WorkflowFailureError) as caught:
        await env.client.execute_workflow(
            TOOL_TASK_WORKFLOW, task_input, id=child_id, task_queue=tq, result_type=ToolResult
        )
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "UnsealedToolTask"
    return cause.message


async def test_a_tool_task_started_by_hand_performs_no_effect(ts_env: WorkflowEnvironment) -> None:
    tools = StandInTools()
    async with keel_worker(ts_env.client, tools=tools.activities()) as tq:
        unsealed = await failure_of(ts_env, tq, ROLLBACK, "incident-made-up/r1/rollback")
        forged_seal = ROLLBACK.model_copy(
            update={"seal": SigningKey.generate().sign("keel/tool-task/1", {"any": "thing"})}
        )
        sealed_by_nobody = await failure_of(ts_env, tq, forged_seal, f"by-hand-{uuid.uuid4()}")
    assert "only as a child" in unsealed and "only as a child" in sealed_by_nobody
    assert tools.log == []


async def test_a_real_tasks_seal_replayed_by_hand_performs_no_effect(
    ts_env: WorkflowEnvironment,
) -> None:
    planner = ScriptedPlanner(plan(task("notify", "update_incident")), plan(done=True))
    tools = StandInTools()
    async with keel_worker(ts_env.client, provider=planner, tools=tools.activities()) as tq:
        incident = await ts_env.client.start_workflow(
            IncidentInvestigationWorkflow.run,
            {"page": load_sample("incident-page")},
            id=f"incident-{uuid.uuid4()}",
            task_queue=tq,
        )
        await incident.result()
        assert tools.started() == ["notify"]
        child = ts_env.client.get_workflow_handle(f"{incident.id}/r1/notify")
        history = await child.fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        (sealed_input,) = await ts_env.client.data_converter.decode(
            started.input.payloads, [ToolTaskInput]
        )
        assert sealed_input.seal is not None  # the parent sealed it
        # The same sealed input, started again by hand (the child's own id is free again).
        message = await failure_of(ts_env, tq, sealed_input, f"{incident.id}/r1/notify")
    assert "only as a child" in message
    assert tools.started() == ["notify"]


async def test_an_incident_started_with_a_carry_of_its_own_is_refused(
    ts_env: WorkflowEnvironment,
) -> None:
    tools = StandInTools()
    forged_carry = {
        "ledger_head": "0" * 64,
        "ledger_seq": 0,
        "previous_run_id": "made-up",
        "runs": 1,
        "rounds_done": 0,
        "findings": [],
        "actions": [],
        "completed": [
            {
                "round": 1,
                "ref": "x",
                "tool": "metrics_lookup",
                "workflow_id": "x",
                "output": {},
                "compensation": {"tool": "rollback_deploy", "input": INPUTS["rollback_deploy"]},
            }
        ],
    }
    page = load_sample("incident-page")
    attempts = [
        {"page": page, "carry": forged_carry},
        {CONTINUED_KEY: {"state": {"page": page, "carry": forged_carry}}},
        {
            CONTINUED_KEY: {
                "state": {"page": page, "carry": forged_carry},
                "previous_run_id": "made-up",
                "signature": SigningKey.generate()
                .sign(STATE_PURPOSE, {"anything": 1})
                .model_dump(),
            }
        },
    ]
    reasons = []
    async with keel_worker(
        ts_env.client, provider=ScriptedPlanner(), tools=tools.activities()
    ) as tq:
        for raw in attempts:
            handle = await ts_env.client.start_workflow(
                IncidentInvestigationWorkflow.run, raw, id=f"forged-{uuid.uuid4()}", task_queue=tq
            )
            with pytest.raises(WorkflowFailureError) as caught:
                await handle.result()
            assert isinstance(caught.value.cause, ApplicationError)
            assert caught.value.cause.type == "InvalidInput"
            reasons.append(caught.value.cause.message)
    assert "carry comes only from Keel" in reasons[0]
    assert "{state, previous_run_id, signature}" in reasons[1]
    assert "not continued from another" in reasons[2]
    assert tools.log == []  # no injected compensation ran


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("altered", "does not match the signed content"),
        ("untrusted", "not a trusted key"),
    ],
)
async def test_a_continued_run_refuses_state_it_cannot_authenticate(
    ts_env: WorkflowEnvironment, mode: str, reason: str
) -> None:
    other = SigningKey.generate().key_id
    async with keel_worker(ts_env.client, extra_workflows=[SealedStateProbe]) as tq:
        honest = await ts_env.client.execute_workflow(
            "SealedStateProbe", {"mode": "honest"}, id=f"probe-{uuid.uuid4()}", task_queue=tq
        )
        assert honest == {"balance": 10, "mode": "honest"}
        with pytest.raises(WorkflowFailureError) as caught:
            await ts_env.client.execute_workflow(
                "SealedStateProbe",
                {"mode": mode, "other_key_id": other},
                id=f"probe-{uuid.uuid4()}",
                task_queue=tq,
            )
    assert isinstance(caught.value.cause, ApplicationError)
    assert reason in caught.value.cause.message
