"""No stored secrets (issue 8, item 5): a provider error that echoes the API key leaves no
trace of the key in Temporal history, the ledger, the worker's logs or the spans.

``scrub_secrets`` replaces anything key-shaped in a provider error text with a
``[redacted:<kind>]`` marker, plus the exact keys the worker is configured with, whatever
their shape. It runs over provider error texts only; a SHA-256 digest inside one is
replaced (it cannot be told from a hex key), the ledger's own hashes are never touched.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import uuid
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import activity
from temporalio.client import WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from keel.activities.agent_node import AgentNodeActivities
from keel.activities.providers import close_provider
from keel.activities.providers.anthropic_provider import AnthropicProvider
from keel.activities.providers.base import ModelProvider, ModelRequest
from keel.activities.providers.openai_provider import OpenAIProvider
from keel.contracts import AgentDecision, AgentNodeRequest
from keel.contracts.agent_node import AGENT_NODE_ACTIVITY
from keel.contracts.ledger import AgentCallFailed, Escalated, NodeFailed, verify_chain
from keel.contracts.secrets import scrub_secrets, scrub_value
from keel.errors import ProviderPermanentError, ProviderRetryableError
from keel.offline import OfflineProvider
from keel.workers.apps import resolve_apps
from keel.workers.runtime import build_worker, connect
from keel.workers.telemetry import tracing_interceptors
from tests.conftest import keel_worker, offline_settings
from tests.fake_model_server import FakeModelServer, Reply
from tests.helpers import decide, ledger_of, review, start_review, wait_for_gate
from tests.probe_workflows import AgentNodeProbe
from tests.test_agent_node_activity import FailingProvider, failure, request
from tests.test_not_the_agents_fault import (
    WITH_DEFAULT,
    Refusing,
    assert_failed_visibly,
    failure_of,
    probe_worker,
    start_probe,
)

OPENAI_KEY = "sk-proj-Lk7QeT9vX2mZp4RbN8wYc3HdJ6fA1sGu5KoPq0Ei"
ANTHROPIC_KEY = "sk-ant-api03-Wn4TzR8qLm2XbV6cKp9JdF3hYs7GaE1uQo5NiB0t-AAAA"
GATEWAY_KEY = "corp-gw-Zq93+unusual"
"""A key of no known shape (a company gateway's): only the configured value catches it."""


def distinctive(key: str) -> str:
    """The middle of a key: what must not survive anywhere, even cut out of context."""
    return key[len(key) // 4 : len(key) // 4 + 12]


# --- scrub_secrets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (f"Incorrect API key provided: {OPENAI_KEY}.", "openai-key"),
        ("key sk-abcdefghijklmnopqrstuvwxyz012345 refused", "openai-key"),
        (
            "Incorrect API key provided: sk-proj-Lk7Q********************************q0Ei.",
            "openai-key",
        ),
        (f"invalid x-api-key {ANTHROPIC_KEY}", "anthropic-key"),
        ("AWS said AKIAIOSFODNN7EXAMPLE is not allowed", "aws-access-key"),
        ("token ghp_16C7e42F292c6912E7710c838347Ae178B4a leaked", "github-token"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop was refused", "github-token"),
        ("Google key AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW is invalid", "google-api-key"),
        ("slack xoxb-123456789012-abcdefghijkl rejected", "slack-token"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P",
            "jwt",
        ),
        ("a key like corp****9f1 was echoed", "masked-key"),
        ("proxy says: Authorization: Bearer abc.def-ghi_123456", "secret"),
        ("the gateway saw Bearer abc.def-ghi_123456 and refused it", "credential"),
        ("api_key=hunter2hunter2&retry=1", "secret"),
        ('{"api-key": "0f9e8d7c6b"}', "secret"),
        ("OPENAI_API_KEY=sk-short is wrong", "secret"),
        ("client_secret: s3cr3t-v4lue", "secret"),
        ("Authorization: Basic dXNlcjpwYXNz", "secret"),
        ("cannot reach https://bob:pa55w0rd@llm.internal/v1: refused", "credentials"),
        ("deployment key 0123456789abcdef0123456789abcdef is invalid", "hex-secret"),
        ("secret Y2hhbmdlIHRoaXMgc2VjcmV0IGtleSBwbGVhc2UxMjM0NTY3OA== was sent", "high-entropy"),
    ],
)
def test_every_key_shape_is_replaced_by_a_marker_naming_its_kind(text: str, kind: str) -> None:
    scrubbed = scrub_secrets(text)
    assert f"[redacted:{kind}]" in scrubbed
    assert scrubbed != text


def test_an_openai_401_keeps_its_sentence_and_loses_only_the_key() -> None:
    text = (
        f"Incorrect API key provided: {OPENAI_KEY}. You can find your API key at "
        "https://platform.openai.com/account/api-keys. (request id req_0123456789abcdef0123)"
    )
    assert scrub_secrets(text) == (
        "Incorrect API key provided: [redacted:openai-key]. You can find your API key at "
        "https://platform.openai.com/account/api-keys. (request id req_0123456789abcdef0123)"
    )


def test_a_configured_key_of_any_shape_is_removed_wherever_it_appears() -> None:
    text = f"gateway refused {GATEWAY_KEY}; again: '{GATEWAY_KEY}'"
    assert scrub_secrets(text) == text  # no pattern knows this shape...
    scrubbed = scrub_secrets(text, [GATEWAY_KEY, None, ""])  # ...the configured value does
    assert GATEWAY_KEY not in scrubbed
    assert scrubbed == (
        "gateway refused [redacted:configured-secret]; again: '[redacted:configured-secret]'"
    )


def test_a_configured_key_of_a_known_shape_keeps_its_kind() -> None:
    assert scrub_secrets(f"got {OPENAI_KEY}", [OPENAI_KEY]) == "got [redacted:openai-key]"


def test_a_configured_value_too_short_to_be_matched_safely_is_left_to_the_patterns() -> None:
    assert scrub_secrets("the key abc was refused", ["abc"]) == "the key abc was refused"


@pytest.mark.parametrize(
    "text",
    [
        "contract_review.risk-classifier@1 failed after 3 tries: HTTP 503",
        "refund for order AB-104233 of customer C-99812",
        "see https://platform.openai.com/docs/guides/error-codes/api-errors?lang=python#401",
        "workflow review-123e4567-e89b-12d3-a456-426614174000 attempt 2",
        "(request id req_0123456789abcdef0123456789abcdef)",
        "msg_01XFDUDYJgAACzvnptvVoYEL and chatcmpl-8abcDEF123ghiJKL456mnoPQR789stu",
        "max_tokens=2048 is too large; check OPENAI_API_KEY (and OPENAI_BASE_URL)",
        "Basic information: the token expired, the password policy changed",
        "The model `gpt-4o-mini` does not exist or you do not have access to it.",
        "overloaded_error: Overloaded (retry in 3.5 seconds)",
        "a risk-assessment of the task-list",
    ],
)
def test_ordinary_error_text_is_left_alone(text: str) -> None:
    assert scrub_secrets(text) == text


def test_a_sha256_digest_inside_a_provider_error_is_scrubbed_like_any_hex_key() -> None:
    # Documented decision: a 64-hex run in an error text cannot be told from a hex key.
    digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert scrub_secrets(f"prompt {digest} rejected") == "prompt [redacted:hex-secret] rejected"


def test_details_are_scrubbed_in_every_string_they_hold() -> None:
    details = {"provider": "openai", "status": 401, "body": [f"echo {OPENAI_KEY}", 3]}
    assert scrub_value(details, [OPENAI_KEY]) == {
        "provider": "openai",
        "status": 401,
        "body": ["echo [redacted:openai-key]", 3],
    }


# --- the providers' own errors ----------------------------------------------------------

REQUEST = ModelRequest(
    system="s",
    prompt="p",
    output_schema={"type": "object"},
    schema_name="a",
    timeout_seconds=5,
    contract="risk-classifier@1",
)


@pytest.mark.allow_model_requests
@pytest.mark.parametrize("wire", ["openai", "anthropic", "gateway"])
async def test_a_provider_error_echoing_the_key_carries_neither_key_nor_raw_cause(
    wire: str,
) -> None:
    key = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY, "gateway": GATEWAY_KEY}[wire]
    with FakeModelServer() as server:
        server.script(Reply.error(401, echo(key)))
        provider = provider_for(wire, server, key)
        try:
            with pytest.raises(ProviderPermanentError) as caught:
                await provider.complete(REQUEST)
        finally:
            await close_provider(provider)
    assert server.requests[0].api_key == key  # the key really was sent, and echoed
    error = caught.value
    assert "[redacted:" in str(error) and "HTTP 401" in str(error)
    assert not leaks(str(error), key)
    assert error.__cause__ is None and error.__suppress_context__


# --- the activity's error translation -----------------------------------------------------


class KeyedFailingProvider(FailingProvider):
    """Raises ``error`` on every call; configured with ``key``, like the SDK providers."""

    def __init__(self, error: Exception, key: str) -> None:
        super().__init__(error)
        self.secret_values = (key,)


async def test_the_activity_scrubs_a_provider_error_with_the_workers_configured_key() -> None:
    error = ProviderRetryableError(
        f"gateway returned HTTP 503: {echo(GATEWAY_KEY)}", provider="openai", status=503
    )
    raised = await failure(KeyedFailingProvider(error, GATEWAY_KEY), request())
    assert raised.type == "ProviderRetryableError" and not raised.non_retryable
    assert "HTTP 503" in raised.message and "[redacted:configured-secret]" in raised.message
    assert not leaks(raised.message, GATEWAY_KEY)
    assert raised.__cause__ is None and raised.__suppress_context__


async def test_an_unexpected_provider_exception_is_scrubbed_and_still_retried() -> None:
    bug = RuntimeError(f"client blew up with headers {{'Authorization': 'Bearer {OPENAI_KEY}'}}")
    raised = await failure(FailingProvider(bug), request())
    assert raised.type == "RuntimeError" and not raised.non_retryable
    assert "client blew up" in raised.message and not leaks(raised.message, OPENAI_KEY)
    assert raised.__cause__ is None and raised.__suppress_context__


async def test_a_provider_raising_a_temporal_error_keeps_its_verdict_without_the_key() -> None:
    refusal = ApplicationError(
        f"refused {ANTHROPIC_KEY}",
        {"echo": ANTHROPIC_KEY},
        type="GatewayRefused",
        non_retryable=True,
    )
    raised = await failure(FailingProvider(refusal), request())
    assert (raised.type, raised.non_retryable) == ("GatewayRefused", True)
    assert raised.message == "refused [redacted:anthropic-key]"
    assert list(raised.details) == [{"echo": "[redacted:anthropic-key]"}]


# --- end to end: history, ledger, logs, spans ------------------------------------------


@pytest.mark.allow_model_requests
@pytest.mark.parametrize("wire", ["openai", "anthropic", "gateway"])
async def test_a_key_echoed_by_a_refusing_provider_is_stored_nowhere(
    ts_env: WorkflowEnvironment, wire: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY, "gateway": GATEWAY_KEY}[wire]
    caplog.set_level(logging.DEBUG, logger="temporalio")
    caplog.set_level(logging.DEBUG, logger="keel")
    exporter = InMemorySpanExporter()
    settings = offline_settings()
    client = await connect(
        settings,
        address=ts_env.client.service_client.config.target_host,
        interceptors=tracing_interceptors(settings, exporter=exporter),
    )
    with FakeModelServer() as server:
        server.script(Reply.error(401, echo(key)))
        provider = provider_for(wire, server, key)
        try:
            async with keel_worker(client, provider=provider) as tq:
                handle = await start_review(client, tq, "low", prefix="leaky-key")
                await wait_for_gate(handle, "risk-classification")
                queried = await ledger_of(handle)
                await decide(
                    handle, review("risk-classification", "reject", "legal.sam", comment="no model")
                )
                result = await handle.result()
        finally:
            await close_provider(provider)
        assert server.requests[0].api_key == key  # the provider did get and echo the key

    failed = [e for e in result.ledger if isinstance(e, AgentCallFailed)]
    assert len(failed) == 1 and "[redacted:" in failed[0].message
    assert [e for e in result.ledger if isinstance(e, Escalated)]
    assert verify_chain(result.ledger).ok  # the ledger's own hashes are intact

    history = history_text(await handle.fetch_history())
    ledger = json.dumps([e.model_dump(mode="json") for e in [*queried, *result.ledger]])
    logs = log_text(caplog)
    spans = span_text(exporter.get_finished_spans())
    places = {"history": history, "ledger": ledger, "logs": logs, "spans": spans}
    # Each place really holds the failure (so the scan looks where the key would be)...
    assert "[redacted:" in history and "[redacted:" in ledger
    assert "Completing activity as failed" in logs and "[redacted:" in logs
    assert "RunActivity:keel.agent_node" in spans and "[redacted:" in spans
    # ...and none holds the key, whole or in part.
    assert [place for place, text in places.items() if leaks(text, key)] == []


async def test_a_run_failed_by_a_refused_key_records_no_key_in_node_failed(
    ts_env: WorkflowEnvironment,
) -> None:
    refusing = Refusing(
        ProviderPermanentError(
            f"OpenAI rejected the call with HTTP 401: {echo(GATEWAY_KEY)}",
            provider="openai",
            status=401,
        )
    )
    refusing.secret_values = (GATEWAY_KEY,)  # type: ignore[attr-defined]
    async with probe_worker(ts_env.client, provider=refusing) as tq:
        handle = await start_probe(ts_env.client, tq, WITH_DEFAULT)
        failure = await failure_of(handle)
        ledger = await ledger_of(handle)
    node_failed = assert_failed_visibly(ledger, "provider-auth")
    assert isinstance(node_failed, NodeFailed) and "[redacted:" in node_failed.reason
    history = history_text(await handle.fetch_history())
    stored = [failure.message, json.dumps(list(failure.details), default=str), history]
    stored.append(json.dumps([e.model_dump(mode="json") for e in ledger]))
    assert [text for text in stored if leaks(text, GATEWAY_KEY)] == []


class UnscrubbedNodes(AgentNodeActivities):
    """An agent-node activity of another build, which passes the provider's text on raw."""

    @activity.defn(name=AGENT_NODE_ACTIVITY)
    async def run_agent_node(self, request: AgentNodeRequest) -> AgentDecision:
        raise ApplicationError(
            f"OpenAI rejected the call with HTTP 401: {echo(OPENAI_KEY)}",
            {"provider": "openai", "status": 401},
            type="ProviderPermanentError",
            non_retryable=True,
        )


async def test_the_workflow_scrubs_what_it_records_even_from_an_unscrubbed_worker(
    ts_env: WorkflowEnvironment,
) -> None:
    task_queue = f"test-{uuid.uuid4()}"
    nodes = UnscrubbedNodes(OfflineProvider([]))
    async with build_worker(
        ts_env.client,
        offline_settings(),
        apps=resolve_apps(),
        task_queue=task_queue,
        nodes=nodes,
        workflows=[AgentNodeProbe],
    ):
        handle = await start_probe(ts_env.client, task_queue, WITH_DEFAULT)
        failure = await failure_of(handle)
        ledger = await ledger_of(handle)
    node_failed = assert_failed_visibly(ledger, "provider-auth")
    call_failed = ledger[-2]
    assert isinstance(call_failed, AgentCallFailed)
    assert "[redacted:openai-key]" in call_failed.message
    assert "[redacted:openai-key]" in node_failed.reason
    # The raw activity failure is in history (the workflow cannot unwrite it); nothing the
    # workflow itself wrote (its ledger, its own failure) repeats the key.
    kept = [failure.message, json.dumps(list(failure.details), default=str)]
    kept.append(json.dumps([e.model_dump(mode="json") for e in ledger]))
    assert [text for text in kept if leaks(text, OPENAI_KEY)] == []


# --- helpers ----------------------------------------------------------------------------


def echo(key: str) -> str:
    """A 401 body as careless as they come: the key whole, masked, and in a header echo."""
    masked = f"{key[:7]}{'*' * 20}{key[-4:]}"
    return (
        f"Incorrect API key provided: {key}. (seen as {masked}; "
        f"Authorization: Bearer {key}) You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )


def provider_for(wire: str, server: FakeModelServer, key: str) -> ModelProvider:
    if wire == "anthropic":
        return AnthropicProvider(
            "claude-sonnet-4-6", api_key=key, base_url=server.base_url_anthropic
        )
    return OpenAIProvider("gpt-4o-mini", api_key=key, base_url=server.base_url_openai)


def leaks(text: str, key: str) -> bool:
    """Whether ``text`` holds the key, its distinctive middle or its tail."""
    return any(part in text for part in (key, distinctive(key), key[-10:]))


def history_text(history: WorkflowHistory) -> str:
    """The history's JSON with every payload's bytes decoded next to it (they are base64)."""
    raw = history.to_json()
    decoded: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                if name == "data" and isinstance(value, str):
                    with contextlib.suppress(binascii.Error, ValueError):
                        decoded.append(base64.b64decode(value).decode("utf-8", "replace"))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(raw))
    return "\n".join([raw, *decoded])


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as a handler would print it, tracebacks and extras included."""
    handler = logging.StreamHandler()
    lines = [caplog.text]
    for record in caplog.records:
        lines.append(handler.format(record))
        lines.append(repr(record.__dict__))
    return "\n".join(lines)


def span_text(spans: tuple[ReadableSpan, ...]) -> str:
    """Names, attributes, events (exceptions) and statuses of every finished span."""
    parts: list[str] = []
    for span in spans:
        parts.append(span.name)
        parts.append(repr(dict(span.attributes or {})))
        parts.append(repr(span.status.description))
        for event in span.events:
            parts.append(f"{event.name} {dict(event.attributes or {})!r}")
    return "\n".join(parts)
