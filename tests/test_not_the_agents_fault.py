"""A failure that is not the agent's is never dressed up as a business outcome: it says what to
fix (DESIGN.md, idea 2).

An unknown contract, other contract code, a misconfigured provider, a refused key and a
provider that keeps failing fail the run with the fix, never take the contract's default and
never open a gate that hides why; a contract that asks to escalate them opens its gate with
the reason and the fix in view.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from keel.activities.agent_node import AgentNodeActivities
from keel.activities.providers.base import ModelProvider, ModelReply, ModelRequest
from keel.contracts import REGISTRY, AgentContract, ContractRegistry, EscalateToGate, UseDefault
from keel.contracts.agent_node import classify_failure
from keel.contracts.gates import GateSpec
from keel.contracts.integrity import verify_ledger
from keel.contracts.ledger import (
    AgentCallFailed,
    Escalated,
    LedgerEvent,
    NodeFailed,
    verify_chain,
)
from keel.errors import ProviderAuthError, ProviderError, ProviderPermanentError
from keel.offline import OfflineFault, OfflineProvider
from keel.scenarios.contract_review.contracts import (
    RISK_CLASSIFIER,
    RiskAssessment,
    RiskClassifierInput,
)
from keel.scenarios.incident import IncidentInvestigationWorkflow
from keel.workers.apps import resolve_apps
from keel.workers.keys import load_worker_keys
from keel.workers.runtime import build_worker
from tests.conftest import keel_worker, offline_settings
from tests.helpers import decide, ledger_of, review, start_review, types_of, wait_for_gate
from tests.probe_workflows import AgentNodeProbe
from tests.samples import load_sample

DEFAULT = {
    "risk_level": "low",
    "clause_refs": [],
    "rationale": "A made-up business answer that must never stand in for a broken system.",
    "confidence": 1.0,
}


def classifier(version: int, **overrides: Any) -> AgentContract[Any, Any]:
    """A risk classifier the offline model answers (its rules key on the name)."""
    fields: dict[str, Any] = {
        "name": "risk-classifier",
        "version": version,
        "description": "Test-only risk classifier for failures that are not the agent's.",
        "input_model": RiskClassifierInput,
        "output_model": RiskAssessment,
        "system_prompt": RISK_CLASSIFIER.system_prompt,
        "prompt_template": RISK_CLASSIFIER.prompt_template,
        "max_attempts": 2,
        "provider_attempts": 2,
        "on_exhausted": UseDefault(output=DEFAULT, reason="no usable answer: assume low"),
    }
    return AgentContract(**{**fields, **overrides})


WITH_DEFAULT = REGISTRY.register(classifier(80))
HAND_GATE = GateSpec(
    name="classify-by-hand",
    title="Classify the contract by hand",
    reviewers=("legal.sam",),
    output_contract="risk-classifier@81",
)
ESCALATING = REGISTRY.register(
    classifier(81, on_exhausted=EscalateToGate(gate=HAND_GATE), on_system_failure="escalate")
)
NO_RULE = REGISTRY.register(
    classifier(1, name="clause-summarizer", description="A contract no offline rule answers.")
)


class Refusing:
    """A provider that refuses every call the way a wrong or unprivileged key is refused."""

    model = "stand-in-1"

    def __init__(self, error: ProviderError, name: str = "openai") -> None:
        self.name = name
        self.error = error
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls += 1
        raise self.error


def refused_key(status: int = 401) -> Refusing:
    return Refusing(ProviderPermanentError("Incorrect API key", provider="openai", status=status))


@asynccontextmanager
async def probe_worker(
    client: Client,
    *,
    provider: ModelProvider | None = None,
    registry: ContractRegistry = REGISTRY,
    faults: list[OfflineFault] | None = None,
) -> AsyncIterator[str]:
    """A worker whose model activity resolves contracts in ``registry``; yields its queue."""
    task_queue = f"test-{uuid.uuid4()}"
    nodes = AgentNodeActivities(provider or OfflineProvider(faults or []), registry=registry)
    async with build_worker(
        client,
        offline_settings(),
        apps=resolve_apps(),
        task_queue=task_queue,
        nodes=nodes,
        workflows=[AgentNodeProbe],
    ):
        yield task_queue


async def start_probe(
    client: Client, task_queue: str, contract: AgentContract[Any, Any]
) -> WorkflowHandle[Any, Any]:
    raw = load_sample("contract-medium-risk")
    return await client.start_workflow(
        AgentNodeProbe.run,
        {"contract": contract.key, "input": {k: raw[k] for k in RiskClassifierInput.model_fields}},
        id=f"probe-{uuid.uuid4()}",
        task_queue=task_queue,
    )


async def failure_of(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    """The run's failure: an ``AgentNodeFailed`` application error, not retryable."""
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "AgentNodeFailed" and cause.non_retryable
    return cause


def assert_failed_visibly(ledger: list[LedgerEvent], problem: str) -> NodeFailed:
    """The ledger ends with the failure (and, for a Keel workflow, the signed head that
    ends the run), has no default and no gate, and still verifies."""
    if ledger[-1].type == "ChainHeadSigned":
        assert ledger[-1].reason == "completion"  # type: ignore[attr-defined]
        ledger = ledger[:-1]
    kinds = types_of(ledger)
    assert kinds[-2:] == ["AgentCallFailed", "NodeFailed"]
    assert "DefaultApplied" not in kinds and "GateOpened" not in kinds
    assert "Escalated" not in kinds and "WorkflowCompleted" not in kinds
    assert verify_chain(ledger).ok
    failed = ledger[-1]
    assert isinstance(failed, NodeFailed) and failed.problem == problem
    return failed


async def test_a_contract_the_worker_does_not_know_fails_the_run_instead_of_the_default(
    ts_env: WorkflowEnvironment,
) -> None:
    async with probe_worker(ts_env.client, registry=ContractRegistry()) as tq:
        handle = await start_probe(ts_env.client, tq, WITH_DEFAULT)
        error = await failure_of(handle)
        ledger = await ledger_of(handle)  # the failed run still answers the query
    assert error.message.startswith(
        f"agent node probe: contract risk-classifier@80 is not registered on the worker that "
        f"ran the call (task queue {tq}); every worker of a task queue must serve the "
        "same apps"
    )
    failed = assert_failed_visibly(ledger, "unknown-contract")
    assert failed.node == "probe" and failed.contract == "risk-classifier@80"
    assert failed.error_type == "ContractNotFoundError"
    [call] = [e for e in ledger if isinstance(e, AgentCallFailed)]
    assert not call.retryable and "no contract 'risk-classifier@80'" in call.message
    details = error.details[0]
    assert details["problem"] == "unknown-contract" and details["fix"] == failed.fix
    assert [e["type"] for e in details["ledger_tail"]][-1] == "NodeFailed"


async def test_other_contract_code_on_the_worker_fails_the_run_saying_to_deploy_the_same(
    ts_env: WorkflowEnvironment,
) -> None:
    other = ContractRegistry()
    other.register(classifier(80, description="The same version with other content."))
    async with probe_worker(ts_env.client, registry=other) as tq:
        handle = await start_probe(ts_env.client, tq, WITH_DEFAULT)
        error = await failure_of(handle)
        ledger = await ledger_of(handle)
    assert "has other code for contract risk-classifier@80" in error.message
    assert "deploy every worker with the same contract code" in error.message
    assert WITH_DEFAULT.fingerprint[:12] in error.message
    assert assert_failed_visibly(ledger, "contract-mismatch").error_type == (
        "ContractFingerprintMismatch"
    )


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (ProviderPermanentError("Incorrect API key", provider="openai", status=401), "401"),
        (ProviderAuthError("key lacks model access", provider="openai", status=403), "403"),
    ],
    ids=["401", "403-auth-error"],
)
async def test_a_refused_key_fails_the_run_once_with_the_variable_to_set(
    ts_env: WorkflowEnvironment, error: ProviderError, shown: str
) -> None:
    provider = Refusing(error)
    async with probe_worker(ts_env.client, provider=provider) as tq:
        handle = await start_probe(ts_env.client, tq, WITH_DEFAULT)
        failure = await failure_of(handle)
        ledger = await ledger_of(handle)
    assert provider.calls == 1  # neither Temporal nor the node tried again
    assert "agent node probe: the provider refused the API key" in failure.message
    assert f"({shown})" in failure.message
    assert "set OPENAI_API_KEY" in failure.message
    assert assert_failed_visibly(ledger, "provider-auth").error_type == type(error).__name__


async def test_a_contract_without_an_offline_rule_fails_saying_how_to_add_one(
    ts_env: WorkflowEnvironment,
) -> None:
    async with probe_worker(ts_env.client) as tq:
        handle = await start_probe(ts_env.client, tq, NO_RULE)
        error = await failure_of(handle)
        ledger = await ledger_of(handle)
    assert "agent node probe: the model provider of the worker" in error.message
    assert "has no rule for contract 'clause-summarizer@1'" in error.message
    assert "App.offline_rules" in error.message
    assert assert_failed_visibly(ledger, "provider-config").error_type == "ProviderConfigError"


async def test_a_provider_still_failing_after_its_retries_is_not_an_answer_either(
    ts_env: WorkflowEnvironment,
) -> None:
    faults = [OfflineFault(kind="server_error", agent_attempts=[1])]
    async with probe_worker(ts_env.client, faults=faults) as tq:
        handle = await start_probe(ts_env.client, tq, WITH_DEFAULT)
        error = await failure_of(handle)
        ledger = await ledger_of(handle)
    assert "the model provider kept failing after 2 tries" in error.message
    assert "injected server error" in error.message and "fallback_models" in error.message
    assert_failed_visibly(ledger, "provider-unavailable")
    [call] = [e for e in ledger if isinstance(e, AgentCallFailed)]
    assert call.retryable  # Temporal retried it; only the spent budget ends here


async def test_a_contract_that_escalates_system_failures_shows_the_reason_at_its_gate(
    ts_env: WorkflowEnvironment,
) -> None:
    async with probe_worker(ts_env.client, provider=refused_key()) as tq:
        handle = await start_probe(ts_env.client, tq, ESCALATING)
        gate = await wait_for_gate(handle, "classify-by-hand")
        assert gate.context["problem"] == "system"
        assert gate.context["kind"] == "provider-auth"
        assert "refused the API key (401)" in gate.context["reason"]
        assert "set OPENAI_API_KEY" in gate.context["fix"]
        assert gate.reason is not None
        assert "refused the API key (401)" in gate.reason and "OPENAI_API_KEY" in gate.reason
        await decide(
            handle, review("classify-by-hand", "reject", "legal.sam", comment="fix the key")
        )
        result = await handle.result()
    assert result["source"] == "none" and result["output"] is None
    assert "refused the API key" in result["note"]
    kinds = [e["type"] for e in result["ledger"]]
    assert "DefaultApplied" not in kinds and "NodeFailed" not in kinds
    [escalated] = [e for e in result["ledger"] if e["type"] == "Escalated"]
    assert escalated["subject"] == "node:probe"
    assert escalated["reason"].startswith("not the agent's answer (provider-auth)")
    assert "fix: set OPENAI_API_KEY" in escalated["reason"]


async def test_a_refused_key_in_contract_review_reaches_legal_with_the_fix_in_view(
    ts_env: WorkflowEnvironment,
) -> None:
    async with keel_worker(ts_env.client, provider=refused_key()) as tq:
        handle = await start_review(ts_env.client, tq, "low")
        gate = await wait_for_gate(handle, "risk-classification")
        assert gate.reason is not None and "refused the API key (401)" in gate.reason
        assert "OPENAI_API_KEY" in gate.context["fix"]
        await decide(handle, review("risk-classification", "reject", "legal.sam", comment="no key"))
        result = await handle.result()
    escalated = [e for e in result.ledger if isinstance(e, Escalated)]
    assert "provider-auth" in escalated[0].reason
    assert result.outcome == "rejected" and "refused the API key" in result.reason


async def test_a_refused_key_fails_the_incident_instead_of_handing_over(
    ts_env: WorkflowEnvironment,
) -> None:
    async with keel_worker(ts_env.client, provider=refused_key()) as tq:
        handle = await ts_env.client.start_workflow(
            IncidentInvestigationWorkflow.run,
            {"page": load_sample("incident-page"), "carry": None},
            id=f"incident-{uuid.uuid4()}",
            task_queue=tq,
        )
        error = await failure_of(handle)
        ledger = await ledger_of(handle)
    assert error.message.startswith("agent node plan: the provider refused the API key (401)")
    assert "set OPENAI_API_KEY" in error.message
    assert_failed_visibly(ledger, "provider-auth")
    assert "PlanProposed" not in types_of(ledger)
    # The failed run ended signed, so its ledger is as tamper-evident as a completed one's.
    assert ledger[-1].type == "ChainHeadSigned"
    stored = [e.model_dump(mode="json") for e in ledger]
    keys = load_worker_keys(offline_settings())
    assert verify_ledger(stored, keyring=keys.keyring, closed=True).ok


def test_escalating_system_failures_needs_a_gate() -> None:
    with pytest.raises(ValueError, match="on_system_failure='escalate' needs a gate"):
        classifier(82, on_system_failure="escalate")


def test_the_policy_is_part_of_the_fingerprint_only_when_set() -> None:
    plain = classifier(83)
    assert plain.on_system_failure == "fail"
    assert classifier(83, on_system_failure="fail").fingerprint == plain.fingerprint
    gate = EscalateToGate(gate=HAND_GATE)
    assert (
        classifier(83, on_exhausted=gate).fingerprint
        != classifier(83, on_exhausted=gate, on_system_failure="escalate").fingerprint
    )


@pytest.mark.parametrize(
    ("error_type", "status", "problem", "fix"),
    [
        ("ProviderPermanentError", 400, "invalid-request", "KEEL_MODEL"),
        ("ProviderPermanentError", 404, "invalid-request", "KEEL_MODEL"),
        ("ProviderPermanentError", 401, "provider-auth", "ANTHROPIC_API_KEY"),
        ("TimeoutError", None, "provider-unavailable", "fallback_models"),
        ("ValueError", None, "worker-error", "traceback"),
    ],
)
def test_each_failure_names_its_problem_and_fix(
    error_type: str, status: int | None, problem: str, fix: str
) -> None:
    failure = classify_failure(
        error_type,
        "boom",
        contract="risk-classifier@1",
        task_queue="keel-models",
        status=status,
        provider="anthropic",
    )
    assert failure.problem == problem and fix in failure.fix
    assert failure.explain("classify-risk").startswith(
        f"agent node classify-risk: {failure.reason}"
    )


async def test_failed_and_escalated_runs_replay_deterministically(
    ts_env: WorkflowEnvironment,
) -> None:
    async with probe_worker(ts_env.client, provider=refused_key()) as tq:
        failed = await start_probe(ts_env.client, tq, WITH_DEFAULT)
        await failure_of(failed)
        escalated = await start_probe(ts_env.client, tq, ESCALATING)
        await wait_for_gate(escalated, "classify-by-hand")
        await decide(
            escalated,
            review(
                "classify-by-hand",
                "modify",
                "legal.sam",
                modifications={k: v for k, v in DEFAULT.items() if k != "confidence"},
            ),
        )
        result = await escalated.result()
    assert result["source"] == "human" and result["output"]["risk_level"] == "low"
    replayer = Replayer(workflows=[AgentNodeProbe], data_converter=pydantic_data_converter)
    for handle in (failed, escalated):
        history = await handle.fetch_history()
        outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert outcome.replay_failure is None, f"{handle.id}: {outcome.replay_failure}"
