"""An agent node whose retry budget runs out takes its contract's deterministic default."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from keel.activities.providers.base import ModelReply, ModelRequest
from keel.contracts import REGISTRY, AgentContract, RetryStrategy, UseDefault
from keel.contracts.ledger import (
    AgentDecided,
    AgentRetried,
    DefaultApplied,
    LedgerEvent,
    ValidationFailed,
    parse_ledger,
    verify_chain,
)
from keel.errors import ProviderPermanentError
from keel.offline import OfflineFault
from keel.scenarios.contract_review.contracts import (
    RISK_CLASSIFIER,
    RiskAssessment,
    RiskClassifierInput,
)
from tests.conftest import keel_worker
from tests.helpers import types_of
from tests.probe_workflows import AgentNodeProbe
from tests.samples import load_sample

DEFAULT_OUTPUT = {
    "risk_level": "high",
    "clause_refs": [],
    "rationale": "No usable model assessment: treat the contract as high risk.",
    "confidence": 1.0,
}
DEFAULT_REASON = "classifier gave no usable answer; assume high risk"

# Version 99 of the risk classifier: the offline model's rules answer it (they key on the name).
CONTRACT = REGISTRY.register(
    AgentContract(
        name="risk-classifier",
        version=99,
        description="Test-only risk classifier that falls back to a default.",
        input_model=RiskClassifierInput,
        output_model=RiskAssessment,
        system_prompt=RISK_CLASSIFIER.system_prompt,
        prompt_template=RISK_CLASSIFIER.prompt_template,
        max_attempts=2,
        retry_strategy=RetryStrategy.PLAIN,
        on_exhausted=UseDefault(output=DEFAULT_OUTPUT, reason=DEFAULT_REASON),
    )
)


@dataclass
class Probe:
    source: str
    attempts: int
    output: dict[str, Any] | None
    ledger: list[LedgerEvent]
    ledger_head: str

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.ledger if isinstance(e, kind)]


class RefusingProvider:
    """A provider whose every call fails permanently (e.g. a revoked key)."""

    name = "stand-in"
    model = "stand-in-1"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls += 1
        raise ProviderPermanentError("invalid api key", provider=self.name, status=401)


def probe_input(sample: str = "medium") -> dict[str, Any]:
    raw = load_sample(f"contract-{sample}-risk")
    return {k: raw[k] for k in RiskClassifierInput.model_fields}


async def run_probe(ts_env: WorkflowEnvironment, **worker_args: Any) -> Probe:
    async with keel_worker(ts_env.client, extra_workflows=[AgentNodeProbe], **worker_args) as tq:
        raw = await ts_env.client.execute_workflow(
            AgentNodeProbe.run,
            {"contract": CONTRACT.key, "input": probe_input()},
            id=f"probe-{uuid.uuid4()}",
            task_queue=tq,
        )
    ledger = parse_ledger(raw["ledger"])
    return Probe(raw["source"], raw["attempts"], raw["output"], ledger, raw["ledger_head"])


def test_the_test_contract_is_valid_and_distinct() -> None:
    assert CONTRACT.key == "risk-classifier@99"
    assert REGISTRY.get("risk-classifier@99") is CONTRACT
    assert CONTRACT.fingerprint != RISK_CLASSIFIER.fingerprint


async def test_exhaustion_applies_the_default(ts_env: WorkflowEnvironment) -> None:
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1, 2])]
    probe = await run_probe(ts_env, faults=faults)

    assert probe.source == "default"
    assert probe.output == DEFAULT_OUTPUT
    assert types_of(probe.ledger) == [
        "WorkflowStarted",
        "CheckpointTaken",
        "PolicyApplied",  # pii-scrubber: allow (every decision is recorded on attempt 1)
        "PolicyApplied",  # token-budget: allow
        "AgentDecided",
        "ValidationFailed",
        "AgentRetried",
        "AgentDecided",
        "ValidationFailed",
        "DefaultApplied",
    ]
    [applied] = probe.of(DefaultApplied)
    assert (applied.node, applied.contract) == ("probe", "risk-classifier@99")
    assert applied.output == DEFAULT_OUTPUT
    assert applied.reason == DEFAULT_REASON

    failed = probe.of(ValidationFailed)
    assert [(f.kind, f.attempt, f.contract) for f in failed] == [
        ("parse", 1, "risk-classifier@99"),
        ("parse", 2, "risk-classifier@99"),
    ]
    assert all("not valid JSON" in f.reasons[0] for f in failed)
    [retried] = probe.of(AgentRetried)
    assert retried.next_attempt == 2
    assert verify_chain(probe.ledger).ok
    assert verify_chain(probe.ledger).head_hash == probe.ledger_head


async def test_plain_retry_sends_the_same_prompt_without_feedback(
    ts_env: WorkflowEnvironment,
) -> None:
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1, 2])]
    probe = await run_probe(ts_env, faults=faults)

    first, second = probe.of(AgentDecided)
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.contract == second.contract == "risk-classifier@99"
    assert first.contract_fingerprint == CONTRACT.fingerprint
    assert first.output is None and first.parse_error
    assert second.feedback == []
    assert second.prompt_sha256 == first.prompt_sha256  # the same prompt, word for word
    [retried] = probe.of(AgentRetried)
    assert retried.feedback == []


async def test_low_confidence_twice_also_falls_back(ts_env: WorkflowEnvironment) -> None:
    faults = [OfflineFault(kind="low_confidence", agent_attempts=[1, 2])]
    probe = await run_probe(ts_env, faults=faults)
    assert probe.source == "default"
    assert [(f.kind, f.attempt) for f in probe.of(ValidationFailed)] == [
        ("confidence", 1),
        ("confidence", 2),
    ]
    # The model's own (parsed, schema-valid) answers were not used.
    assert [d.output["risk_level"] for d in probe.of(AgentDecided)] == ["medium", "medium"]
    assert probe.output == DEFAULT_OUTPUT


async def test_a_permanent_provider_failure_fails_the_run_instead_of_the_default(
    ts_env: WorkflowEnvironment,
) -> None:
    provider = RefusingProvider()
    with pytest.raises(WorkflowFailureError) as info:
        await run_probe(ts_env, provider=provider)
    assert provider.calls == 1  # non-retryable: neither Temporal nor the node tries again
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "AgentNodeFailed"
    assert "refused the API key (401): invalid api key" in cause.message
    # Not the agent's answer: the default is a business decision, and this is not one.
    tail = [event["type"] for event in cause.details[0]["ledger_tail"]]
    assert tail[-2:] == ["AgentCallFailed", "NodeFailed"] and "DefaultApplied" not in tail


@pytest.mark.parametrize("faulty_attempts", [[], [1]], ids=["first-try", "second-try"])
async def test_a_good_answer_within_budget_is_used(
    ts_env: WorkflowEnvironment, faulty_attempts: list[int]
) -> None:
    faults = [OfflineFault(kind="malformed_json", agent_attempts=faulty_attempts)]
    probe = await run_probe(ts_env, faults=faults)
    assert probe.source == "agent"
    assert probe.attempts == len(faulty_attempts) + 1
    assert probe.output is not None and probe.output["risk_level"] == "medium"
    assert "DefaultApplied" not in types_of(probe.ledger)
