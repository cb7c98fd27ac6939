"""Input and output of the agent-node activity (one model call)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

AGENT_NODE_ACTIVITY = "keel.agent_node"
"""Activity name of one agent-node attempt; stable, because histories outlive code."""


class AgentNodeRequest(BaseModel):
    """One attempt of an agent node, as the workflow asks for it."""

    contract: str
    """``name@version``."""
    contract_fingerprint: str
    """The fingerprint the workflow expects; a worker with other contract code refuses."""
    node: str
    input: dict[str, Any]
    feedback: list[str] = Field(default_factory=list)
    attempt: int = Field(ge=1)
    model: str | None = None
    """A fallback model spec from the contract; ``None`` means the worker's own model."""


class AgentDecision(BaseModel):
    """A model's answer with its provenance. ``output`` is parsed JSON, not yet validated."""

    contract: str
    contract_fingerprint: str
    provider: str
    model: str
    prompt_sha256: str
    prompt: str | None = None
    """Only when KEEL_RECORD_PROMPTS is on: prompts can hold data that must not be in history."""
    raw_response: str
    output: dict[str, Any] | None = None
    parse_error: str | None = None
    confidence: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float
    attempt: int
    activity_attempt: int
    provider_calls: int = 1
    """Calls to the provider in this activity attempt (quick in-activity retries of blips)."""
