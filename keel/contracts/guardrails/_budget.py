"""The token-budget policy and token estimates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keel.contracts.guardrails._models import GuardrailDecision, GuardrailState, _canonical_json

# ---------------------------------------------------------------------------------------
# Token budget


def estimate_tokens(text: str) -> int:
    """An estimate of the tokens ``text`` costs: characters / 4, rounded up.

    An estimate, not a tokenizer's count: about right for English prose, low for code,
    numbers and non-Latin scripts. Deterministic, which is what workflow code needs.
    """
    return (len(text) + 3) // 4


def prompt_overhead_tokens(
    system_prompt: str,
    prompt_template: str,
    output_schema: Mapping[str, Any] | None = None,
    feedback: Sequence[str] = (),
) -> int:
    """Estimated tokens of the prompt around the payload, for ``GuardrailState``.

    Pass a contract's ``system_prompt``, ``prompt_template`` and ``output_schema`` and the
    attempt's feedback. The template's ``$field`` placeholders are counted as written; the
    payload is counted by ``TokenBudget``.
    """
    total = estimate_tokens(system_prompt) + estimate_tokens(prompt_template)
    if output_schema is not None:
        total += estimate_tokens(_canonical_json(output_schema))
    return total + sum(estimate_tokens(item) for item in feedback)


class TokenBudget:
    """Deny a call that would take the workflow past its token budget.

    The call's cost is ``state.prompt_tokens_estimate`` plus the estimate of the payload's
    canonical JSON; denied when ``tokens_used`` plus that exceeds the budget.
    """

    name = "token-budget"

    def __init__(self, budget: int) -> None:
        if budget < 1:
            raise ValueError("a token budget must be at least 1")
        self.budget = budget

    def __call__(self, payload: dict[str, Any], state: GuardrailState) -> GuardrailDecision:
        estimate = state.prompt_tokens_estimate + estimate_tokens(_canonical_json(payload))
        total = state.tokens_used + estimate
        numbers = (
            f"{state.tokens_used:,} tokens used so far + about {estimate:,} for this call "
            f"= {total:,}"
        )
        if total > self.budget:
            return GuardrailDecision(
                policy=self.name,
                action="deny",
                reason=(
                    f"token budget exceeded: {numbers}, over the workflow's budget of "
                    f"{self.budget:,} (estimate: characters / 4). Shorten the input, or raise "
                    "the contract's guardrails token_budget if this workflow needs more."
                ),
            )
        return GuardrailDecision(
            policy=self.name,
            action="allow",
            reason=f"within the token budget: {numbers} of {self.budget:,}",
        )
