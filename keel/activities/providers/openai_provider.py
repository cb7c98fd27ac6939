"""OpenAI Chat Completions provider (also any OpenAI-compatible server: vLLM, Ollama, ...)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import openai
from openai.types.chat import ChatCompletion

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
# The SDK refuses to build a client without a key; local OpenAI-compatible servers
# (vLLM, Ollama, llama.cpp) ignore the Authorization header, so any value works there.
_PLACEHOLDER_KEY = "keel-no-key"


class OpenAIProvider:
    """Calls ``POST {base_url}/chat/completions`` with a JSON-schema response format.

    Attributes:
        name: always ``"openai"``.
        model: the model name sent with every request.
    """

    name = "openai"

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
            model: model name, e.g. ``gpt-4o-mini``.
            api_key: the OpenAI key; may be None only when ``base_url`` is set.
            base_url: an OpenAI-compatible endpoint (``.../v1``); None for api.openai.com.
            http_client: an ``httpx2.AsyncClient`` to use; ``aclose()`` closes it too.

        Raises:
            ProviderConfigError: no key and no ``base_url``.
        """
        if not api_key:
            if not base_url:
                raise ProviderConfigError(
                    "OPENAI_API_KEY is not set: export it, point OPENAI_BASE_URL at an "
                    "OpenAI-compatible server, or use KEEL_MODEL=offline"
                )
            api_key = _PLACEHOLDER_KEY
        self.model = model
        self.secret_values: tuple[str, ...] = (api_key,) if api_key != _PLACEHOLDER_KEY else ()
        """Values no error text may carry (scrubbed out along with anything key-shaped)."""
        # max_retries=0: Temporal's retry policy owns retries; SDK retries would hide
        # attempts from the workflow history and multiply the configured backoff.
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=DEFAULT_TIMEOUT_SECONDS,
            http_client=http_client,
        )

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Run one chat completion and return the message content, unvalidated.

        Args:
            request: the rendered call.

        Returns:
            The reply text (``""`` if the message had no content) with token usage.

        Raises:
            ProviderRetryableError: 408/409/429/5xx, timeout, connection failure, or a
                response body that is not a chat completion.
            ProviderPermanentError: authentication failure or an invalid request.
        """
        check_model_requests_allowed(self.name)  # keel.testing blocks real calls in tests
        try:
            response = await self._client.chat.completions.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": request.system},
                    {"role": "user", "content": request.prompt},
                ],
                response_format={
                    "type": "json_schema",
                    "json_schema": {
                        "name": request.schema_name,
                        "schema": dict(request.output_schema),
                        # Non-strict: strict mode rejects common schema features
                        # (optional fields, formats); Keel validates the answer itself.
                        "strict": False,
                    },
                },
                timeout=request.timeout_seconds,
            )
        except openai.APITimeoutError as exc:
            raise ProviderRetryableError(
                f"OpenAI call timed out after {request.timeout_seconds}s", provider=self.name
            ) from exc
        except openai.APIConnectionError as exc:
            cause = f" ({exc.__cause__})" if exc.__cause__ else ""
            where = self._scrub(f"{self._client.base_url}: {exc}{cause}")
            raise ProviderRetryableError(
                f"Cannot reach OpenAI at {where}", provider=self.name
            ) from None
        except openai.APIStatusError as exc:
            # from None: the SDK's exception text is the raw body, which may echo the key.
            raise self._status_error(exc) from None
        except (openai.APIResponseValidationError, json.JSONDecodeError) as exc:
            raise self._malformed(f"{type(exc).__name__}: {exc}") from None
        return self._reply(response)

    async def aclose(self) -> None:
        """Close the HTTP connections (including a given ``http_client``)."""
        await self._client.close()

    async def __aenter__(self) -> OpenAIProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _reply(self, response: Any) -> ModelReply:
        # A proxy or gateway can answer 200 with an HTML page; the SDK then returns a str.
        if not isinstance(response, ChatCompletion):
            raise self._malformed(f"body is not a chat completion: {str(response)[:200]!r}")
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as exc:
            raise self._malformed("no choices[0].message in the completion") from exc
        usage = response.usage
        return ModelReply(
            text=content or "",
            provider=self.name,
            model=response.model or self.model,
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
        )

    def _malformed(self, detail: str) -> ProviderRetryableError:
        # A body the SDK cannot read is a server or proxy glitch, not our request's fault.
        return ProviderRetryableError(
            f"OpenAI returned a malformed HTTP response body ({self._scrub(detail)})",
            provider=self.name,
        )

    def _scrub(self, text: str) -> str:
        """``text`` without this provider's key or anything else key-shaped."""
        return scrub_secrets(text, self.secret_values)

    def _status_error(self, exc: openai.APIStatusError) -> ProviderError:
        status = exc.status_code
        detail = _server_message(exc)
        detail = self._scrub(detail)
        if exc.request_id:
            detail += f" (request id {self._scrub(exc.request_id)})"
        if is_retryable_status(status):
            return ProviderRetryableError(
                f"OpenAI returned HTTP {status}: {detail}",
                provider=self.name,
                status=status,
                retry_after=retry_after_seconds(exc.response.headers),
            )
        if status in (401, 403):
            hint = "check OPENAI_API_KEY (and OPENAI_BASE_URL if you use a compatible server)"
        else:
            hint = f"check KEEL_MODEL (model {self.model!r}) and the request"
        return ProviderPermanentError(
            f"OpenAI rejected the call with HTTP {status}: {detail}; {hint}",
            provider=self.name,
            status=status,
        )


def _server_message(exc: openai.APIStatusError) -> str:
    """The ``error.message`` the server sent, else the SDK's summary."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return exc.message
