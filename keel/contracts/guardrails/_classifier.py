"""The prompt-injection classifier policy: what the agent node asks and what it gets back.

A classifier is I/O (a model behind an endpoint), so it runs as an activity
(``CLASSIFIER_ACTIVITY``, implemented in ``keel.activities.guardrail_classifier``); these
models are what crosses the activity boundary, and ``classifier_decision`` turns a verdict
into the policy's ``GuardrailDecision`` in workflow code.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from keel.contracts.guardrails._models import GuardrailDecision

CLASSIFIER_ACTIVITY = "keel.classify_prompt_injection"
"""The classifier activity's name (registered on every worker's model queue)."""

CLASSIFIER_FAILED_ERROR = "GuardrailClassifierFailed"
"""``ApplicationError.type`` of a classifier that could not give a verdict."""

CLASSIFIER_NOT_CONFIGURED_ERROR = "GuardrailClassifierNotConfigured"
"""``ApplicationError.type`` when the worker has no classifier of the contract's name."""

CLASSIFIER_POLICY = "prompt-injection-classifier"
"""The policy name its decisions are recorded under (``PolicyApplied.policy``)."""

MAX_CLASSIFIER_TEXT = 32_000
"""Characters of untrusted text sent to the classifier, at most (the rest is cut)."""


class ClassifierRequest(BaseModel):
    """One question to a classifier: is there an injection in these untrusted texts?"""

    model_config = ConfigDict(frozen=True)

    classifier: str
    """The contract's ``GuardrailConfig.classifier``."""
    contract: str
    node: str
    texts: list[str]
    """The untrusted strings, PII already scrubbed (the classifier never sees raw PII)."""


class ClassifierVerdict(BaseModel):
    """A classifier's answer, parsed strictly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    injection: bool
    score: float = Field(ge=0.0, le=1.0)
    """The classifier's probability that the texts hold an injection."""
    reason: str = Field("", max_length=500)
    classifier: str = Field("", max_length=200)
    """Which classifier answered (name and model)."""


def classifier_decision(verdict: ClassifierVerdict, threshold: float) -> GuardrailDecision:
    """Deny when the verdict says injection or its score reaches ``threshold``."""
    who = verdict.classifier or "the classifier"
    said = f"{who} scored {verdict.score:.2f} (threshold {threshold:.2f})"
    why = f": {verdict.reason}" if verdict.reason else ""
    if verdict.injection or verdict.score >= threshold:
        return GuardrailDecision(
            policy=CLASSIFIER_POLICY,
            action="deny",
            reason=(
                f"possible prompt injection in untrusted input: {said}{why}. The text was "
                "not sent to the model; have a person review it."
            ),
        )
    return GuardrailDecision(
        policy=CLASSIFIER_POLICY, action="allow", reason=f"no prompt injection: {said}{why}"
    )
