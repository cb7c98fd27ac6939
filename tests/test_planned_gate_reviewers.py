"""Who approves a planned task is the policy's call, never the planner's: a plan cannot name
its gate's reviewers, SLAs or expiry, and the gate it gets lists exactly the policy's
reviewers."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.testing import WorkflowEnvironment

from keel.contracts.ledger import GateDecided, GateOpened, ValidationFailed
from keel.contracts.plans import PlannedTask, PlannerOutput, PlanPolicy
from keel.scenarios.incident import IncidentInvestigationWorkflow
from keel.scenarios.incident.contracts import INCIDENT_POLICY
from keel.testing import events_of
from tests.conftest import keel_worker
from tests.helpers import decide, refused, review, wait_for_gate
from tests.samples import load_sample
from tests.standins import ScriptedPlanner, StandInTools, plan, rollback


def with_gate(**gate: Any) -> dict[str, Any]:
    """A plan whose rollback's gate carries ``gate`` besides its title."""
    task = rollback("rollback")
    task["gate"] = {**task["gate"], **gate}
    return plan(task)


@pytest.mark.parametrize(
    ("gate", "reason"),
    [
        ({"reviewers": ["mallory.planner"]}, "plans may not choose reviewers ('reviewers')"),
        ({"reviewers": []}, "plans may not choose reviewers ('reviewers')"),
        ({"escalation_reviewers": ["mallory"]}, "plans may not choose reviewers"),
        ({"sla": "PT1S"}, "plans may not choose a gate's SLA ('sla')"),
        ({"on_expiry": "approve"}, "plans may not choose what an unanswered gate does"),
        ({"approver": "mallory"}, "gate.approver: Extra inputs are not permitted"),
    ],
    ids=["reviewers", "empty-reviewers", "escalation", "sla", "on-expiry", "unknown-field"],
)
def test_a_plan_cannot_choose_who_approves_its_gates(gate: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        PlannerOutput.model_validate(with_gate(**gate))
    (error,) = err.value.errors()  # the one reason a planner is told
    where = ".".join(str(p) for p in error["loc"])
    assert where.startswith("tasks.0.gate") and reason in f"{where}: {error['msg']}"
    assert "the policy names them" in error["msg"] or error["type"] == "extra_forbidden"


def test_the_gate_before_a_planned_task_is_built_from_the_policy() -> None:
    policy = PlanPolicy(
        allowed_tools=("rollback_deploy", "update_incident"),
        gate_reviewers=("oncall.lead",),
        tool_gate_reviewers={"update_incident": ("comms.lead",)},
        gate_escalation_reviewers=("oncall.lead", "sre.manager"),
        gate_sla=timedelta(minutes=10),
        gate_escalation_sla=timedelta(hours=1),
    )
    task = PlannerOutput.model_validate(plan(rollback("rollback"))).tasks[0]
    spec = policy.gate_spec(task)
    assert (spec.name, spec.title) == ("approve-rollback", "Approve rollback")
    assert spec.reviewers == ("oncall.lead",)
    assert spec.escalation_reviewers == ("sre.manager",)  # not repeated
    assert (spec.sla, spec.escalation_sla, spec.on_expiry) == (
        timedelta(minutes=10),
        timedelta(hours=1),
        "reject",
    )
    assert spec.modifiable_fields == ("service", "deploy_id", "to_version")
    note = task.model_copy(update={"tool": "update_incident", "ref": "note"})
    assert policy.gate_spec(note).reviewers == ("comms.lead",)
    with pytest.raises(ValueError, match="has no gate"):
        policy.gate_spec(PlannedTask(ref="bare", tool="rollback_deploy", input={}))


async def test_a_planned_rollback_is_approved_only_by_the_policys_reviewers(
    ts_env: WorkflowEnvironment,
) -> None:
    # The planner first tries to name its own reviewer; the answer is refused and it re-plans.
    planner = ScriptedPlanner(
        with_gate(reviewers=["mallory.planner"]),
        plan(rollback("rollback")),
        plan(done=True, summary="rolled back"),
    )
    tools = StandInTools()
    async with keel_worker(ts_env.client, provider=planner, tools=tools.activities()) as tq:
        handle = await ts_env.client.start_workflow(
            IncidentInvestigationWorkflow.run,
            {"page": load_sample("incident-page"), "carry": None},
            id=f"incident-{uuid.uuid4()}",
            task_queue=tq,
        )
        gate = await wait_for_gate(handle, "approve-rollback")
        assert gate.reviewers == list(INCIDENT_POLICY.gate_reviewers)
        assert gate.reviewers == ["oncall.lead", "sre.manager"]
        reason = await refused(handle, review("approve-rollback", "approve", "mallory.planner"))
        assert "'mallory.planner' may not review gate 'approve-rollback'" in reason
        assert "allowed: oncall.lead, sre.manager" in reason
        assert tools.started() == []  # a refused review runs nothing
        await decide(handle, review("approve-rollback", "approve", "oncall.lead"))
        result = await handle.result()
    assert result.outcome == "mitigated"
    assert tools.started() == ["rollback"]
    failed = [e for e in events_of(result.ledger, ValidationFailed) if e.node == "plan"]
    assert len(failed) == 1
    assert any("plans may not choose reviewers" in r for r in failed[0].reasons)
    (opened,) = events_of(result.ledger, GateOpened)
    assert opened.reviewers == ["oncall.lead", "sre.manager"]
    (decided,) = events_of(result.ledger, GateDecided)
    assert (decided.reviewer, decided.state) == ("oncall.lead", "approved")
