"""Contract review through the real ``openai`` and ``anthropic`` clients, against a local
server speaking their wire formats: success, Retry-After honoured, permanent errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from keel.activities.providers import build_provider, close_provider
from keel.contracts.ledger import AgentCallFailed, AgentDecided
from keel.scenarios.contract_review.contracts import RISK_CLASSIFIER
from keel.settings import KeelSettings
from tests.conftest import keel_worker
from tests.fake_model_server import FakeModelServer, Reply
from tests.helpers import decide, review, start_review, wait_for_gate

# These tests drive the real SDK clients against a local fake server.
pytestmark = pytest.mark.allow_model_requests

MODELS = {"openai": "openai:gpt-4o-mini", "anthropic": "anthropic:claude-sonnet-4-6"}
ASSESSMENT = {
    "risk_level": "medium",
    "clause_refs": ["3"],
    "rationale": "Liability cap present but the renewal terms are one-sided.",
    "confidence": 0.82,
}


@asynccontextmanager
async def real_client_worker(
    env: WorkflowEnvironment, server: FakeModelServer, wire: str
) -> AsyncIterator[str]:
    settings = KeelSettings(_env_file=None, **_settings_for(server, wire))
    provider = build_provider(settings)
    try:
        async with keel_worker(env.client, provider=provider) as task_queue:
            yield task_queue
    finally:
        await close_provider(provider)


def _settings_for(server: FakeModelServer, wire: str) -> dict[str, Any]:
    env = server.env(MODELS[wire])
    return {
        "model": env["KEEL_MODEL"],
        "openai_api_key": env.get("OPENAI_API_KEY"),
        "openai_base_url": env.get("OPENAI_BASE_URL"),
        "anthropic_api_key": env.get("ANTHROPIC_API_KEY"),
        "anthropic_base_url": env.get("ANTHROPIC_BASE_URL"),
    }


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_review_with_a_real_client(ts_env: WorkflowEnvironment, wire: str) -> None:
    with FakeModelServer(responder=lambda request: ASSESSMENT) as server:
        async with real_client_worker(ts_env, server, wire) as tq:
            handle = await start_review(ts_env.client, tq, "low")
            await wait_for_gate(handle, "standard-review")
            await decide(handle, review("standard-review", "approve", "legal.sam"))
            result = await handle.result()
        request = server.requests[0]
    decided = [e for e in result.ledger if isinstance(e, AgentDecided)]
    assert len(decided) == 1
    assert (decided[0].provider, decided[0].model) == (wire, MODELS[wire].split(":", 1)[1])
    assert decided[0].output == ASSESSMENT and decided[0].input_tokens
    assert request.schema == RISK_CLASSIFIER.output_model.model_json_schema()
    assert request.api_key == "sk-fake"
    assert result.route == "standard-review" and result.outcome == "approved"


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_rate_limit_is_retried_by_temporal(ts_env: WorkflowEnvironment, wire: str) -> None:
    with FakeModelServer(responder=lambda request: {**ASSESSMENT, "risk_level": "low"}) as server:
        server.script(Reply.error(429, retry_after=1), Reply.error(500))
        async with real_client_worker(ts_env, server, wire) as tq:
            result = await (await start_review(ts_env.client, tq, "low")).result()
        assert server.calls == 3  # the client never retried on its own (max_retries=0)
    decided = [e for e in result.ledger if isinstance(e, AgentDecided)]
    # The 429 carried Retry-After: Temporal waited and retried (activity attempt 2). The 500
    # carried none: the activity retried it in place (second provider call of attempt 2).
    assert [(d.attempt, d.activity_attempt, d.provider_calls) for d in decided] == [(1, 2, 2)]
    assert result.outcome == "approved"


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_bad_key_fails_once_and_escalates(ts_env: WorkflowEnvironment, wire: str) -> None:
    with FakeModelServer() as server:
        server.script(Reply.error(401))
        async with real_client_worker(ts_env, server, wire) as tq:
            handle = await start_review(ts_env.client, tq, "low")
            await wait_for_gate(handle, "risk-classification")
            await decide(
                handle, review("risk-classification", "reject", "legal.sam", comment="no model")
            )
            result = await handle.result()
        assert server.calls == 1  # non-retryable: Temporal did not try again
    failed = [e for e in result.ledger if isinstance(e, AgentCallFailed)]
    assert len(failed) == 1 and not failed[0].retryable
    assert failed[0].error_type == "ProviderPermanentError"
    assert "API_KEY" in failed[0].message
    assert result.outcome == "rejected"
