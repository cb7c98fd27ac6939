"""The OpenAI and Anthropic providers, driving the real SDK clients against a fake server."""

from __future__ import annotations

import email.utils
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from keel.activities.providers._http_errors import retry_after_seconds
from keel.activities.providers.anthropic_provider import AnthropicProvider
from keel.activities.providers.base import ModelRequest
from keel.activities.providers.openai_provider import OpenAIProvider
from keel.errors import ProviderConfigError, ProviderPermanentError, ProviderRetryableError
from tests.fake_model_server import FakeModelServer, Reply

# These tests drive the real SDK clients against a local fake server.
pytestmark = pytest.mark.allow_model_requests

SCHEMA = {"type": "object", "properties": {"greeting": {"type": "string"}}}
REQUEST = ModelRequest(
    system="You are terse.",
    prompt="Say hi to Ada.",
    output_schema=SCHEMA,
    schema_name="greeting",
    timeout_seconds=5.0,
    contract="greet@1",
)
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-6"}
KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
Provider = OpenAIProvider | AnthropicProvider


def make_provider(wire: str, root_url: str) -> Provider:
    """A provider with key ``sk-test`` for the server at ``root_url`` (no ``/v1``)."""
    if wire == "openai":
        return OpenAIProvider(MODELS[wire], api_key="sk-test", base_url=f"{root_url}/v1")
    return AnthropicProvider(MODELS[wire], api_key="sk-test", base_url=root_url)


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as fake:
        yield fake


@pytest.fixture(params=["openai", "anthropic"])
async def provider(
    request: pytest.FixtureRequest, server: FakeModelServer
) -> AsyncIterator[Provider]:
    built = make_provider(request.param, server.base_url_anthropic)
    yield built
    await built.aclose()


async def test_success_returns_text_tokens_model_and_sends_schema_model_key(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(Reply.json({"greeting": "hi Ada"}, model="served-model-1", usage=(11, 3)))

    reply = await provider.complete(REQUEST)

    assert json.loads(reply.text) == {"greeting": "hi Ada"}
    assert (reply.provider, reply.model) == (provider.name, "served-model-1")
    assert (reply.input_tokens, reply.output_tokens) == (11, 3)
    [sent] = server.requests
    assert sent.wire == provider.name
    assert sent.model == MODELS[provider.name]
    assert sent.schema == SCHEMA
    assert sent.body["messages"][-1] == {"role": "user", "content": "Say hi to Ada."}
    assert sent.api_key == "sk-test"
    if provider.name == "openai":
        assert sent.headers["authorization"] == "Bearer sk-test"
        assert sent.body["messages"][0] == {"role": "system", "content": "You are terse."}
        assert sent.body["response_format"]["json_schema"]["name"] == "greeting"
        assert sent.body["response_format"]["json_schema"]["strict"] is False
    else:
        assert "anthropic-version" in sent.headers  # SDK 2.x sends the key as a Bearer token
        assert sent.body["system"] == "You are terse."
        assert sent.body["tool_choice"] == {"type": "tool", "name": "greeting"}
        assert sent.body["max_tokens"] == 2048


async def test_default_responder_answers_when_script_is_empty(
    provider: Provider, server: FakeModelServer
) -> None:
    server.responder = lambda body: {"greeting": body["messages"][-1]["content"].upper()}

    reply = await provider.complete(REQUEST)

    assert json.loads(reply.text) == {"greeting": "SAY HI TO ADA."}
    assert reply.model == MODELS[provider.name]  # the fake echoes the requested model
    assert reply.input_tokens and reply.output_tokens


async def test_content_that_is_not_json_is_returned_untouched(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(Reply.content("not json text"))

    reply = await provider.complete(REQUEST)

    assert reply.text == "not json text"


@pytest.mark.parametrize(
    "body, content_type",
    [
        ('{"id": "trunc', "application/json"),
        ("<html>502 Bad Gateway</html>", "text/html"),
        ('{"unexpected": "shape"}', "application/json"),
    ],
    ids=["truncated-json", "html-page", "json-of-another-shape"],
)
async def test_malformed_http_body_is_retryable(
    provider: Provider, server: FakeModelServer, body: str, content_type: str
) -> None:
    server.script(Reply.malformed_body(body, content_type=content_type))

    with pytest.raises(ProviderRetryableError, match="malformed") as caught:
        await provider.complete(REQUEST)

    assert caught.value.provider == provider.name
    assert server.calls == 1


async def test_rate_limit_is_retryable_with_retry_after(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(Reply.error(429, retry_after=2))

    with pytest.raises(ProviderRetryableError) as caught:
        await provider.complete(REQUEST)

    assert (caught.value.status, caught.value.retry_after) == (429, 2.0)
    assert "req_fake_1" in str(caught.value)  # the request id helps support tickets
    assert server.calls == 1


@pytest.mark.parametrize("status", [500, 503, 529, 408, 409])
async def test_server_errors_are_retryable(
    provider: Provider, server: FakeModelServer, status: int
) -> None:
    server.script(Reply.error(status))

    with pytest.raises(ProviderRetryableError) as caught:
        await provider.complete(REQUEST)

    assert (caught.value.status, caught.value.retry_after) == (status, None)
    assert server.calls == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_errors_are_permanent_and_name_the_key(
    provider: Provider, server: FakeModelServer, status: int
) -> None:
    server.script(Reply.error(status))

    with pytest.raises(ProviderPermanentError, match=KEY_VARS[provider.name]) as caught:
        await provider.complete(REQUEST)

    assert caught.value.status == status
    assert server.calls == 1


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_invalid_requests_are_permanent_with_server_message(
    provider: Provider, server: FakeModelServer, status: int
) -> None:
    server.script(Reply.error(status, "schema is not valid here"))

    with pytest.raises(ProviderPermanentError, match="schema is not valid here") as caught:
        await provider.complete(REQUEST)

    assert caught.value.status == status
    assert "KEEL_MODEL" in str(caught.value)
    assert server.calls == 1


async def test_timeout_is_retryable(provider: Provider, server: FakeModelServer) -> None:
    server.script(Reply.json({"greeting": "late"}).delayed(3))
    request = ModelRequest(**{**REQUEST.__dict__, "timeout_seconds": 0.5})

    started = time.monotonic()
    with pytest.raises(ProviderRetryableError, match="timed out"):
        await provider.complete(request)

    assert time.monotonic() - started < 2.5
    assert server.calls == 1


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_unreachable_server_is_retryable(wire: str) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = make_provider(wire, f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(ProviderRetryableError, match="Cannot reach"):
            await provider.complete(REQUEST)
    finally:
        await provider.aclose()


async def test_exactly_one_http_request_per_call_even_on_errors(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(Reply.error(429, retry_after=0), Reply.error(500), Reply.error(529))

    for expected_calls in (1, 2, 3):
        with pytest.raises(ProviderRetryableError):
            await provider.complete(REQUEST)
        assert server.calls == expected_calls
    await provider.complete(REQUEST)  # script empty: the default responder answers

    assert server.calls == 4


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_missing_api_key_is_a_config_error(wire: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VARS[wire], "sk-from-env-must-be-ignored")
    provider_class = OpenAIProvider if wire == "openai" else AnthropicProvider
    with pytest.raises(ProviderConfigError, match=KEY_VARS[wire]) as caught:
        provider_class(MODELS[wire], api_key=None)
    assert "KEEL_MODEL=offline" in str(caught.value)


async def test_openai_compatible_server_needs_no_key(
    server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.script(Reply.json({"greeting": "hi"}))
    async with OpenAIProvider("llama3", api_key=None, base_url=server.base_url_openai) as local:
        reply = await local.complete(REQUEST)

    assert json.loads(reply.text) == {"greeting": "hi"}
    assert server.requests[0].headers["authorization"].startswith("Bearer ")


def test_retry_after_parsing() -> None:
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "1.5", "retry-after-ms": "250"}) == 0.25
    assert 25 < (retry_after_seconds({"retry-after": soon}) or 0) <= 30
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "-3"}) is None
    assert retry_after_seconds({}) is None
    assert retry_after_seconds(None) is None
