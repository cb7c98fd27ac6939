"""Guardrail decisions, configuration and outcome (models only)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

GuardrailAction = Literal["allow", "deny", "modify"]

GUARDRAIL_DENIED_ERROR = "GuardrailDenied"
"""Error type for a denied model call (e.g. a non-retryable ``ApplicationError``)."""

EMAIL_MARKER = "[email redacted]"
PHONE_MARKER = "[phone redacted]"
CARD_MARKER = "[card redacted]"


class Change(BaseModel):
    """One modification a policy made, recorded without the raw value it replaced."""

    model_config = ConfigDict(frozen=True)

    path: str
    """Where in the payload: ``customer.message``, ``items[2].note``, ``["odd key"]``."""
    kind: str
    """What was replaced: ``email``, ``phone`` or ``card`` for the PII scrubber."""
    before_sha256: str
    """sha256 of the original value (UTF-8): equal values give equal hashes, so occurrences
    can be correlated without storing the value. Short values such as phone numbers can be
    recovered from their hash by enumeration: treat the ledger as confidential anyway."""
    after: str
    """What the value became, e.g. ``[email redacted]``."""


class GuardrailDecision(BaseModel):
    """What one policy decided about one model call."""

    model_config = ConfigDict(frozen=True)

    policy: str
    action: GuardrailAction
    reason: str
    changes: list[Change] = Field(default_factory=list)
    modified: dict[str, Any] | None = Field(default=None, exclude=True, repr=False)
    """For ``modify``: the payload after this policy's changes. Not serialized: the ledger
    records the changes, and the payload itself goes to the model call."""


class GuardrailConfig(BaseModel):
    """The guardrails an agent contract declares."""

    model_config = ConfigDict(frozen=True)

    token_budget: int | None = Field(20_000, ge=1)
    """Estimated tokens one workflow may spend on model calls; ``None``: no budget."""
    scrub_pii: bool = True
    """Redact emails, phone numbers and card numbers before the model sees the input."""
    untrusted_fields: tuple[str, ...] = ()
    """Payload fields holding text from outside (customer text), checked for prompt
    injection. A dotted path reaches into objects (``email.body``); every string under the
    field (and every key) is checked. Missing fields are skipped."""


class GuardrailState(BaseModel):
    """What the workflow knows when it asks for a model call."""

    model_config = ConfigDict(frozen=True)

    tokens_used: int = Field(0, ge=0)
    """Tokens the workflow's earlier model calls used (input plus output)."""
    prompt_tokens_estimate: int = Field(0, ge=0)
    """Estimated tokens the prompt adds around the payload (system prompt, template,
    output schema, feedback): see ``prompt_overhead_tokens``. ``TokenBudget`` adds the
    payload's own estimate to it."""


class GuardrailOutcome(BaseModel):
    """The result of the chain: the payload to send, every decision, and any denial."""

    payload: dict[str, Any]
    """The payload after every modification. The caller's payload is never mutated; when no
    policy modified it, this is that same object."""
    decisions: list[GuardrailDecision]
    """In chain order, up to and including a denial."""
    denied: GuardrailDecision | None = None

    @property
    def allowed(self) -> bool:
        return self.denied is None

    @property
    def message(self) -> str:
        """A sentence for a person: why the call was refused, or that it may proceed."""
        if self.denied is None:
            return "the guardrails allowed the model call"
        return f"guardrail '{self.denied.policy}' denied the model call: {self.denied.reason}"


GuardrailPolicy = Callable[[dict[str, Any], GuardrailState], GuardrailDecision]
"""A policy: the payload (after earlier policies' modifications) and the state in, a
decision out. Policies never mutate the payload; ``modify`` carries the new one."""


def _canonical_json(value: Any) -> str:
    # Same form as keel.contracts.agent.canonical_json; not imported, so that the agent
    # contract can import this package.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
