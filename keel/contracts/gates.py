"""Approval gates: their specification, states and the ``review`` payload."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_COMMENT_CHARS = 4_000
MAX_MODIFICATION_CHARS = 16_000
MAX_NAME_CHARS = 200
"""Longest gate, reviewer or device name a review may carry."""
MAX_MODIFICATION_DEPTH = 16
"""Deepest nesting of a ``modify`` decision's modifications (a deeper one could make the
ledger and the result undecodable by JSON parsers with recursion limits)."""


class GateState(StrEnum):
    """``pending`` -> ``awaiting_approval`` [-> ``escalated``] -> a final state."""

    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    ESCALATED = "escalated"
    APPROVED = "approved"
    REJECTED = "rejected"
    MODIFIED = "modified"
    EXPIRED = "expired"

    @property
    def open(self) -> bool:
        """Whether a reviewer can still act on the gate."""
        return self in (GateState.AWAITING_APPROVAL, GateState.ESCALATED)


class ReviewDecision(StrEnum):
    """What a reviewer decides at a gate."""

    APPROVE = "approve"
    REJECT = "reject"
    MODIFY = "modify"


class GateSpec(BaseModel):
    """What a gate asks, of whom, and what happens when nobody answers.

    Attributes:
        name: identifier used in ``review`` payloads and ``keel approve ID GATE``.
        reviewers: subjects who may decide, by name.
        roles: directory roles whose holders may decide. A reviewer named in ``reviewers``
            or holding one of ``roles`` may decide; with both empty, any authenticated
            reviewer may (never the execution's requesters: separation of duties).
        approvals: distinct approvers needed before the gate is approved (n-of-m); one
            rejection rejects it.
        sla: how long the first reviewers have.
        escalation_reviewers: who is added when the SLA passes; with ``escalation_roles``
            empty too, the gate does not escalate.
        escalation_roles: roles added when the SLA passes.
        escalation_sla: how long the gate stays open after escalating.
        on_expiry: the default path when every SLA has passed.
        modifiable_fields: keys a ``modify`` decision may change; empty forbids ``modify``
            unless ``output_contract`` is set.
        field_types: the type of each modifiable field (``{"conditions": list[str]}``):
            a modification of another type is refused before workflow code reads it, and
            the inbox's form checks it before sending. A field without one takes any JSON.
        output_contract: ``name@version`` whose output model a ``modify`` decision must
            satisfy (gates that take over from an exhausted agent node).
        notify: notification channels told when the gate opens, escalates, expires or is
            decided (names the worker's notification settings define); empty: none.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    title: str
    reviewers: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    approvals: int = Field(1, ge=1, le=10)
    sla: timedelta = timedelta(hours=4)
    escalation_reviewers: tuple[str, ...] = ()
    escalation_roles: tuple[str, ...] = ()
    escalation_sla: timedelta = timedelta(hours=24)
    on_expiry: Literal["approve", "reject"] = "reject"
    modifiable_fields: tuple[str, ...] = ()
    field_types: dict[str, Any] = Field(default_factory=dict, exclude=True)
    output_contract: str | None = None
    notify: tuple[str, ...] = ()

    @property
    def escalates(self) -> bool:
        """Whether the gate escalates when its SLA passes."""
        return bool(self.escalation_reviewers or self.escalation_roles)


class LegacyReview(BaseModel):
    """The unsigned ``review`` payload of Keel before decisions were signed: taken only at a
    gate opened before then (a run an older worker recorded), and recorded as unsigned."""

    model_config = ConfigDict(extra="forbid")

    gate: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    decision: ReviewDecision
    reviewer: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)
    modifications: dict[str, Any] | None = None
    device: str | None = Field(None, max_length=MAX_NAME_CHARS)


class Verdict(BaseModel):
    """How a gate was decided: what workflow code reads after ``GateBook.wait``."""

    decision: ReviewDecision
    reviewer: str
    """The authenticated person who made the decision."""
    on_behalf_of: str | None = None
    """Who delegated to ``reviewer`` while away, for a decision made on their behalf."""
    comment: str | None = None
    modifications: dict[str, Any] | None = None
    approvers: list[str] = Field(default_factory=list)
    """Every approver of an approved or modified gate (more than one for n-of-m)."""


def modification_depth_problem(value: dict[str, Any] | None) -> str | None:
    """Why ``value`` nests too deeply to record, or None."""
    if value is not None and _depth(value) > MAX_MODIFICATION_DEPTH:
        return f"nested deeper than {MAX_MODIFICATION_DEPTH} levels"
    return None


def _depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list | tuple):
            deepest = max(deepest, level)
            if level <= MAX_MODIFICATION_DEPTH:  # deeper than the limit is all we need to know
                stack.extend((child, level + 1) for child in item)
    return deepest


class GateView(BaseModel):
    """A gate as the ``gates`` query shows it."""

    gate: str
    title: str
    state: GateState
    reviewers: list[str]
    roles: list[str] = Field(default_factory=list)
    approvals_needed: int = 1
    approved_by: list[str] = Field(default_factory=list)
    """Who has approved so far (an n-of-m gate stays open until enough distinct ones have)."""
    deferred_by: list[str] = Field(default_factory=list)
    """Who said "not now" (the gate stays open for the others)."""
    requesters: list[str] = Field(default_factory=list)
    """Who asked for the work: they may not decide it (separation of duties)."""
    modify_schema: dict[str, Any] | None = None
    """JSON Schema of what a ``modify`` decision's modifications may hold; None: no modify."""
    signed_reviews: bool = True
    """Whether the gate takes only signed decisions (False only for a gate opened before
    Keel required signatures, which the ledger says of each decision it took)."""
    opened_at: datetime | None = None
    deadline: datetime | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = None
    """Why the gate opened, when something other than a plan step opened it (an agent node
    that escalated: its rejected answers, or the system failure and its fix)."""
    decided_by: str | None = None
    on_behalf_of: str | None = None
    decided_at: datetime | None = None
    decision: ReviewDecision | None = None
    comment: str | None = None
    modifications: dict[str, Any] | None = None


class ReviewReceipt(BaseModel):
    """What the ``review`` update answers.

    A repeat of a decision already taken (the same nonce: a double click, a retried request)
    answers the first one's receipt with ``repeated`` set and changes nothing.
    """

    gate: str
    state: GateState
    ledger_seq: int
    approvals: int = 0
    approvals_needed: int = 1
    repeated: bool = False
