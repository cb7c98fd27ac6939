"""The agent-node activity on its own: prompt, provenance, parsing and error translation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from keel.activities.agent_node import MAX_RAW_RESPONSE_CHARS, AgentNodeActivities
from keel.activities.providers.base import ModelReply, ModelRequest
from keel.contracts import AgentDecision, AgentNodeRequest, ContractRegistry
from keel.errors import ProviderPermanentError, ProviderRetryableError
from keel.scenarios.contract_review.contracts import RISK_CLASSIFIER, RiskClassifierInput
from tests.samples import load_sample

ANSWER = {
    "risk_level": "medium",
    "clause_refs": ["1", "2"],
    "rationale": "Personal data and automatic renewal.",
    "confidence": 0.83,
}


class ScriptedProvider:
    """Answers every call with ``text`` and keeps the requests it was sent."""

    name = "stand-in"
    model = "stand-in-1"

    def __init__(
        self, text: str, *, input_tokens: int | None = 120, output_tokens: int | None = 40
    ):
        self.text = text
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        return ModelReply(
            text=self.text,
            provider=self.name,
            model=self.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
        )


class FailingProvider:
    """Raises ``error`` on every call."""

    name = "stand-in"
    model = "stand-in-1"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls += 1
        raise self.error


def node_input() -> dict[str, Any]:
    sample = load_sample("contract-medium-risk")
    fields = {k: sample[k] for k in RiskClassifierInput.model_fields}
    return RiskClassifierInput.model_validate(fields).model_dump(mode="json")


def request(**overrides: Any) -> AgentNodeRequest:
    fields: dict[str, Any] = {
        "contract": RISK_CLASSIFIER.key,
        "contract_fingerprint": RISK_CLASSIFIER.fingerprint,
        "node": "classify-risk",
        "input": node_input(),
        "feedback": [],
        "attempt": 2,
    }
    fields.update(overrides)
    return AgentNodeRequest(**fields)


def environment(*, activity_attempt: int = 1) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, attempt=activity_attempt, workflow_id="review-activity-test"
    )
    return env


async def run(
    provider: Any, req: AgentNodeRequest, *, activity_attempt: int = 1, **kwargs: Any
) -> AgentDecision:
    activities = AgentNodeActivities(provider, **kwargs)
    return await environment(activity_attempt=activity_attempt).run(activities.run_agent_node, req)


async def failure(provider: Any, req: AgentNodeRequest, **kwargs: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await run(provider, req, **kwargs)
    return info.value


# --- success and provenance -----------------------------------------------------------------


async def test_success_carries_its_provenance() -> None:
    provider = ScriptedProvider(json.dumps(ANSWER))
    req = request()
    decision = await run(provider, req, activity_attempt=3)

    rendered = RISK_CLASSIFIER.render_prompt(req.input, [])
    assert decision.contract == "risk-classifier@1"
    assert decision.contract_fingerprint == RISK_CLASSIFIER.fingerprint
    assert (decision.provider, decision.model) == ("stand-in", "stand-in-1")
    assert decision.prompt_sha256 == hashlib.sha256(rendered.encode()).hexdigest()
    assert decision.prompt is None  # prompt text stays out of history by default
    assert (decision.input_tokens, decision.output_tokens) == (120, 40)
    assert (decision.attempt, decision.activity_attempt) == (2, 3)
    assert decision.output == ANSWER
    assert decision.confidence == 0.83
    assert decision.parse_error is None
    assert decision.raw_response == json.dumps(ANSWER)
    assert decision.latency_ms >= 0

    # What the provider was asked.
    [sent] = provider.requests
    assert sent.prompt == rendered
    assert sent.system == RISK_CLASSIFIER.system_prompt
    assert sent.output_schema == RISK_CLASSIFIER.output_model.model_json_schema()
    assert sent.schema_name == "risk_classifier_v1"
    assert sent.contract == "risk-classifier@1"
    assert sent.input == req.input
    assert sent.timeout_seconds == pytest.approx(54.0)  # 90% of the 60 s budget
    assert (sent.workflow_id, sent.agent_attempt, sent.activity_attempt) == (
        "review-activity-test",
        2,
        3,
    )
    assert "Northwind Payroll Services" in sent.prompt


async def test_prompt_text_is_kept_only_when_asked() -> None:
    provider = ScriptedProvider(json.dumps(ANSWER))
    decision = await run(provider, request(), record_prompts=True)
    assert decision.prompt == provider.requests[0].prompt
    assert decision.prompt_sha256 == hashlib.sha256(decision.prompt.encode()).hexdigest()


async def test_missing_token_counts_stay_missing() -> None:
    provider = ScriptedProvider(json.dumps(ANSWER), input_tokens=None, output_tokens=None)
    decision = await run(provider, request())
    assert (decision.input_tokens, decision.output_tokens) == (None, None)


async def test_feedback_is_rendered_into_the_prompt() -> None:
    provider = ScriptedProvider(json.dumps(ANSWER))
    feedback = ["clause_refs ['9'] are not clauses of this contract", "cite clause 3"]
    decision = await run(provider, request(feedback=feedback))
    [sent] = provider.requests
    assert "Your previous answer was not accepted. Address this:" in sent.prompt
    assert "- clause_refs ['9'] are not clauses of this contract\n- cite clause 3" in sent.prompt
    assert tuple(sent.feedback) == tuple(feedback)
    without = RISK_CLASSIFIER.render_prompt(request().input, [])
    assert decision.prompt_sha256 != hashlib.sha256(without.encode()).hexdigest()


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"```json\n{json.dumps(ANSWER, indent=2)}\n```", id="json-fence"),
        pytest.param(f"```\n{json.dumps(ANSWER)}\n```", id="bare-fence"),
        pytest.param(f"\n  {json.dumps(ANSWER)}  \n", id="whitespace"),
    ],
)
async def test_fenced_or_padded_json_parses(text: str) -> None:
    decision = await run(ScriptedProvider(text), request())
    assert decision.output == ANSWER
    assert decision.parse_error is None
    assert decision.confidence == 0.83
    assert decision.raw_response == text  # the answer as given is kept


async def test_a_non_json_answer_is_a_parse_error() -> None:
    text = "Sure! Here is the assessment: the risk is medium"
    decision = await run(ScriptedProvider(text), request())
    assert decision.output is None
    assert decision.confidence is None
    assert decision.parse_error is not None
    assert decision.parse_error.startswith("the answer is not valid JSON")
    assert "line 1 col 1" in decision.parse_error
    assert decision.raw_response == text


async def test_a_json_array_is_a_parse_error() -> None:
    decision = await run(ScriptedProvider(json.dumps([ANSWER])), request())
    assert decision.output is None
    assert decision.parse_error == "the answer is JSON but not an object (got list)"


async def test_a_non_numeric_confidence_is_not_reported_as_one() -> None:
    decision = await run(ScriptedProvider(json.dumps({**ANSWER, "confidence": "high"})), request())
    assert decision.output is not None and decision.output["confidence"] == "high"
    assert decision.confidence is None  # the workflow's schema check will reject it


async def test_a_huge_answer_is_cut_in_history_but_parsed_whole() -> None:
    answer = {**ANSWER, "rationale": "x" * (MAX_RAW_RESPONSE_CHARS + 500)}
    decision = await run(ScriptedProvider(json.dumps(answer)), request())
    assert len(decision.raw_response) == MAX_RAW_RESPONSE_CHARS
    assert decision.output == answer


# --- errors ---------------------------------------------------------------------------------


async def test_a_rate_limit_is_retryable_after_the_announced_delay() -> None:
    provider = FailingProvider(
        ProviderRetryableError("rate limited", provider="stand-in", status=429, retry_after=7)
    )
    err = await failure(provider, request())
    assert provider.calls == 1  # a Retry-After wait belongs to Temporal, not to the activity
    assert err.type == "ProviderRetryableError"
    assert err.non_retryable is False
    assert err.next_retry_delay == timedelta(seconds=7)
    assert err.message == "rate limited"
    assert err.details == ({"provider": "stand-in", "status": 429},)


async def test_a_transient_error_without_retry_after_leaves_the_delay_to_temporal() -> None:
    provider = FailingProvider(
        ProviderRetryableError("overloaded", provider="stand-in", status=529)
    )
    err = await failure(provider, request())
    assert provider.calls == 3  # two quick retries in place, then Temporal's policy
    assert (err.type, err.non_retryable, err.next_retry_delay) == (
        "ProviderRetryableError",
        False,
        None,
    )


class BlipThenAnswer(ScriptedProvider):
    """Fails once without guidance (a connection blip), then answers."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        if not self.requests:
            self.requests.append(request)
            raise ProviderRetryableError("connection reset", provider=self.name)
        return await super().complete(request)


async def test_a_blip_is_retried_inside_the_activity() -> None:
    provider = BlipThenAnswer(json.dumps(ANSWER))
    decision = await run(provider, request())
    assert decision.provider_calls == 2 and decision.activity_attempt == 1
    assert decision.output == ANSWER


async def test_a_permanent_provider_error_is_not_retried() -> None:
    provider = FailingProvider(
        ProviderPermanentError("invalid api key", provider="stand-in", status=401)
    )
    err = await failure(provider, request())
    assert provider.calls == 1
    assert err.type == "ProviderPermanentError"
    assert err.non_retryable is True
    assert err.next_retry_delay is None
    assert "invalid api key" in err.message


async def test_an_unknown_contract_is_not_retried() -> None:
    provider = ScriptedProvider(json.dumps(ANSWER))
    registry = ContractRegistry()
    registry.register(RISK_CLASSIFIER)
    err = await failure(provider, request(contract="risk-classifier@42"), registry=registry)
    assert err.type == "ContractNotFoundError"
    assert err.non_retryable is True
    assert "'risk-classifier@42'" in err.message and "known: risk-classifier@1" in err.message
    assert provider.requests == []


async def test_a_fingerprint_mismatch_is_not_retried() -> None:
    provider = ScriptedProvider(json.dumps(ANSWER))
    stale = "ab" * 32
    err = await failure(provider, request(contract_fingerprint=stale))
    assert err.type == "ContractFingerprintMismatch"
    assert err.non_retryable is True
    assert RISK_CLASSIFIER.fingerprint[:12] in err.message and stale[:12] in err.message
    assert "new version" in err.message
    assert provider.requests == []  # no model call is paid for
