"""Guardrail decisions, configuration and outcome (models only)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

GuardrailAction = Literal["allow", "deny", "modify"]

GUARDRAIL_DENIED_ERROR = "GuardrailDenied"
"""Error type for a denied model call (e.g. a non-retryable ``ApplicationError``)."""

EMAIL_MARKER = "[email redacted]"
PHONE_MARKER = "[phone redacted]"
CARD_MARKER = "[card redacted]"
IBAN_MARKER = "[iban redacted]"
SSN_MARKER = "[ssn redacted]"
CVV_MARKER = "[cvv redacted]"
"""The stem of each kind's marker: the value itself becomes ``pii_marker(kind, n)``, e.g.
``[email redacted #1]``."""

PII_KINDS = ("email", "phone", "card", "iban", "ssn", "cvv")
"""What the PII scrubber redacts."""

DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL")
"""Where a phone number written without its country code is taken to be from, tried in
order (``GuardrailConfig.phone_regions``)."""


def pii_marker(kind: str, number: int) -> str:
    """The marker for the ``number``-th distinct value of ``kind`` in one payload:
    ``[phone redacted #2]``. It carries nothing of the value."""
    return f"[{kind} redacted #{number}]"


class Change(BaseModel):
    """One modification a policy made, recorded without the raw value it replaced."""

    model_config = ConfigDict(frozen=True)

    path: str
    """Where in the payload: ``customer.message``, ``items[2].note``, ``["odd key"]``."""
    kind: str
    """What was replaced: one of ``PII_KINDS`` for the PII scrubber."""
    after: str
    """What the value became, e.g. ``[email redacted #1]``: a numbered marker (equal values
    in one payload share a number), with no hash or other trace of the value, which is
    recorded nowhere."""


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
    """Redact emails, phone numbers, card numbers, IBANs, SSNs and CVVs before the model
    sees the input."""
    untrusted_fields: tuple[str, ...] = ()
    """Payload fields holding text from outside (customer text), checked for prompt
    injection. A dotted path reaches into objects (``email.body``); every string under the
    field (and every key) is checked, and all of them together. Missing fields are
    skipped."""
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
    """Regions (ISO 3166 codes) a phone number without a country code may be from, tried in
    order; the first is the default region."""
    classifier: str | None = None
    """A prompt-injection classifier to ask, as an activity, after the patterns allow the
    untrusted fields (needs ``untrusted_fields``): ``openai-compatible`` (the worker's
    ``KEEL_GUARDRAIL_CLASSIFIER_*`` settings) or a name a worker registers. ``None``: none."""
    classifier_threshold: float = Field(0.5, ge=0.0, le=1.0)
    """Deny when the classifier's injection score is at or above this."""
    on_classifier_failure: Literal["fail", "deny", "allow"] = "fail"
    """When the classifier cannot answer (unreachable, an answer that does not parse):
    ``fail`` (the default, fail closed): a system failure, handled like a failed model call
    (the run fails saying what to fix, or escalates under ``on_system_failure="escalate"``);
    ``deny``: the call is denied like an injection; ``allow`` (fail open): the patterns'
    verdict stands, and the failure is recorded as the classifier's decision."""

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Fields added after contracts were published are dumped only when set, so those
        # contracts keep their fingerprint (runs in flight across an upgrade do not fail
        # with a mismatch).
        data: dict[str, Any] = handler(self)
        for name, default in _LATER_DEFAULTS.items():
            if name in data and getattr(self, name) == default:
                del data[name]
        return data

    @model_validator(mode="after")
    def _classifier_needs_fields(self) -> GuardrailConfig:
        if self.classifier is not None and not self.untrusted_fields:
            raise ValueError("a prompt-injection classifier needs untrusted_fields to read")
        return self


_LATER_DEFAULTS: dict[str, Any] = {
    "phone_regions": DEFAULT_PHONE_REGIONS,
    "classifier": None,
    "classifier_threshold": 0.5,
    "on_classifier_failure": "fail",
}


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
