"""Approval gates: their specification, states and the ``review`` payload."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
        reviewers: who may decide; empty means anyone.
        sla: how long the first reviewers have.
        escalation_reviewers: who is added when the SLA passes; empty means no escalation.
        escalation_sla: how long the gate stays open after escalating.
        on_expiry: the default path when every SLA has passed.
        modifiable_fields: keys a ``modify`` decision may change; empty forbids ``modify``
            unless ``output_contract`` is set.
        output_contract: ``name@version`` whose output model a ``modify`` decision must
            satisfy (gates that take over from an exhausted agent node).
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    title: str
    reviewers: tuple[str, ...] = ()
    sla: timedelta = timedelta(hours=4)
    escalation_reviewers: tuple[str, ...] = ()
    escalation_sla: timedelta = timedelta(hours=24)
    on_expiry: Literal["approve", "reject"] = "reject"
    modifiable_fields: tuple[str, ...] = ()
    output_contract: str | None = None


class ReviewInput(BaseModel):
    """The JSON payload of the ``review`` update and signal."""

    model_config = ConfigDict(extra="forbid")

    gate: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    decision: ReviewDecision
    reviewer: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)
    modifications: dict[str, Any] | None = None
    device: str | None = Field(None, max_length=MAX_NAME_CHARS)

    @field_validator("modifications")
    @classmethod
    def _shallow(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and _depth(value) > MAX_MODIFICATION_DEPTH:
            raise ValueError(f"nested deeper than {MAX_MODIFICATION_DEPTH} levels")
        return value


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
    opened_at: datetime | None = None
    deadline: datetime | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = None
    """Why the gate opened, when something other than a plan step opened it (an agent node
    that escalated: its rejected answers, or the system failure and its fix)."""
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision: ReviewDecision | None = None
    comment: str | None = None
    modifications: dict[str, Any] | None = None


class ReviewReceipt(BaseModel):
    """What the ``review`` update answers."""

    gate: str
    state: GateState
    ledger_seq: int
