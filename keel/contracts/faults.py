"""``OfflineFault``: a fault the offline model injects (``KEEL_OFFLINE_FAULTS``); a plain
model here so settings can parse it without importing the offline model."""

from __future__ import annotations

from pydantic import BaseModel, Field


class OfflineFault(BaseModel):
    """A fault the offline model injects. It applies to a call when every filter matches.

    Attributes:
        kind: an engine kind (``ENGINE_FAULT_KINDS``) or one an app registered.
        agent_attempts: agent-node attempts (1-based) that get the fault.
        activity_attempts: Temporal activity attempts that get it; ``None`` means every one.
        workflow_id_prefix: only workflows whose id starts with this.
        contract: ``name@version`` of the contract, or ``None`` for every contract.
        rounds: planning rounds (the ``round`` field of the node input); ``None`` means every
            call, with or without a round.
        retry_after_seconds: for ``rate_limit``, the Retry-After the fake provider announces.
    """

    kind: str
    agent_attempts: list[int] = Field(default_factory=lambda: [1])
    activity_attempts: list[int] | None = None
    workflow_id_prefix: str | None = None
    contract: str | None = None
    rounds: list[int] | None = None
    retry_after_seconds: float | None = None
