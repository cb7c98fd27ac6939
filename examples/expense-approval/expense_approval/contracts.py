"""Expense approval: the claim, the categorizer contract, the manager gate, the payout."""

from datetime import timedelta
from typing import Literal

from keel import AgentContract, EventBase, GateSpec, LedgerEvent, UseDefault
from pydantic import BaseModel, ConfigDict, Field

RECORD_PAYOUT = "expense_approval.record_payout"  # stable: histories outlive code
Category = Literal["travel", "meals", "equipment", "software", "other"]


class ExpenseClaim(BaseModel):
    """An expense claim as an employee submits it."""

    model_config = ConfigDict(extra="forbid")
    claim_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    employee: str = Field(min_length=1, max_length=200)
    merchant: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1, max_length=2_000)
    amount_usd: float = Field(gt=0, le=100_000)


class Categorization(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: Category
    confidence: float = Field(ge=0.0, le=1.0)


class Payout(BaseModel):
    idempotency_key: str  # the payroll system pays a key once
    claim: ExpenseClaim
    category: Category


class PayoutRecorded(EventBase):
    """This app's own ledger event: what the payroll system recorded."""

    type: Literal["PayoutRecorded"] = "PayoutRecorded"
    payout_id: str
    idempotency_key: str
    replayed: bool = False


class ExpenseResult(BaseModel):
    claim_id: str
    outcome: Literal["approved", "rejected"]
    decided_by: str
    category: Category
    payout_id: str | None = None
    ledger: list[LedgerEvent]


MANAGER_APPROVAL = GateSpec(
    name="manager-approval",
    title="Manager approval (claims over $1,000)",
    reviewers=("manager.kim",),
    sla=timedelta(hours=48),
    escalation_reviewers=("finance.lee",),
    escalation_sla=timedelta(hours=24),
    on_expiry="reject",
)

CATEGORIZER = AgentContract(
    name="expense-categorizer",
    version=1,
    description="Put an expense claim in one accounting category.",
    input_model=ExpenseClaim,
    output_model=Categorization,
    system_prompt="You are an accounts clerk. Categorize the expense; report your confidence.",
    prompt_template="Merchant: $merchant\nDescription: $description\nAmount (USD): $amount_usd",
    confidence_threshold=0.7,
    on_exhausted=UseDefault(output={"category": "other", "confidence": 0.0}, reason="unsure"),
)
