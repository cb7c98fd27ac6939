"""Expense approval, as the finance team specifies it."""

from __future__ import annotations

from typing import Any

from conftest import DeskFactory, claim
from keel import AgentRetried, GateDecided, Routed
from keel.testing import (
    FunctionModel,
    ModelRequest,
    approve,
    assert_replays,
    events_of,
    ledger_of,
    offline_settings,
    reject,
    wait_for_gate,
)
from temporalio.testing import ActivityEnvironment

from expense_approval import APP
from expense_approval.contracts import Payout
from expense_approval.payroll import Payroll, database


async def test_a_claim_under_1000_is_approved_by_rule_and_paid(open_desk: DeskFactory) -> None:
    async with open_desk() as desk:
        handle = await desk.submit(claim(86.5, "Cafe Lisboa", "Team lunch"))
        result = await handle.result()

    assert (result.outcome, result.decided_by) == ("approved", "rule:expense-routing@1")
    [routed] = events_of(result.ledger, Routed)
    assert routed.route == "auto-approve" and routed.inputs["amount_usd"] == 86.5
    assert result.category == "meals"
    [paid] = desk.payouts()
    assert paid["payout_id"] == result.payout_id and paid["amount_usd"] == 86.5


async def test_a_claim_over_1000_waits_for_a_manager_and_is_paid_once_approved(
    open_desk: DeskFactory,
) -> None:
    async with open_desk() as desk:
        handle = await desk.submit(claim(1840.0, "Lufthansa", "Return flight to Lisbon"))
        gate = await wait_for_gate(handle, "manager-approval")
        unpaid = desk.payouts()
        await approve(handle, "manager-approval", "manager.kim", comment="workshop trip")
        result = await handle.result()

    assert gate.reviewers == ["manager.kim"] and gate.context["category"] == "travel"
    assert unpaid == []
    assert (result.outcome, result.decided_by) == ("approved", "manager.kim")
    assert [r.route for r in events_of(result.ledger, Routed)] == ["manager-approval"]
    assert len(events_of(result.ledger, "PayoutRecorded")) == 1
    assert [p["payout_id"] for p in desk.payouts()] == [result.payout_id]


async def test_a_rejected_claim_is_not_paid(open_desk: DeskFactory) -> None:
    async with open_desk() as desk:
        handle = await desk.submit(claim(2500.0, "Grand Hotel", "Five nights"))
        await wait_for_gate(handle, "manager-approval")
        await reject(handle, "manager-approval", "manager.kim", comment="book the usual hotel")
        result = await handle.result()

    assert (result.outcome, result.decided_by, result.payout_id) == (
        "rejected",
        "manager.kim",
        None,
    )
    assert events_of(result.ledger, "PayoutRecorded") == [] and desk.payouts() == []


async def test_a_claim_nobody_decides_is_rejected_once_the_slas_pass(
    open_desk: DeskFactory,
) -> None:
    async with open_desk() as desk:
        handle = await desk.submit(claim(1200.0, "Dell", "Laptop for the new hire"))
        await wait_for_gate(handle, "manager-approval")
        result = await handle.result()  # time skips through 48 h, escalation, 24 h

    assert (result.outcome, result.decided_by) == ("rejected", "default:manager-approval")
    assert [e.type for e in result.ledger if e.type in ("Escalated", "GateExpired")] == [
        "Escalated",
        "GateExpired",
    ]
    assert desk.payouts() == []


async def test_an_unsure_categorizer_is_asked_again_with_feedback(
    open_desk: DeskFactory,
) -> None:
    def unsure_first(request: ModelRequest) -> dict[str, Any]:
        if request.agent_attempt == 1:
            return {"category": "other", "confidence": 0.4}
        return {"category": "software", "confidence": 0.9}

    model = FunctionModel(unsure_first)
    async with open_desk(model=model) as desk:
        handle = await desk.submit(claim(49.0, "Figma", "Design seats"))
        result = await handle.result()

    first, second = model.requests
    assert "Merchant: Figma" in first.prompt and first.feedback == ()
    assert any("0.4" in reason for reason in second.feedback)
    [retried] = events_of(result.ledger, AgentRetried)
    assert retried.next_attempt == 2
    assert result.category == "software" and result.outcome == "approved"


async def test_a_payout_with_a_key_already_paid_is_not_paid_again(tmp_path: Any) -> None:
    payroll = Payroll(database(offline_settings(data_dir=tmp_path).data_dir))
    payout = Payout(
        idempotency_key="expense-EXP-1/payout",
        claim={
            "claim_id": "EXP-1",
            "employee": "ada.okafor",
            "merchant": "Dell",
            "description": "Monitor",
            "amount_usd": 320.0,
        },
        category="equipment",
    )
    try:
        first = await ActivityEnvironment().run(payroll.record_payout, payout)
        again = await ActivityEnvironment().run(payroll.record_payout, payout)
        rows = payroll.payouts()
    finally:
        payroll.close()

    assert (first.replayed, again.replayed) == (False, True)
    assert again.payout_id == first.payout_id and len(rows) == 1


async def test_finished_claims_replay_with_the_current_code(open_desk: DeskFactory) -> None:
    async with open_desk() as desk:
        small = await desk.submit(claim(20.0, "Taxi Lisboa", "Airport taxi"))
        large = await desk.submit(claim(5000.0, "Apple", "Laptop and monitor"))
        await wait_for_gate(large, "manager-approval")
        await approve(large, "manager-approval", "manager.kim")
        await small.result(), await large.result()
        decided = events_of(await ledger_of(large), GateDecided)

    assert [d.reviewer for d in decided] == ["manager.kim"]
    await assert_replays([small, large], apps=[APP])
