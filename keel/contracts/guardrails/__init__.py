"""Guardrails: a chain of policies that judges an agent node's input before every model call.

Each policy looks at the node's input payload (a JSON object) and returns a
``GuardrailDecision``: ``allow``, ``deny`` (with the reason), or ``modify`` (with the changes
it made). ``apply_guardrails`` runs the chain a contract declares (``GuardrailConfig``) in a
fixed order and stops at the first denial:

1. ``PromptInjectionCheck`` on the raw text of the untrusted fields (normalised first:
   look-alikes, invisible characters, encodings; patterns in eleven languages);
2. ``PiiScrubber``: emails, phone numbers, cards, IBANs, SSNs and CVVs become numbered
   markers;
3. ``TokenBudget`` on the scrubbed payload: the workflow's tokens so far plus this call's
   estimate must stay within the budget.

Everything here is pure and deterministic (no randomness, no clock, no I/O; ``re``,
``unicodedata``, ``phonenumbers``, ``ahocorasick``, pydantic and tables of its own), so it
runs in workflow code: checking a call costs no activity, and replay reaches the same
decisions. A contract may also name a classifier (``GuardrailConfig.classifier``): that one
is I/O, so the agent node asks it through an activity (``CLASSIFIER_ACTIVITY``), after the
patterns allow.

The checks are heuristics. The PII patterns find the common shapes (see ``PiiScrubber``),
not every way to write a value; the injection patterns catch the well-known attacks and
their disguises, not a determined adversary who writes a new paraphrase. They reduce risk;
they are not a proof of safety.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keel.contracts.guardrails._budget import TokenBudget, estimate_tokens, prompt_overhead_tokens
from keel.contracts.guardrails._classifier import (
    CLASSIFIER_ACTIVITY,
    CLASSIFIER_FAILED_ERROR,
    CLASSIFIER_NOT_CONFIGURED_ERROR,
    CLASSIFIER_POLICY,
    MAX_CLASSIFIER_TEXT,
    ClassifierRequest,
    ClassifierVerdict,
    classifier_decision,
)
from keel.contracts.guardrails._injection import (
    PromptInjectionCheck,
    injection_hits,
    untrusted_strings,
)
from keel.contracts.guardrails._models import (
    CARD_MARKER,
    CVV_MARKER,
    DEFAULT_PHONE_REGIONS,
    EMAIL_MARKER,
    GUARDRAIL_DENIED_ERROR,
    IBAN_MARKER,
    PHONE_MARKER,
    PII_KINDS,
    SSN_MARKER,
    Change,
    GuardrailAction,
    GuardrailConfig,
    GuardrailDecision,
    GuardrailOutcome,
    GuardrailPolicy,
    GuardrailState,
    pii_marker,
)
from keel.contracts.guardrails._pii import (
    PiiScrubber,
    iban_valid,
    luhn_valid,
    redact_pii,
    scrub_text,
)

# ---------------------------------------------------------------------------------------
# The chain


def run_policies(
    payload: dict[str, Any], policies: Sequence[GuardrailPolicy], state: GuardrailState
) -> GuardrailOutcome:
    """Run ``policies`` in order, each on the payload as the ones before left it; stop at
    the first denial."""
    decisions: list[GuardrailDecision] = []
    current = payload
    for policy in policies:
        decision = policy(current, state)
        decisions.append(decision)
        if decision.action == "deny":
            return GuardrailOutcome(payload=current, decisions=decisions, denied=decision)
        if decision.action == "modify" and decision.modified is not None:
            current = decision.modified
    return GuardrailOutcome(payload=current, decisions=decisions)


def guardrail_chain(config: GuardrailConfig, *, legacy: bool = False) -> list[GuardrailPolicy]:
    """The policies ``config`` turns on, in their fixed order (``legacy``: the injection
    check as before ``keel-guardrail-needles-2``, for runs recorded before it)."""
    chain: list[GuardrailPolicy] = []
    if config.untrusted_fields:
        chain.append(PromptInjectionCheck(config.untrusted_fields, legacy=legacy))
    if config.scrub_pii:
        chain.append(PiiScrubber(config.phone_regions))
    if config.token_budget is not None:
        chain.append(TokenBudget(config.token_budget))
    return chain


def apply_guardrails(
    payload: dict[str, Any],
    config: GuardrailConfig,
    state: GuardrailState,
    *,
    legacy: bool = False,
) -> GuardrailOutcome:
    """Judge one model call: prompt-injection check on the raw untrusted text, then PII
    scrubbing, then the token budget on the scrubbed payload; stop at the first denial.

    Policies that ``config`` turns off are not run and leave no decision. ``payload`` is
    not mutated; ``outcome.payload`` is what to send to the model. ``legacy``: judge as
    before ``keel-guardrail-needles-2`` (a run recorded before it must replay its verdicts).
    """
    return run_policies(payload, guardrail_chain(config, legacy=legacy), state)


__all__ = [
    "CARD_MARKER",
    "CLASSIFIER_ACTIVITY",
    "CLASSIFIER_FAILED_ERROR",
    "CLASSIFIER_NOT_CONFIGURED_ERROR",
    "CLASSIFIER_POLICY",
    "CVV_MARKER",
    "DEFAULT_PHONE_REGIONS",
    "EMAIL_MARKER",
    "GUARDRAIL_DENIED_ERROR",
    "IBAN_MARKER",
    "MAX_CLASSIFIER_TEXT",
    "PHONE_MARKER",
    "PII_KINDS",
    "SSN_MARKER",
    "Change",
    "ClassifierRequest",
    "ClassifierVerdict",
    "GuardrailAction",
    "GuardrailConfig",
    "GuardrailDecision",
    "GuardrailOutcome",
    "GuardrailPolicy",
    "GuardrailState",
    "PiiScrubber",
    "PromptInjectionCheck",
    "TokenBudget",
    "apply_guardrails",
    "classifier_decision",
    "estimate_tokens",
    "guardrail_chain",
    "iban_valid",
    "injection_hits",
    "luhn_valid",
    "pii_marker",
    "prompt_overhead_tokens",
    "redact_pii",
    "run_policies",
    "scrub_text",
    "untrusted_strings",
]
