"""Expense approval: categorize (agent), route by amount (rule), manager gate, payout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

# Passed through: models and events must be the same classes inside and outside the sandbox.
with workflow.unsafe.imports_passed_through():
    from keel import GateState, KeelWorkflow, Routed, WorkflowCompleted

    from expense_approval.contracts import (
        CATEGORIZER,
        MANAGER_APPROVAL,
        RECORD_PAYOUT,
        Category,
        ExpenseClaim,
        ExpenseResult,
        Payout,
        PayoutRecorded,
    )

ROUTING_RULE = "expense-routing@1"
MANAGER_THRESHOLD_USD = 1_000.0


@workflow.defn(name="ExpenseApproval")
class ExpenseApprovalWorkflow(KeelWorkflow):
    """Approve an expense claim (by rule, or by a manager over $1,000), then pay it once."""

    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> ExpenseResult:
        # settle() runs the body: the run ends with the ledger's head signed, failed or not.
        return await self.settle(self._decide(raw_input))

    async def _decide(self, raw_input: dict[str, Any]) -> ExpenseResult:
        self.start(raw_input)
        claim = self.ingest(ExpenseClaim, raw_input, max_bytes=16_000)
        outcome = await self.agents.run("categorize", CATEGORIZER, claim)
        category: Category = outcome.output.category if outcome.output else "other"
        over = claim.amount_usd > MANAGER_THRESHOLD_USD
        route = "manager-approval" if over else "auto-approve"
        inputs = {"amount_usd": claim.amount_usd, "threshold_usd": MANAGER_THRESHOLD_USD}
        self.ledger.record(Routed(rule=ROUTING_RULE, inputs=inputs, route=route))
        decided_by, approved = f"rule:{ROUTING_RULE}", not over
        if over:
            context = {"claim_id": claim.claim_id, "amount_usd": claim.amount_usd}
            gate = self.gate_book.open(MANAGER_APPROVAL, {**context, "category": category})
            await self.gate_book.wait(gate)
            decided_by = gate.review.reviewer if gate.review else f"default:{gate.name}"
            approved = gate.state is GateState.APPROVED
        payout_id = await self._pay(claim, category) if approved else None
        verdict = "approved" if approved else "rejected"
        summary = {"decided_by": decided_by, "payout_id": payout_id}
        self.ledger.record(WorkflowCompleted(outcome=verdict, summary=summary))
        result = ExpenseResult(
            claim_id=claim.claim_id,
            outcome=verdict,
            decided_by=decided_by,
            category=category,
            payout_id=payout_id,
            ledger=list(self.ledger.events),
        )
        return result

    async def _pay(self, claim: ExpenseClaim, category: Category) -> str:
        # The key comes from the workflow id: a retried activity never pays twice.
        key = f"{workflow.info().workflow_id}/payout"
        recorded: PayoutRecorded = await workflow.execute_activity(
            RECORD_PAYOUT,
            Payout(idempotency_key=key, claim=claim, category=category),
            result_type=PayoutRecorded,
            start_to_close_timeout=timedelta(seconds=30),
        )
        self.ledger.record(recorded)
        return recorded.payout_id
