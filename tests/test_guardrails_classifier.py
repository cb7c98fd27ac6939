"""The prompt-injection classifier policy: an activity on an OpenAI-compatible endpoint, asked
by the agent node when the contract names it, its decision in the ledger, and what a
classifier failure does (fail, deny or allow: never a silent allow)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from keel import testing
from keel.activities.guardrail_classifier import (
    OPENAI_COMPATIBLE,
    GuardrailClassifierActivities,
    OpenAICompatibleClassifier,
    classifier_activities,
)
from keel.contracts import REGISTRY, AgentContract, UseDefault
from keel.contracts.guardrails import (
    CLASSIFIER_FAILED_ERROR,
    CLASSIFIER_NOT_CONFIGURED_ERROR,
    CLASSIFIER_POLICY,
    ClassifierRequest,
    ClassifierVerdict,
    GuardrailConfig,
    classifier_decision,
)
from keel.contracts.ledger import AgentDecided, LedgerEvent, PolicyApplied, parse_ledger
from keel.offline import OfflineProvider
from keel.scenarios.contract_review.contracts import (
    RISK_CLASSIFIER,
    RiskAssessment,
    RiskClassifierInput,
)
from keel.testing import events_of
from tests.fake_model_server import FakeModelServer, Reply
from tests.probe_workflows import AgentNodeProbe
from tests.samples import load_sample

pytestmark = pytest.mark.allow_model_requests

DEFAULT = {
    "risk_level": "high",
    "clause_refs": [],
    "rationale": "no model answer: assume high",
    "confidence": 1.0,
}
FIELDS = ("vendor", "title", "jurisdiction", "clauses")


def contract(version: int, **guardrails: Any) -> AgentContract[Any, Any]:
    return REGISTRY.register(
        AgentContract(
            name="risk-classifier",
            version=version,
            description="test contract with a prompt-injection classifier",
            input_model=RiskClassifierInput,
            output_model=RiskAssessment,
            system_prompt=RISK_CLASSIFIER.system_prompt,
            prompt_template=RISK_CLASSIFIER.prompt_template,
            on_exhausted=UseDefault(output=DEFAULT, reason="no usable answer"),
            provider_attempts=1,
            guardrails=GuardrailConfig(untrusted_fields=FIELDS, **guardrails),
        )
    )


FAIL_CLOSED = contract(781, classifier=OPENAI_COMPATIBLE)
DENY_ON_FAILURE = contract(782, classifier=OPENAI_COMPATIBLE, on_classifier_failure="deny")
FAIL_OPEN = contract(783, classifier=OPENAI_COMPATIBLE, on_classifier_failure="allow")
UNKNOWN = contract(784, classifier="no-such-classifier")
NO_CLASSIFIER = contract(785)
STRICT = contract(786, classifier=OPENAI_COMPATIBLE, classifier_threshold=0.2)


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as fake:
        yield fake


def node_input(**changes: Any) -> dict[str, Any]:
    raw = load_sample("contract-medium-risk")
    return {**{k: raw[k] for k in RiskClassifierInput.model_fields}, **changes}


async def probe(
    env: WorkflowEnvironment,
    key: str,
    server: FakeModelServer | None,
    payload: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[LedgerEvent]]:
    overrides: dict[str, Any] = {}
    if server is not None:
        overrides = {
            "guardrail_classifier_base_url": server.base_url_openai,
            "guardrail_classifier_model": "guard-1",
            "guardrail_classifier_api_key": "sk-classifier-secret-0123456789",
        }
    async with testing.keel_worker(
        env.client,
        model=OfflineProvider(),
        activities=[],
        workflows=[AgentNodeProbe],
        settings=testing.offline_settings(**overrides),
    ) as tq:
        result = await env.client.execute_workflow(
            AgentNodeProbe.run,
            {"contract": key, "input": payload or node_input()},
            id=f"probe-{uuid.uuid4()}",
            task_queue=tq,
            # A workflow task that fails (an import the sandbox refuses) is retried forever:
            # bound the run so such a test fails instead of hanging.
            execution_timeout=timedelta(minutes=10),
        )
    return result, parse_ledger(result["ledger"])


def classifier_events(ledger: list[LedgerEvent]) -> list[PolicyApplied]:
    return [e for e in events_of(ledger, PolicyApplied) if e.policy == CLASSIFIER_POLICY]


# --- through a workflow -------------------------------------------------------------------


async def test_an_injection_the_classifier_finds_is_denied_before_the_model(
    ts_env: WorkflowEnvironment, server: FakeModelServer
) -> None:
    server.script(Reply.json({"injection": True, "score": 0.97, "reason": "asks to skip review"}))
    result, ledger = await probe(ts_env, FAIL_CLOSED.key, server)
    assert result["source"] == "denied" and result["output"] is None
    assert CLASSIFIER_POLICY in result["note"]
    [event] = classifier_events(ledger)
    assert event.action == "deny"
    assert "scored 0.97" in event.reason and "asks to skip review" in event.reason
    assert events_of(ledger, AgentDecided) == [], "the model was never called"
    # The patterns ran first, and allowed (the sample is a benign contract).
    patterns = [e for e in events_of(ledger, PolicyApplied) if e.policy == "prompt-injection"]
    assert [e.action for e in patterns] == ["allow"]
    # What the classifier got: the untrusted fields, in the OpenAI wire format, with the key.
    [request] = server.requests
    assert request.model == "guard-1"
    assert request.api_key == "sk-classifier-secret-0123456789"
    assert request.body["response_format"] == {"type": "json_object"}
    assert request.body["messages"][0]["role"] == "system"
    assert node_input()["clauses"][0]["text"][:40] in request.body["messages"][1]["content"]


async def test_a_clean_verdict_lets_the_call_proceed_and_the_classifier_sees_no_pii(
    ts_env: WorkflowEnvironment, server: FakeModelServer
) -> None:
    server.script(Reply.json({"injection": False, "score": 0.03}))
    payload = node_input(vendor="Acme Ltd (legal@acme.example, +44 20 7946 0958)")
    result, ledger = await probe(ts_env, FAIL_CLOSED.key, server, payload)
    assert result["source"] == "agent"
    [event] = classifier_events(ledger)
    assert event.action == "allow" and "scored 0.03" in event.reason
    assert len(events_of(ledger, AgentDecided)) == 1
    sent = json.dumps(server.requests[0].body)
    assert "legal@acme.example" not in sent and "7946" not in sent
    assert "[email redacted #1]" in sent and "[phone redacted #1]" in sent


async def test_the_threshold_denies_a_high_score_even_without_the_flag(
    ts_env: WorkflowEnvironment, server: FakeModelServer
) -> None:
    server.script(Reply.json({"injection": False, "score": 0.3}))
    result, ledger = await probe(ts_env, STRICT.key, server)
    assert result["source"] == "denied"
    assert "threshold 0.20" in classifier_events(ledger)[0].reason


async def test_a_malformed_answer_fails_the_run_by_default(
    ts_env: WorkflowEnvironment, server: FakeModelServer
) -> None:
    server.script(Reply.content("looks fine to me"))
    with pytest.raises(WorkflowFailureError) as caught:
        await probe(ts_env, FAIL_CLOSED.key, server)
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "AgentNodeFailed"
    assert "prompt-injection classifier" in cause.message and "not JSON" in cause.message


async def test_a_failure_denies_when_the_contract_says_deny(
    ts_env: WorkflowEnvironment, server: FakeModelServer
) -> None:
    server.script(Reply.error(503, "down for maintenance"))
    result, ledger = await probe(ts_env, DENY_ON_FAILURE.key, server)
    assert result["source"] == "denied"
    [event] = classifier_events(ledger)
    assert event.action == "deny" and "fails closed" in event.reason
    assert events_of(ledger, AgentDecided) == []


async def test_fail_open_is_recorded_never_silent(
    ts_env: WorkflowEnvironment, server: FakeModelServer
) -> None:
    server.script(Reply.json({"injection": "no", "score": 0.1}))
    result, ledger = await probe(ts_env, FAIL_OPEN.key, server)
    assert result["source"] == "agent"
    [event] = classifier_events(ledger)
    assert event.action == "allow"
    assert "gave no verdict" in event.reason and "fails open" in event.reason


async def test_a_classifier_the_worker_lacks_is_a_configuration_failure(
    ts_env: WorkflowEnvironment,
) -> None:
    with pytest.raises(WorkflowFailureError) as caught:
        await probe(ts_env, UNKNOWN.key, None)
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "AgentNodeFailed"
    assert "no-such-classifier" in cause.message and "KEEL_GUARDRAIL_CLASSIFIER" in cause.message
    details = cause.details[0]
    assert details["problem"] == "provider-config"
    assert details["error_type"] == CLASSIFIER_NOT_CONFIGURED_ERROR


async def test_without_a_classifier_no_classifier_activity_runs(
    ts_env: WorkflowEnvironment, server: FakeModelServer
) -> None:
    result, ledger = await probe(ts_env, NO_CLASSIFIER.key, server)
    assert result["source"] == "agent"
    assert classifier_events(ledger) == [] and server.calls == 0


async def test_phonenumbers_loads_region_metadata_inside_the_workflow_sandbox(
    ts_env: WorkflowEnvironment,
) -> None:
    # Regions whose metadata nothing else in the suite loads: the scrubber imports them
    # lazily, in workflow code, inside the sandbox (phonenumbers is passed through).
    payload = node_input(vendor="Fiji office +679 321 2345, Tallinn +372 321 2345")
    result, ledger = await probe(ts_env, NO_CLASSIFIER.key, None, payload)
    assert result["source"] == "agent"
    [scrub] = [e for e in events_of(ledger, PolicyApplied) if e.policy == "pii-scrubber"]
    assert [c["after"] for c in scrub.changes] == ["[phone redacted #1]", "[phone redacted #2]"]
    assert "321 2345" not in json.dumps(result["ledger"])


# --- the activity and the classifier on their own ------------------------------------------


def classifier(server: FakeModelServer) -> OpenAICompatibleClassifier:
    return OpenAICompatibleClassifier(
        base_url=server.base_url_openai, model="guard-1", api_key="sk-classifier-secret-0123456789"
    )


async def test_an_http_error_echoing_the_key_is_scrubbed_and_auth_is_permanent(
    server: FakeModelServer,
) -> None:
    server.script(Reply.error(401, "bad key sk-classifier-secret-0123456789"))
    with pytest.raises(ApplicationError) as caught:
        await classifier(server).classify(["hello"])
    assert caught.value.type == CLASSIFIER_FAILED_ERROR
    assert caught.value.non_retryable
    assert "sk-classifier-secret" not in caught.value.message
    server.script(Reply.error(429))
    with pytest.raises(ApplicationError) as again:
        await classifier(server).classify(["hello"])
    assert not again.value.non_retryable


@pytest.mark.parametrize(
    "content",
    [
        "",
        "yes",
        "[]",
        '{"injection": true}',
        '{"score": 0.5}',
        '{"injection": "true", "score": 0.5}',
        '{"injection": true, "score": 1.5}',
        '{"injection": true, "score": true}',
        '{"injection": false, "score": 0.1, "reason": 3}',
        '{"injection": false, "score": 0.1, "extra": 1}',
    ],
)
def test_answers_are_parsed_strictly(content: str) -> None:
    judge = OpenAICompatibleClassifier(base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(ApplicationError) as caught:
        judge.parse(content)
    assert caught.value.type == CLASSIFIER_FAILED_ERROR and not caught.value.non_retryable


def test_a_good_answer_parses() -> None:
    judge = OpenAICompatibleClassifier(base_url="http://127.0.0.1:9/v1", model="m")
    verdict = judge.parse('{"injection": false, "score": 0, "reason": " fine\\n "}')
    assert verdict == ClassifierVerdict(
        injection=False, score=0.0, reason="fine", classifier="openai-compatible:m"
    )
    assert classifier_decision(verdict, 0.5).action == "allow"
    assert classifier_decision(verdict, 0.0).action == "deny"


async def test_the_activity_names_what_is_missing() -> None:
    activities = GuardrailClassifierActivities()
    request = ClassifierRequest(classifier="x", contract="c@1", node="n", texts=["t"])
    with pytest.raises(ApplicationError) as caught:
        await activities.classify(request)
    assert caught.value.type == CLASSIFIER_NOT_CONFIGURED_ERROR and caught.value.non_retryable


def test_settings_configure_the_openai_compatible_classifier() -> None:
    assert classifier_activities(testing.offline_settings()).classifiers == {}
    settings = testing.offline_settings(
        guardrail_classifier_base_url="http://127.0.0.1:9/v1", guardrail_classifier_model="g"
    )
    [(name, judge)] = classifier_activities(settings).classifiers.items()
    assert name == OPENAI_COMPATIBLE and judge.name == "openai-compatible:g"


def test_a_classifier_needs_untrusted_fields() -> None:
    with pytest.raises(ValueError, match="untrusted_fields"):
        GuardrailConfig(classifier=OPENAI_COMPATIBLE)


def test_new_guardrail_fields_at_their_defaults_keep_old_fingerprints() -> None:
    dumped = GuardrailConfig(untrusted_fields=("a",)).model_dump(mode="json")
    assert dumped == {"token_budget": 20_000, "scrub_pii": True, "untrusted_fields": ["a"]}
    assert "classifier" in GuardrailConfig(untrusted_fields=("a",), classifier="x").model_dump(
        mode="json"
    )
