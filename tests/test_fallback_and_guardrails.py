"""Provider fallback after repeated failures, and guardrail denials, through an agent node."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.testing import WorkflowEnvironment

from keel.activities.providers.base import ModelReply, ModelRequest
from keel.contracts import REGISTRY, AgentContract, UseDefault
from keel.contracts.guardrails import GuardrailConfig
from keel.contracts.ledger import (
    AgentDecided,
    LedgerEvent,
    PolicyApplied,
    ProviderFallback,
    parse_ledger,
    verify_chain,
)
from keel.errors import ProviderRetryableError
from keel.scenarios.contract_review.contracts import (
    RISK_CLASSIFIER,
    RiskAssessment,
    RiskClassifierInput,
)
from keel.testing import events_of
from tests.conftest import keel_worker
from tests.probe_workflows import AgentNodeProbe
from tests.samples import load_sample

DEFAULT = {
    "risk_level": "high",
    "clause_refs": [],
    "rationale": "no model answer: assume high",
    "confidence": 1.0,
}


def contract(version: int, **changes: Any) -> AgentContract[Any, Any]:
    return REGISTRY.register(
        AgentContract(
            name="risk-classifier",
            version=version,
            description="test contract",
            input_model=RiskClassifierInput,
            output_model=RiskAssessment,
            system_prompt=RISK_CLASSIFIER.system_prompt,
            prompt_template=RISK_CLASSIFIER.prompt_template,
            on_exhausted=UseDefault(output=DEFAULT, reason="no usable answer"),
            **changes,
        )
    )


WITH_FALLBACK = contract(97, provider_attempts=2, fallback_models=("offline",))
TINY_BUDGET = contract(96, guardrails=GuardrailConfig(token_budget=50))


class Overloaded:
    """A provider that is always overloaded (HTTP 529)."""

    name, model = "overloaded", "busy-1"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls += 1
        raise ProviderRetryableError("overloaded", provider=self.name, status=529)


async def probe(
    env: WorkflowEnvironment, key: str, provider: Any
) -> tuple[dict[str, Any], list[LedgerEvent]]:
    raw = load_sample("contract-medium-risk")
    node_input = {k: raw[k] for k in RiskClassifierInput.model_fields}
    async with keel_worker(env.client, provider=provider, extra_workflows=[AgentNodeProbe]) as tq:
        result = await env.client.execute_workflow(
            AgentNodeProbe.run,
            {"contract": key, "input": node_input},
            id=f"probe-{uuid.uuid4()}",
            task_queue=tq,
        )
    return result, parse_ledger(result["ledger"])


async def test_repeated_provider_failures_fall_back_to_the_next_model(
    ts_env: WorkflowEnvironment,
) -> None:
    primary = Overloaded()
    result, ledger = await probe(ts_env, WITH_FALLBACK.key, primary)
    # Two Temporal attempts (provider_attempts), each with two quick retries in place.
    assert primary.calls == 6
    fallback = events_of(ledger, ProviderFallback)
    assert [(f.from_model, f.to_model, f.attempt) for f in fallback] == [
        ("the worker's model", "offline", 1)
    ]
    decided = events_of(ledger, AgentDecided)
    assert [(d.provider, d.attempt) for d in decided] == [("offline", 1)]
    assert (result["source"], result["attempts"]) == ("agent", 1)
    assert verify_chain(ledger).ok


async def test_token_budget_denies_the_call_before_the_model(ts_env: WorkflowEnvironment) -> None:
    primary = Overloaded()
    result, ledger = await probe(ts_env, TINY_BUDGET.key, primary)
    assert primary.calls == 0
    denied = [e for e in events_of(ledger, PolicyApplied) if e.action == "deny"]
    assert [d.policy for d in denied] == ["token-budget"]
    assert result["source"] == "denied" and "token-budget" in result["note"]
    assert result["output"] is None
