"""What every model provider implements: one call, structured JSON out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ModelRequest:
    """One model call, already rendered from a contract.

    Attributes:
        system: system prompt.
        prompt: user prompt (rendered template + feedback).
        output_schema: JSON schema the answer must follow.
        schema_name: a short identifier for the schema (``[a-zA-Z0-9_-]``).
        timeout_seconds: the provider call must give up after this long.
        contract: ``name@version`` of the contract (the offline model routes on it).
        input: the structured node input (the offline model reads it instead of the prompt).
        feedback: failure reasons or reviewer comments fed back into this attempt.
        workflow_id: workflow the call belongs to (used to target injected faults).
        agent_attempt: 1-based attempt of the agent node.
        activity_attempt: 1-based Temporal activity attempt.
    """

    system: str
    prompt: str
    output_schema: Mapping[str, Any]
    schema_name: str
    timeout_seconds: float
    contract: str
    input: Mapping[str, Any] = field(default_factory=dict)
    feedback: Sequence[str] = ()
    workflow_id: str = ""
    agent_attempt: int = 1
    activity_attempt: int = 1


@dataclass(frozen=True)
class ModelReply:
    """The provider's answer, unparsed: parsing and validation happen downstream."""

    text: str
    provider: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None


class ModelProvider(Protocol):
    """A model provider. Raises ``keel.errors.ProviderError`` subclasses on failure."""

    name: str
    model: str

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Run one call and return the raw answer text."""
        ...
