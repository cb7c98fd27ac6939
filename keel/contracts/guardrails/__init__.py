"""Guardrails: a chain of policies that judges an agent node's input before every model call.

Each policy looks at the node's input payload (a JSON object) and returns a
``GuardrailDecision``: ``allow``, ``deny`` (with the reason), or ``modify`` (with the changes
it made). ``apply_guardrails`` runs the chain a contract declares (``GuardrailConfig``) in a
fixed order and stops at the first denial:

1. ``PromptInjectionCheck`` on the raw text of the untrusted fields (customer text);
2. ``PiiScrubber``: emails, phone numbers and payment card numbers become markers;
3. ``TokenBudget`` on the scrubbed payload: the workflow's tokens so far plus this call's
   estimate must stay within the budget.

Everything here is pure and deterministic (no randomness, no clock, no I/O; only ``re``,
``hashlib``, ``json``, ``unicodedata`` and pydantic), so it runs in workflow code: checking a
call costs no activity, and replay reaches the same decisions.

The checks are heuristics. The PII patterns find the common shapes (see ``PiiScrubber``),
not every way to write a value; the injection patterns catch the well-known attacks, not a
determined adversary. They reduce risk; they are not a proof of safety.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keel.contracts.guardrails._budget import TokenBudget, estimate_tokens, prompt_overhead_tokens
from keel.contracts.guardrails._injection import PromptInjectionCheck, injection_hits
from keel.contracts.guardrails._models import (
    CARD_MARKER,
    EMAIL_MARKER,
    GUARDRAIL_DENIED_ERROR,
    PHONE_MARKER,
    Change,
    GuardrailAction,
    GuardrailConfig,
    GuardrailDecision,
    GuardrailOutcome,
    GuardrailPolicy,
    GuardrailState,
)
from keel.contracts.guardrails._pii import PiiScrubber, luhn_valid, scrub_text

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


def guardrail_chain(config: GuardrailConfig) -> list[GuardrailPolicy]:
    """The policies ``config`` turns on, in their fixed order."""
    chain: list[GuardrailPolicy] = []
    if config.untrusted_fields:
        chain.append(PromptInjectionCheck(config.untrusted_fields))
    if config.scrub_pii:
        chain.append(PiiScrubber())
    if config.token_budget is not None:
        chain.append(TokenBudget(config.token_budget))
    return chain


def apply_guardrails(
    payload: dict[str, Any], config: GuardrailConfig, state: GuardrailState
) -> GuardrailOutcome:
    """Judge one model call: prompt-injection check on the raw untrusted text, then PII
    scrubbing, then the token budget on the scrubbed payload; stop at the first denial.

    Policies that ``config`` turns off are not run and leave no decision. ``payload`` is
    not mutated; ``outcome.payload`` is what to send to the model.
    """
    return run_policies(payload, guardrail_chain(config), state)


__all__ = [
    "CARD_MARKER",
    "EMAIL_MARKER",
    "GUARDRAIL_DENIED_ERROR",
    "PHONE_MARKER",
    "Change",
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
    "estimate_tokens",
    "guardrail_chain",
    "injection_hits",
    "luhn_valid",
    "prompt_overhead_tokens",
    "run_policies",
    "scrub_text",
]
