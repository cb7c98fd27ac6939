"""Contract risk review on the time-skipping server: routes, retries, gates, SLAs, ledger."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from keel.contracts.gates import GateState, GateView
from keel.contracts.ledger import (
    AgentCallFailed,
    AgentDecided,
    AgentRetried,
    CheckpointTaken,
    Escalated,
    GateApproved,
    GateDecided,
    GateExpired,
    GateOpened,
    RolledBack,
    Routed,
    ValidationFailed,
    verify_chain,
)
from keel.offline import OfflineFault
from keel.scenarios.contract_review.contracts import RISK_CLASSIFIER
from keel.testing import events_of
from tests.conftest import keel_worker
from tests.helpers import decide, refused, review, start_review, types_of, wait_for_gate
from tests.samples import load_sample


async def test_low_risk_is_auto_approved_by_rule(ts_env: WorkflowEnvironment) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "low")
        result = await handle.result()
    assert result.outcome == "approved"
    assert result.route == "auto-approve"
    assert result.decided_by == "rule:contract-risk-routing@1"
    routed = [e for e in result.ledger if isinstance(e, Routed)]
    assert [(r.route, r.inputs["risk_level"]) for r in routed] == [("auto-approve", "low")]
    decided = [e for e in result.ledger if isinstance(e, AgentDecided)]
    assert len(decided) == 1
    d = decided[0]
    assert (d.contract, d.contract_fingerprint) == (
        RISK_CLASSIFIER.key,
        RISK_CLASSIFIER.fingerprint,
    )
    assert (d.provider, d.model, d.attempt) == ("offline", "offline-rules-v1", 1)
    assert len(d.prompt_sha256) == 64 and d.prompt is None  # prompt text stays out of history
    assert d.output is not None and d.output["risk_level"] == "low"
    assert types_of(result.ledger)[0] == "WorkflowStarted"
    assert types_of(result.ledger)[-2:] == ["WorkflowCompleted", "ChainHeadSigned"]
    assert verify_chain(result.ledger).ok


async def test_medium_risk_waits_for_standard_review(ts_env: WorkflowEnvironment) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium")
        gate = await wait_for_gate(handle, "standard-review")
        assert gate.reviewers == ["legal.priya", "legal.sam"]
        assert gate.context["risk_level"] == "medium"
        receipt = await decide(
            handle,
            review("standard-review", "approve", "legal.priya", comment="fine"),
        )
        assert receipt.state is GateState.APPROVED
        result = await handle.result()
    assert (result.outcome, result.decided_by, result.route) == (
        "approved",
        "legal.priya",
        "standard-review",
    )
    decided = [e for e in result.ledger if isinstance(e, GateDecided)]
    assert [(d.gate, d.reviewer, d.decision, d.via) for d in decided] == [
        ("standard-review", "legal.priya", "approve", "update")
    ]
    assert decided[0].auth == {"method": "test-kit", "issuer": "keel.testing"}
    assert verify_chain(result.ledger).ok


async def test_high_risk_goes_to_general_counsel_who_adds_conditions(
    ts_env: WorkflowEnvironment,
) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "high")
        await wait_for_gate(handle, "general-counsel")
        await decide(
            handle,
            review(
                "general-counsel",
                "modify",
                "gc.morgan",
                modifications={"conditions": ["cap liability at 12 months of fees"]},
            ),
        )
        # Two approvers: the first one's modification waits for the second's approval.
        [gate] = await handle.query("gates", result_type=list[GateView])
        assert (gate.state, gate.approved_by) == (GateState.AWAITING_APPROVAL, ["gc.morgan"])
        receipt = await decide(handle, review("general-counsel", "approve", "deputy-gc.alex"))
        assert (receipt.state, receipt.approvals, receipt.approvals_needed) == (
            GateState.MODIFIED,
            2,
            2,
        )
        result = await handle.result()
    assert (result.outcome, result.route) == ("approved", "general-counsel")
    assert result.conditions == ["cap liability at 12 months of fees"]
    [approved] = events_of(result.ledger, GateApproved)
    assert (approved.reviewer, approved.approvals, approved.approvals_needed) == ("gc.morgan", 1, 2)
    [decided] = events_of(result.ledger, GateDecided)
    assert decided.approvers == ["gc.morgan", "deputy-gc.alex"]
    assert decided.decision == "modify"


async def test_malformed_output_is_retried_with_the_parse_error_fed_back(
    ts_env: WorkflowEnvironment,
) -> None:
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1])]
    async with keel_worker(ts_env.client, faults=faults) as tq:
        result = await (await start_review(ts_env.client, tq, "low")).result()
    assert result.outcome == "approved"
    failed = [e for e in result.ledger if isinstance(e, ValidationFailed)]
    assert [(f.kind, f.attempt) for f in failed] == [("parse", 1)]
    retried = [e for e in result.ledger if isinstance(e, AgentRetried)]
    assert retried[0].next_attempt == 2
    decided = [e for e in result.ledger if isinstance(e, AgentDecided)]
    assert [d.attempt for d in decided] == [1, 2]
    assert decided[0].parse_error and decided[0].output is None
    assert decided[1].feedback == failed[0].reasons  # the reason was fed back
    assert "not valid JSON" in decided[1].feedback[0]


async def test_low_confidence_is_retried_with_feedback(ts_env: WorkflowEnvironment) -> None:
    faults = [OfflineFault(kind="low_confidence", agent_attempts=[1, 2])]
    async with keel_worker(ts_env.client, faults=faults) as tq:
        result = await (await start_review(ts_env.client, tq, "low")).result()
    failed = [e for e in result.ledger if isinstance(e, ValidationFailed)]
    assert [(f.kind, f.attempt) for f in failed] == [("confidence", 1), ("confidence", 2)]
    assert "below the contract's threshold 0.70" in failed[0].reasons[0]
    decided = [e for e in result.ledger if isinstance(e, AgentDecided)]
    assert [d.confidence for d in decided] == [0.35, 0.35, 0.97]
    assert result.outcome == "approved"


async def test_exhaustion_escalates_to_a_human_who_supplies_the_output(
    ts_env: WorkflowEnvironment,
) -> None:
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1, 2, 3])]
    async with keel_worker(ts_env.client, faults=faults) as tq:
        handle = await start_review(ts_env.client, tq, "low")
        gate = await wait_for_gate(handle, "risk-classification")
        assert gate.context["contract"] == "risk-classifier@1"
        assert "not valid JSON" in gate.context["last_problems"][0]
        human = {"risk_level": "medium", "clause_refs": ["3"], "rationale": "checked by hand"}
        # A human answer must still satisfy the contract's output schema.
        reason = await refused(
            handle,
            review(
                "risk-classification",
                "modify",
                "legal.sam",
                modifications={**human, "rationale": "short"},
            ),
        )
        assert "modifications.rationale" in reason
        await decide(
            handle, review("risk-classification", "modify", "legal.sam", modifications=human)
        )
        await wait_for_gate(handle, "standard-review")
        await decide(handle, review("standard-review", "approve", "legal.priya"))
        result = await handle.result()
    escalated = [e for e in result.ledger if isinstance(e, Escalated)]
    assert escalated[0].subject == "node:classify-risk"
    routed = next(e for e in result.ledger if isinstance(e, Routed))
    assert routed.inputs["source"] == "human" and routed.route == "standard-review"
    assert result.risk is not None and result.risk.confidence == 1.0
    assert result.outcome == "approved"


async def test_model_outage_escalates_after_temporal_retries(ts_env: WorkflowEnvironment) -> None:
    faults = [OfflineFault(kind="server_error", agent_attempts=[1])]
    async with keel_worker(ts_env.client, faults=faults) as tq:
        handle = await start_review(ts_env.client, tq, "low")
        await wait_for_gate(handle, "risk-classification", timeout=120)
        await decide(
            handle, review("risk-classification", "reject", "legal.sam", comment="vendor withdrew")
        )
        result = await handle.result()
    failed = events_of(result.ledger, AgentCallFailed)
    assert len(failed) == 1 and failed[0].retryable and "injected server error" in failed[0].message
    assert result.outcome == "rejected" and result.decided_by == "escalation"


async def test_rate_limit_is_retried_by_temporal_and_succeeds(ts_env: WorkflowEnvironment) -> None:
    faults = [
        OfflineFault(
            kind="rate_limit", agent_attempts=[1], activity_attempts=[1, 2], retry_after_seconds=2
        )
    ]
    async with keel_worker(ts_env.client, faults=faults) as tq:
        result = await (await start_review(ts_env.client, tq, "low")).result()
    decided = [e for e in result.ledger if isinstance(e, AgentDecided)]
    assert [(d.attempt, d.activity_attempt) for d in decided] == [(1, 3)]
    assert result.outcome == "approved"


async def test_sla_expiry_escalates_to_secondary_reviewer(ts_env: WorkflowEnvironment) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium")
        await wait_for_gate(handle, "standard-review")
        # The lead may not act before the SLA passes ...
        reason = await refused(handle, review("standard-review", "approve", "legal.lead.jordan"))
        assert "may not review" in reason
        await ts_env.sleep(timedelta(hours=4, minutes=1))
        gate = await wait_for_gate(handle, "standard-review")
        assert gate.state == "escalated"
        assert "legal.lead.jordan" in gate.reviewers
        # ... and may after it.
        await decide(handle, review("standard-review", "approve", "legal.lead.jordan"))
        result = await handle.result()
    escalated = [e for e in result.ledger if isinstance(e, Escalated)]
    assert [(e.subject, e.to) for e in escalated] == [
        ("gate:standard-review", ["legal.lead.jordan", "role:legal-lead"])
    ]
    assert "4:00:00" in escalated[0].reason
    opened = next(e for e in events_of(result.ledger, GateOpened))
    assert escalated[0].at - opened.at >= timedelta(hours=4)
    assert (result.outcome, result.decided_by) == ("approved", "legal.lead.jordan")


async def test_unanswered_gate_takes_its_default_path(ts_env: WorkflowEnvironment) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium")
        await wait_for_gate(handle, "standard-review")
        result = await handle.result()  # time skips through both SLAs
    assert types_of(result.ledger).count("Escalated") == 1
    expired = events_of(result.ledger, GateExpired)
    assert expired[0].default_decision == "reject"
    assert expired[0].waited_seconds == pytest.approx(28 * 3600, abs=60)
    assert (result.outcome, result.decided_by) == ("rejected", "default:standard-review")


async def test_rejection_rolls_back_and_reinvokes_the_agent_with_the_comment(
    ts_env: WorkflowEnvironment,
) -> None:
    comment = "Clause 4 fees also hide a penalty schedule; reassess"
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "high")
        await wait_for_gate(handle, "general-counsel")
        await decide(handle, review("general-counsel", "reject", "gc.morgan", comment=comment))
        await wait_for_gate(handle, "general-counsel-2")
        await decide(handle, review("general-counsel-2", "approve", "gc.morgan"))
        await decide(handle, review("general-counsel-2", "approve", "deputy-gc.alex"))
        result = await handle.result()
    events = result.ledger
    rolled = events_of(events, RolledBack)
    assert len(rolled) == 1 and rolled[0].discarded_keys == ["risk"]
    checkpoints = events_of(events, CheckpointTaken)
    assert rolled[0].checkpoint == checkpoints[0].checkpoint
    decided = [e for e in events if isinstance(e, AgentDecided)]
    assert len(decided) == 2
    assert decided[1].feedback == [f"Reviewer gc.morgan rejected the assessment: {comment}"]
    assert decided[1].prompt_sha256 != decided[0].prompt_sha256
    assert decided[1].output is not None and "4" in decided[1].output["clause_refs"]
    assert result.outcome == "approved" and result.decided_by == "deputy-gc.alex"


async def test_second_rejection_is_final(ts_env: WorkflowEnvironment) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium")
        for gate in ("standard-review", "standard-review-2"):
            await wait_for_gate(handle, gate)
            await decide(handle, review(gate, "reject", "legal.sam", comment="not acceptable"))
        result = await handle.result()
    assert (result.outcome, result.decided_by, result.reason) == (
        "rejected",
        "legal.sam",
        "not acceptable",
    )


async def test_malformed_contract_fails_fast_and_clearly(ts_env: WorkflowEnvironment) -> None:
    bad = load_sample("contract-low-risk")
    bad["annual_value_usd"] = -5
    bad["clauses"].append(dict(bad["clauses"][0]))
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, bad)
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "InvalidInput" and cause.non_retryable
    assert "annual_value_usd" in cause.message and "appears twice" in cause.message
