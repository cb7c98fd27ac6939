"""Contract risk review: ingest, classify risk (agent), route by rule, gate, record."""

from __future__ import annotations

from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from keel.contracts.gates import GateSpec, GateState
    from keel.contracts.ledger import Routed, WorkflowCompleted
    from keel.scenarios.contract_review.contracts import (
        GENERAL_COUNSEL_REVIEW,
        MAX_INPUT_BYTES,
        RISK_CLASSIFIER,
        STANDARD_REVIEW,
        ContractReviewInput,
        ContractReviewResult,
        RiskAssessment,
        RiskClassifierInput,
        RiskLevel,
    )

from keel.workflows.base import KeelWorkflow

ROUTING_RULE = "contract-risk-routing@1"
MAX_ASSESSMENTS = 2
"""A reviewer's rejection re-invokes the classifier once; a second rejection is final."""

Route = Literal["auto-approve", "standard-review", "general-counsel"]


def route_for(risk: RiskLevel, *, reassessed: bool) -> Route:
    """The routing rule: low auto-approves (first assessment only), medium and high get a
    review gate. A reassessment follows a human rejection, so it never auto-approves."""
    if risk is RiskLevel.HIGH:
        return "general-counsel"
    if risk is RiskLevel.MEDIUM or reassessed:
        return "standard-review"
    return "auto-approve"


GATES: dict[Route, GateSpec] = {
    "standard-review": STANDARD_REVIEW,
    "general-counsel": GENERAL_COUNSEL_REVIEW,
}


@workflow.defn(name="ContractReview")
class ContractReviewWorkflow(KeelWorkflow):
    """Review a vendor contract's risk; humans approve what the rule does not."""

    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> ContractReviewResult:
        """Review the contract in ``raw_input`` (a ``ContractReviewInput``)."""
        return await self.settle(self._review(raw_input))

    async def _review(self, raw_input: dict[str, Any]) -> ContractReviewResult:
        self.start(raw_input)
        workflow.set_current_details("Ingesting the contract")
        contract = self.ingest(ContractReviewInput, raw_input, max_bytes=MAX_INPUT_BYTES)
        self.requested_by(contract.requested_by)  # who submitted it may not approve it
        self.context.facts["contract"] = {
            "id": contract.contract_id,
            "vendor": contract.vendor,
            "clause_ids": [c.id for c in contract.clauses],
        }
        node_input = RiskClassifierInput(
            vendor=contract.vendor,
            title=contract.title,
            annual_value_usd=contract.annual_value_usd,
            term_months=contract.term_months,
            jurisdiction=contract.jurisdiction,
            clauses=contract.clauses,
        )
        clause_ids = {c.id for c in contract.clauses}
        feedback: list[str] = []
        for assessment in range(1, MAX_ASSESSMENTS + 1):
            outcome = await self.agents.run(
                "classify-risk",
                RISK_CLASSIFIER,
                node_input,
                feedback=feedback,
                check=lambda out: _unknown_clauses(out, clause_ids),
            )
            risk = outcome.output
            if risk is None:
                by = "guardrail" if outcome.source == "denied" else "escalation"
                return self._finish(contract, "rejected", by, outcome.note, None, None)
            self.context.facts["risk"] = risk.model_dump(mode="json")
            route = route_for(risk.risk_level, reassessed=assessment > 1)
            self.ledger.record(
                Routed(
                    rule=ROUTING_RULE,
                    inputs={
                        "risk_level": risk.risk_level.value,
                        "confidence": risk.confidence,
                        "assessment": assessment,
                        "source": outcome.source,
                    },
                    route=route,
                )
            )
            if route == "auto-approve":
                reason = "low risk, approved by rule"
                return self._finish(
                    contract, "approved", f"rule:{ROUTING_RULE}", reason, route, risk
                )
            gate = self.gate_book.open(
                GATES[route],
                {
                    "contract_id": contract.contract_id,
                    "vendor": contract.vendor,
                    "risk_level": risk.risk_level.value,
                    "clause_refs": risk.clause_refs,
                    "rationale": risk.rationale,
                    "assessment": assessment,
                },
            )
            await self.gate_book.wait(gate)
            review = gate.review
            if gate.state in (GateState.APPROVED, GateState.MODIFIED) and review:
                conditions = (review.modifications or {}).get("conditions", [])
                return self._finish(
                    contract,
                    "approved",
                    review.reviewer,
                    review.comment or gate.state.value,
                    route,
                    risk,
                    conditions=[str(c) for c in conditions],
                )
            if gate.state is GateState.EXPIRED:
                default = GATES[route].on_expiry
                return self._finish(
                    contract,
                    "approved" if default == "approve" else "rejected",
                    f"default:{gate.name}",
                    "no reviewer decided before the SLAs passed",
                    route,
                    risk,
                )
            if review is None:
                raise ApplicationError(
                    f"gate {gate.name} closed without a review", non_retryable=True
                )
            if assessment == MAX_ASSESSMENTS:
                return self._finish(
                    contract, "rejected", review.reviewer, review.comment or "rejected", route, risk
                )
            self.context.rollback(outcome.checkpoint, f"{gate.name} rejected by {review.reviewer}")
            feedback = [f"Reviewer {review.reviewer} rejected the assessment: {review.comment}"]
        raise ApplicationError("the review loop ended without an outcome", non_retryable=True)

    def _finish(
        self,
        contract: ContractReviewInput,
        outcome: Literal["approved", "rejected"],
        decided_by: str,
        reason: str,
        route: str | None,
        risk: RiskAssessment | None,
        *,
        conditions: list[str] | None = None,
    ) -> ContractReviewResult:
        self.ledger.record(
            WorkflowCompleted(
                outcome=outcome,
                summary={"decided_by": decided_by, "reason": reason, "route": route},
            )
        )
        workflow.set_current_details(f"Finished: **{outcome}** by {decided_by}")
        return ContractReviewResult(
            contract_id=contract.contract_id,
            outcome=outcome,
            decided_by=decided_by,
            reason=reason,
            route=route,
            risk=risk,
            conditions=conditions or [],
            ledger=list(self.ledger.events),
            ledger_head=self.ledger.head_hash,
        )


def _unknown_clauses(output: RiskAssessment, clause_ids: set[str]) -> list[str]:
    unknown = [ref for ref in output.clause_refs if ref not in clause_ids]
    if unknown:
        return [f"clause_refs {unknown} are not clauses of this contract ({sorted(clause_ids)})"]
    return []
