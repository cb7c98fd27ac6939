"""Anthropic Messages provider: structured output through a forced tool call."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anthropic
from anthropic.types import Message

from keel.activities.providers._http_errors import is_retryable_status, retry_after_seconds
from keel.activities.providers.base import ModelReply, ModelRequest
from keel.activities.providers.guard import check_model_requests_allowed
from keel.contracts.secrets import scrub_secrets
from keel.errors import (
    ProviderConfigError,
    ProviderError,
    ProviderPermanentError,
    ProviderRetryableError,
)

if TYPE_CHECKING:
    import httpx2

# Only a fallback: every call passes its own ``request.timeout_seconds``.
DEFAULT_TIMEOUT_SECONDS = 120.0
MAX_TOKENS = 2048


class AnthropicProvider:
    """Calls ``POST {base_url}/v1/messages`` forcing one tool whose input is the answer.

    Attributes:
        name: always ``"anthropic"``.
        model: the model name sent with every request.
    """

    name = "anthropic"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        base_url: str | None = None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        """Build the provider and its SDK client.

        Args:
            model: model name, e.g. ``claude-sonnet-4-5``.
            api_key: the Anthropic key.
            base_url: another endpoint (no ``/v1`` suffix); None for api.anthropic.com.
            http_client: an ``httpx2.AsyncClient`` to use; ``aclose()`` closes it too.

        Raises:
            ProviderConfigError: no key.
        """
        if not api_key:
            raise ProviderConfigError(
                "ANTHROPIC_API_KEY is not set: export it, or use KEEL_MODEL=offline"
            )
        self.model = model
        self.secret_values: tuple[str, ...] = (api_key,)
        """Values no error text may carry (scrubbed out along with anything key-shaped)."""
        # max_retries=0: Temporal's retry policy owns retries; SDK retries would hide
        # attempts from the workflow history and multiply the configured backoff.
        # An explicit api_key also stops the SDK from reading profiles or other env vars.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=DEFAULT_TIMEOUT_SECONDS,
            http_client=http_client,
        )

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Run one Messages call and return the forced tool's input as JSON text.

        Args:
            request: the rendered call.

        Returns:
            ``json.dumps`` of the first tool_use block's input; without one, the joined
            text blocks (downstream validation rejects them).

        Raises:
            ProviderRetryableError: 408/409/429/5xx/529, timeout, connection failure, or
                a response body that is not a message.
            ProviderPermanentError: authentication failure or an invalid request.
        """
        check_model_requests_allowed(self.name)  # keel.testing blocks real calls in tests
        try:
            message = await self._client.messages.create(
                model=self.model,
                max_tokens=MAX_TOKENS,
                system=request.system,
                messages=[{"role": "user", "content": request.prompt}],
                tools=[
                    {
                        "name": request.schema_name,
                        "description": "Return the answer",
                        "input_schema": dict(request.output_schema),
                    }
                ],
                tool_choice={"type": "tool", "name": request.schema_name},
                timeout=request.timeout_seconds,
            )
        except anthropic.APITimeoutError as exc:
            raise ProviderRetryableError(
                f"Anthropic call timed out after {request.timeout_seconds}s", provider=self.name
            ) from exc
        except anthropic.APIConnectionError as exc:
            cause = f" ({exc.__cause__})" if exc.__cause__ else ""
            where = self._scrub(f"{self._client.base_url}: {exc}{cause}")
            raise ProviderRetryableError(
                f"Cannot reach Anthropic at {where}", provider=self.name
            ) from None
        except anthropic.APIStatusError as exc:
            # from None: the SDK's exception text is the raw body, which may echo the key.
            raise self._status_error(exc) from None
        except (anthropic.APIResponseValidationError, json.JSONDecodeError) as exc:
            raise self._malformed(f"{type(exc).__name__}: {exc}") from None
        return self._reply(message)

    async def aclose(self) -> None:
        """Close the HTTP connections (including a given ``http_client``)."""
        await self._client.close()

    async def __aenter__(self) -> AnthropicProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _reply(self, message: Any) -> ModelReply:
        # A proxy or gateway can answer 200 with an HTML page; the SDK then returns a str.
        if not isinstance(message, Message):
            raise self._malformed(f"body is not a message: {str(message)[:200]!r}")
        try:
            blocks = list(message.content)
        except (AttributeError, TypeError) as exc:
            raise self._malformed("no content in the message") from exc
        tool_inputs = [block.input for block in blocks if block.type == "tool_use"]
        if tool_inputs:
            text = json.dumps(tool_inputs[0])
        else:
            text = "".join(block.text for block in blocks if block.type == "text")
        usage = getattr(message, "usage", None)
        return ModelReply(
            text=text,
            provider=self.name,
            model=getattr(message, "model", None) or self.model,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
        )

    def _malformed(self, detail: str) -> ProviderRetryableError:
        # A body the SDK cannot read is a server or proxy glitch, not our request's fault.
        return ProviderRetryableError(
            f"Anthropic returned a malformed HTTP response body ({self._scrub(detail)})",
            provider=self.name,
        )

    def _scrub(self, text: str) -> str:
        """``text`` without this provider's key or anything else key-shaped."""
        return scrub_secrets(text, self.secret_values)

    def _status_error(self, exc: anthropic.APIStatusError) -> ProviderError:
        status = exc.status_code
        detail = exc.api_message or exc.message
        detail = self._scrub(detail)
        if exc.request_id:
            detail += f" (request id {self._scrub(exc.request_id)})"
        if is_retryable_status(status):
            return ProviderRetryableError(
                f"Anthropic returned HTTP {status}: {detail}",
                provider=self.name,
                status=status,
                retry_after=retry_after_seconds(exc.response.headers),
            )
        if status in (401, 403):
            hint = "check ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL if you set it)"
        else:
            hint = f"check KEEL_MODEL (model {self.model!r}) and the request"
        return ProviderPermanentError(
            f"Anthropic rejected the call with HTTP {status}: {detail}; {hint}",
            provider=self.name,
            status=status,
        )
