"""Contract risk review: inputs, outputs, the risk-classifier contract and the review gates."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Literal

from annotated_types import Len
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from keel.contracts.agent import AgentContract, EscalateToGate
from keel.contracts.gates import GateSpec
from keel.contracts.guardrails import GuardrailConfig
from keel.contracts.ledger import LedgerEvent
from keel.contracts.registry import REGISTRY

MAX_INPUT_BYTES = 256 * 1024
"""Largest contract review input accepted (its canonical JSON)."""


class RiskLevel(StrEnum):
    """The classifier's verdict; it decides the route."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Clause(BaseModel):
    """One numbered clause of a vendor agreement."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=20)
    heading: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=20_000)


class ContractReviewInput(BaseModel):
    """A vendor contract submitted for risk review."""

    model_config = ConfigDict(extra="forbid")

    contract_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    vendor: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=300)
    annual_value_usd: float = Field(ge=0)
    term_months: int = Field(ge=1, le=240)
    jurisdiction: str = Field(min_length=2, max_length=100)
    requested_by: str = Field(min_length=1, max_length=200)
    clauses: list[Clause] = Field(min_length=1, max_length=200)

    @field_validator("clauses")
    @classmethod
    def _unique_ids(cls, clauses: list[Clause]) -> list[Clause]:
        seen: set[str] = set()
        for clause in clauses:
            if clause.id in seen:
                raise ValueError(f"clause id {clause.id!r} appears twice")
            seen.add(clause.id)
        return clauses


class RiskClassifierInput(BaseModel):
    """What the risk classifier reads: the agreement's terms and clauses."""

    vendor: str
    title: str
    annual_value_usd: float
    term_months: int
    jurisdiction: str
    clauses: list[Clause]


class RiskAssessment(BaseModel):
    """The risk classifier's answer."""

    model_config = ConfigDict(extra="forbid")

    risk_level: RiskLevel
    clause_refs: list[str] = Field(max_length=50)
    rationale: str = Field(min_length=10, max_length=4_000)
    confidence: float = Field(ge=0.0, le=1.0)


class ContractReviewResult(BaseModel):
    """Outcome of a review, with the whole ledger."""

    contract_id: str
    outcome: Literal["approved", "rejected"]
    decided_by: str
    reason: str
    route: str | None = None
    risk: RiskAssessment | None = None
    conditions: list[str] = Field(default_factory=list)
    ledger: list[LedgerEvent]
    ledger_head: str


CONDITIONS = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=500)]], Len(max_length=20)
]
"""What a reviewer's ``modify`` may set as a contract's conditions."""

STANDARD_REVIEW = GateSpec(
    name="standard-review",
    title="Standard legal review (medium risk)",
    reviewers=("legal.priya", "legal.sam"),
    roles=("legal",),
    sla=timedelta(hours=4),
    escalation_reviewers=("legal.lead.jordan",),
    escalation_roles=("legal-lead",),
    escalation_sla=timedelta(hours=24),
    on_expiry="reject",
    modifiable_fields=("conditions",),
    field_types={"conditions": CONDITIONS},
)

GENERAL_COUNSEL_REVIEW = GateSpec(
    name="general-counsel",
    title="General counsel approval (high risk: two approvers)",
    reviewers=("gc.morgan", "deputy-gc.alex"),
    roles=("general-counsel",),
    approvals=2,
    sla=timedelta(hours=24),
    escalation_roles=("legal-lead",),
    escalation_sla=timedelta(hours=48),
    on_expiry="reject",
    modifiable_fields=("conditions",),
    field_types={"conditions": CONDITIONS},
)

RISK_CLASSIFICATION_ESCALATION = GateSpec(
    name="risk-classification",
    title="Classify contract risk by hand (the agent could not)",
    reviewers=("legal.priya", "legal.sam", "legal.lead.jordan"),
    roles=("legal", "legal-lead"),
    sla=timedelta(hours=8),
    on_expiry="reject",
    output_contract="risk-classifier@1",
)

RISK_CLASSIFIER = REGISTRY.register(
    AgentContract(
        name="risk-classifier",
        version=1,
        description="Classify the legal and commercial risk of a vendor contract.",
        input_model=RiskClassifierInput,
        output_model=RiskAssessment,
        system_prompt=(
            "You are a contracts analyst. Classify vendor-contract risk as low, medium or "
            "high. Cite the clause ids that drive the risk. Report your confidence in [0, 1]."
        ),
        prompt_template=(
            "Vendor: $vendor\nTitle: $title\nAnnual value (USD): $annual_value_usd\n"
            "Term (months): $term_months\nGoverning law: $jurisdiction\nClauses: $clauses"
        ),
        time_budget=timedelta(seconds=60),
        confidence_threshold=0.7,
        max_attempts=3,
        on_exhausted=EscalateToGate(gate=RISK_CLASSIFICATION_ESCALATION),
        # Legal can classify by hand while the model is down or misconfigured: the gate
        # shows what failed and what to fix.
        on_system_failure="escalate",
        # The vendor writes the agreement: every text in it is untrusted.
        guardrails=GuardrailConfig(untrusted_fields=("vendor", "title", "jurisdiction", "clauses")),
    )
)
