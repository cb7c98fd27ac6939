"""Planned work on the time-skipping server: validation, fan-out, gates, compensation, round
limit and continue-as-new, with a scripted planner and stand-in tools."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from keel.cli.commands import full_chain
from keel.contracts.ledger import LedgerEvent, verify_chain
from keel.scenarios.incident import IncidentInvestigationWorkflow
from keel.scenarios.incident.contracts import IncidentResult
from tests.conftest import keel_worker
from tests.helpers import decide, review, types_of, wait_for_gate
from tests.samples import load_sample
from tests.standins import ScriptedPlanner, StandInTools, plan, rollback, task


async def start_incident(
    client: Client, task_queue: str, **page_overrides: Any
) -> WorkflowHandle[IncidentInvestigationWorkflow, IncidentResult]:
    page = {**load_sample("incident-page"), **page_overrides}
    return await client.start_workflow(
        IncidentInvestigationWorkflow.run,
        {"page": page, "carry": None},
        id=f"incident-{uuid.uuid4()}",
        task_queue=task_queue,
    )


def of(events: list[LedgerEvent], kind: str) -> list[Any]:
    return [e for e in events if e.type == kind]


READS = (
    task("metrics", "metrics_lookup"),
    task("deploys", "deploy_history"),
    task("alerts", "alert_correlation"),
)


async def test_fan_out_runs_in_parallel_and_fans_in(ts_env: WorkflowEnvironment) -> None:
    planner = ScriptedPlanner(
        plan(*READS, task("notify", "update_incident", after=["metrics", "deploys", "alerts"])),
        plan(done=True, summary="mitigated"),
    )
    tools = StandInTools(together=["metrics", "deploys", "alerts"])
    async with keel_worker(ts_env.client, provider=planner, tools=tools.activities()) as tq:
        handle = await start_incident(ts_env.client, tq)
        result = await handle.result()
    assert result.outcome == "mitigated"
    assert set(tools.started()[:3]) == {"metrics", "deploys", "alerts"}
    assert tools.started()[3] == "notify"
    ends = [ref for event, ref in tools.log if event == "end"]
    assert ends.index("notify") == 3  # fan-in: after all three reads finished
    materialized = of(result.ledger, "PlanMaterialized")[0]
    assert materialized.levels == [["alerts", "deploys", "metrics"], ["notify"]]
    assert materialized.children["notify"] == f"{handle.id}/r1/notify"
    completed = of(result.ledger, "TaskCompleted")
    assert [c.ref for c in completed][-1] == "notify"
    # Results are fed to the next planning round.
    round_two = planner.requests[1].input
    assert {f["ref"] for f in round_two["findings"]} == {"metrics", "deploys", "alerts", "notify"}
    assert round_two["actions"] and "update_incident" in round_two["actions"][0]


INVALID_PLANS = {
    "unknown tool": (plan(task("x", "kubectl_exec")), "unknown tool 'kubectl_exec'"),
    "cycle": (
        plan(task("a", "metrics_lookup", after=["b"]), task("b", "deploy_history", after=["a"])),
        "cycle: a -> b -> a",
    ),
    "missing dependency": (
        plan(task("a", "metrics_lookup", after=["ghost"])),
        "missing task 'ghost'",
    ),
    "bad input": (plan(task("a", "metrics_lookup", window_minutes=1)), "input.window_minutes"),
    "too many tasks": (
        plan(
            *[task(f"t{i}", "metrics_lookup", after=[f"t{i - 1}"] if i else []) for i in range(7)]
        ),
        "the plan has 7 tasks; the policy allows at most 6",
    ),
    "too wide": (
        plan(*[task(f"t{i}", "metrics_lookup") for i in range(5)]),
        "5 tasks would run in parallel; the policy allows at most 4",
    ),
    "side effect without gate": (
        plan(
            task(
                "rb",
                "rollback_deploy",
                compensation={
                    "tool": "roll_forward_deploy",
                    "input": {"service": "checkout-api", "to_version": "1.42.0"},
                },
            )
        ),
        "has side effects and needs a human gate",
    ),
    "no compensation": (
        plan(task("rb", "rollback_deploy", gate="Approve")),
        "must declare a compensation",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_PLANS))
async def test_invalid_plan_is_rejected_fed_back_and_nothing_runs(
    ts_env: WorkflowEnvironment, case: str
) -> None:
    bad, reason = INVALID_PLANS[case]
    planner = ScriptedPlanner(bad, plan(task("metrics", "metrics_lookup")), plan(done=True))
    tools = StandInTools()
    async with keel_worker(ts_env.client, provider=planner, tools=tools.activities()) as tq:
        result = await (await start_incident(ts_env.client, tq)).result()
    rejected = of(result.ledger, "PlanRejected")
    assert len(rejected) == 1 and any(reason in r for r in rejected[0].reasons), rejected
    # Nothing of the rejected plan ran; the re-plan got the reasons as feedback.
    assert tools.started() == ["metrics"]
    assert list(planner.requests[1].feedback) == [
        f"The plan was rejected: {r}" for r in rejected[0].reasons
    ]
    types = types_of(result.ledger)
    assert types.index("PlanRejected") < types.index("PlanProposed")
    assert result.outcome == "mitigated"


async def test_persistently_invalid_plans_hand_over(ts_env: WorkflowEnvironment) -> None:
    bad = plan(task("x", "kubectl_exec"))
    planner = ScriptedPlanner(bad, bad, bad)
    tools = StandInTools()
    async with keel_worker(ts_env.client, provider=planner, tools=tools.activities()) as tq:
        result = await (await start_incident(ts_env.client, tq)).result()
    assert [r.rejection for r in of(result.ledger, "PlanRejected")] == [1, 2, 3]
    assert result.outcome == "handed-over" and tools.started() == []


async def test_failure_compensates_completed_tasks_in_reverse(ts_env: WorkflowEnvironment) -> None:
    planner = ScriptedPlanner(
        plan(rollback("first")),
        plan(rollback("second"), task("notify", "update_incident", after=["second"])),
    )
    tools = StandInTools(fail=["notify"])
    async with keel_worker(ts_env.client, provider=planner, tools=tools.activities()) as tq:
        handle = await start_incident(ts_env.client, tq)
        for gate in ("approve-first", "approve-second"):
            await wait_for_gate(handle, gate)
            await decide(handle, review(gate, "approve", "oncall.lead"))
        result = await handle.result()
    assert result.outcome == "compensated"
    assert [c.ref for c in of(result.ledger, "Compensated")] == ["second", "first"]
    assert all(c.ok and c.tool == "roll_forward_deploy" for c in of(result.ledger, "Compensated"))
    assert tools.started()[-2:] == ["second/compensate", "first/compensate"]
    failed = of(result.ledger, "TaskFailed")
    assert failed[0].ref == "notify" and "stand-in update_incident failed" in failed[0].error
    assert result.compensated == ["second", "first"]


async def test_gate_rejection_compensates_and_skips_the_rest(ts_env: WorkflowEnvironment) -> None:
    planner = ScriptedPlanner(
        plan(
            rollback("first"),
            rollback("second", after=["first"]),
            task("notify", "update_incident", after=["second"]),
        ),
    )
    tools = StandInTools()
    async with keel_worker(ts_env.client, provider=planner, tools=tools.activities()) as tq:
        handle = await start_incident(ts_env.client, tq)
        await wait_for_gate(handle, "approve-first")
        # A reviewer may change the task's input, but only into a valid one.
        bad = review("approve-first", "modify", "oncall.lead", modifications={"to_version": ""})
        with pytest.raises(Exception, match="Workflow update failed"):
            await decide(handle, bad)
        await decide(
            handle,
            review(
                "approve-first", "modify", "oncall.lead", modifications={"to_version": "1.41.2"}
            ),
        )
        await wait_for_gate(handle, "approve-second")
        await decide(handle, review("approve-second", "reject", "oncall.lead", comment="too risky"))
        result = await handle.result()
    assert tools.started() == ["first", "first/compensate"]
    completed = of(result.ledger, "TaskCompleted")
    assert completed[0].output["to_version"] == "1.41.2"  # the reviewer's modification ran
    skipped = {s.ref: s.reason for s in of(result.ledger, "TaskSkipped")}
    assert "rejected (oncall.lead: too risky)" in skipped["second"]
    assert "notify" in skipped
    assert [c.ref for c in of(result.ledger, "Compensated")] == ["first"]
    assert result.outcome == "compensated"


async def test_round_limit_ends_the_investigation(ts_env: WorkflowEnvironment) -> None:
    planner = ScriptedPlanner(*[plan(task("look", "metrics_lookup")) for _ in range(6)])
    tools = StandInTools()
    async with keel_worker(ts_env.client, provider=planner, tools=tools.activities()) as tq:
        result = await (await start_incident(ts_env.client, tq)).result()
    assert result.outcome == "round-limit" and result.rounds == 5
    assert [p.round for p in of(result.ledger, "PlanProposed")] == [1, 2, 3, 4, 5]
    assert len(planner.requests) == 5


async def test_continue_as_new_keeps_the_chain_verifiable(ts_env: WorkflowEnvironment) -> None:
    planner = ScriptedPlanner(
        plan(rollback("first")),
        plan(task("look", "metrics_lookup")),
        plan(task("notify", "update_incident"), done=True, summary="mitigated"),
    )
    tools = StandInTools()
    async with keel_worker(ts_env.client, provider=planner, tools=tools.activities()) as tq:
        handle = await start_incident(ts_env.client, tq, continue_after_rounds=1)
        await wait_for_gate(handle, "approve-first")
        await decide(handle, review("approve-first", "approve", "oncall.lead"))
        result = await handle.result()
        chain = await full_chain(ts_env.client, handle.id)
    assert result.runs == 3 and result.outcome == "mitigated"
    assert verify_chain(chain).ok  # from the genesis hash across all three runs
    assert chain[-1].hash == result.ledger_head
    assert sum(1 for e in chain if e.type == "WorkflowStarted") == 3
    assert types_of(chain).count("ContinuedAsNew") == 2
    assert types_of(chain).count("LedgerContinued") == 2
    # Findings and the saga stack crossed runs: round 3's planner saw round 1's rollback.
    assert any("rollback_deploy" in a for a in planner.requests[2].input["actions"])
    assert result.ledger_genesis != "0" * 64
    assert verify_chain(
        result.ledger, genesis=result.ledger_genesis, first_seq=result.ledger[0].seq
    ).ok
    assert not verify_chain(result.ledger, genesis=result.ledger_genesis).ok  # seq continues


async def test_a_failing_compensation_is_recorded_and_the_rest_still_run(
    ts_env: WorkflowEnvironment,
) -> None:
    planner = ScriptedPlanner(
        plan(
            rollback("first"),
            rollback("second", after=["first"]),
            task("notify", "update_incident", after=["second"]),
        ),
    )
    tools = StandInTools(fail=["notify", "second/compensate"])
    async with keel_worker(ts_env.client, provider=planner, tools=tools.activities()) as tq:
        handle = await start_incident(ts_env.client, tq)
        for gate in ("approve-first", "approve-second"):
            await wait_for_gate(handle, gate)
            await decide(handle, review(gate, "approve", "oncall.lead"))
        result = await handle.result()
    compensated = of(result.ledger, "Compensated")
    assert [(c.ref, c.ok) for c in compensated] == [("second", False), ("first", True)]
    assert "stand-in roll_forward_deploy failed" in compensated[0].error
    assert result.outcome == "compensated" and result.compensated == ["first"]
