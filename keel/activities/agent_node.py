"""The agent-node activity: render the prompt, make one model call, return it with provenance.

Parsing happens here (JSON text -> object); schema validation and the confidence gate
happen in workflow code, so a rejected answer costs no extra activity.

Every failure leaves as an ``ApplicationError`` whose ``type`` is the Keel error's class name
and whose first detail is ``{"provider", "status"}``: the workflow classifies it
(``classify_failure``) as a failure that is not the agent's, and says what to fix.

No secret leaves with it: message and details are scrubbed (``keel.contracts.secrets``) of
the worker's configured keys and of anything key-shaped, and the error is raised ``from
None``, so the provider's original exception (whose text may echo the key) is not in the
failure's cause chain, the worker's log line or the activity's span. The stack trace keeps
the provider's frames (code locations only, no exception text).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, FailureError

from keel.activities.providers import close_provider
from keel.activities.providers.base import ModelProvider, ModelRequest
from keel.contracts import REGISTRY, AgentDecision, AgentNodeRequest, ContractRegistry
from keel.contracts.agent_node import AGENT_NODE_ACTIVITY
from keel.contracts.secrets import scrub_secrets, scrub_value
from keel.errors import KeelUserError, ProviderError, ProviderRetryableError

MAX_RAW_RESPONSE_CHARS = 32_000
"""Longer answers are cut in history (the parsed output is kept whole when it parsed)."""
T = TypeVar("T")
QUICK_RETRIES = 2
"""In-activity retries of a provider blip before Temporal's retry policy takes over."""


class AgentNodeActivities:
    """Holds the provider; register ``run_agent_node`` on a worker."""

    def __init__(
        self,
        provider: ModelProvider,
        *,
        record_prompts: bool = False,
        registry: ContractRegistry = REGISTRY,
        fallback: Callable[[str], ModelProvider] | None = None,
    ) -> None:
        self.provider = provider
        self.record_prompts = record_prompts
        self.registry = registry
        self._fallback = fallback
        self._fallbacks: dict[str, ModelProvider] = {}

    def provider_for(self, model: str | None) -> ModelProvider:
        """The worker's provider, or the fallback named by a contract (built once)."""
        if model is None:
            return self.provider
        if model not in self._fallbacks:
            if self._fallback is None:
                raise ApplicationError(
                    f"this worker cannot build fallback model {model!r}",
                    type="ProviderConfigError",
                    non_retryable=True,
                )
            self._fallbacks[model] = self._fallback(model)
        return self._fallbacks[model]

    def secret_values(self) -> tuple[str, ...]:
        """The configured keys of every provider this worker holds: no error text keeps them."""
        providers = [self.provider, *self._fallbacks.values()]
        return tuple(v for p in providers for v in getattr(p, "secret_values", ()) if v)

    def _scrub(self, text: str) -> str:
        return scrub_secrets(text, self.secret_values())

    def _scrub_value(self, value: dict[str, Any]) -> dict[str, Any]:
        scrubbed: dict[str, Any] = scrub_value(value, self.secret_values())
        return scrubbed

    async def aclose(self) -> None:
        """Close the fallback providers this worker built."""
        for provider in self._fallbacks.values():
            await close_provider(provider)

    @activity.defn(name=AGENT_NODE_ACTIVITY)
    async def run_agent_node(self, request: AgentNodeRequest) -> AgentDecision:
        """One model call for one agent-node attempt."""
        try:
            contract = self.registry.get(request.contract)
        except KeelUserError as err:
            raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from err
        if contract.fingerprint != request.contract_fingerprint:
            raise ApplicationError(
                f"this worker's {contract.key} has fingerprint {contract.fingerprint[:12]}, "
                f"the workflow expects {request.contract_fingerprint[:12]}: deploy workers "
                "with the same contract code, or publish the change as a new version",
                type="ContractFingerprintMismatch",
                non_retryable=True,
            )
        prompt = contract.render_prompt(request.input, request.feedback)
        info = activity.info()
        started = time.perf_counter()
        try:
            provider = self.provider_for(request.model)
        except KeelUserError as err:
            raise ApplicationError(
                self._scrub(str(err)), type=type(err).__name__, non_retryable=True
            ) from None
        model_request = ModelRequest(
            system=contract.system_prompt,
            prompt=prompt,
            output_schema=contract.output_schema,
            schema_name=contract.schema_name,
            timeout_seconds=contract.time_budget.total_seconds() * 0.9,
            contract=contract.key,
            input=request.input,
            feedback=tuple(request.feedback),
            workflow_id=info.workflow_id or "",
            agent_attempt=request.attempt,
            activity_attempt=info.attempt,
        )
        calls = 0
        try:
            # Quick retries of blips the provider gave no guidance on (no Retry-After) are
            # this activity's: a few calls within a third of the time budget, no history
            # events. Temporal's retry policy owns the rest: Retry-After (next_retry_delay)
            # and failures that persist, durably and visibly.
            quick_until = time.monotonic() + contract.time_budget.total_seconds() / 3
            while True:
                calls += 1
                try:
                    reply = await _heartbeating(provider.complete(model_request))
                    break
                except Exception as err:
                    if not _blip(err) or calls > QUICK_RETRIES or time.monotonic() >= quick_until:
                        raise
                await asyncio.sleep(quick_retry_wait(calls))
        except ProviderError as err:
            retry_after = getattr(err, "retry_after", None)
            raise ApplicationError(
                self._scrub(str(err)),
                self._scrub_value({"provider": err.provider, "status": err.status}),
                type=type(err).__name__,
                non_retryable=not err.retryable,
                next_retry_delay=timedelta(seconds=retry_after) if retry_after else None,
            ).with_traceback(err.__traceback__) from None  # the chain would carry the raw text
        except KeelUserError as err:  # the provider cannot serve this call as configured
            raise ApplicationError(
                self._scrub(str(err)),
                {"provider": provider.name, "status": None},
                type=type(err).__name__,
                non_retryable=True,
            ).with_traceback(err.__traceback__) from None
        except ApplicationError as err:  # a provider that speaks Temporal: keep its verdict
            raise ApplicationError(
                self._scrub(err.message),
                *scrub_value(list(err.details), self.secret_values()),
                type=err.type,
                non_retryable=err.non_retryable,
                next_retry_delay=err.next_retry_delay,
                category=err.category,
            ).with_traceback(err.__traceback__) from None
        except FailureError:  # Temporal's own (cancellation, ...): not a provider's text
            raise
        except Exception as err:  # a provider bug: Temporal retries it, as it would unwrapped
            raise ApplicationError(
                self._scrub(str(err)),
                {"provider": provider.name, "status": None},
                type=type(err).__name__,
            ).with_traceback(err.__traceback__) from None
        latency_ms = (time.perf_counter() - started) * 1000
        text = _clean(reply.text)
        output, parse_error = _parse(text)
        return AgentDecision(
            contract=contract.key,
            contract_fingerprint=contract.fingerprint,
            provider=reply.provider,
            model=reply.model,
            prompt_sha256=hashlib.sha256(prompt.encode()).hexdigest(),
            prompt=prompt if self.record_prompts else None,
            raw_response=text[:MAX_RAW_RESPONSE_CHARS],
            output=output,
            parse_error=parse_error,
            confidence=_confidence(output),
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            latency_ms=round(latency_ms, 3),
            attempt=request.attempt,
            activity_attempt=info.attempt,
            provider_calls=calls,
        )


HEARTBEAT_EVERY_SECONDS = 2.0
"""How often a model call in flight tells Temporal its worker is alive (the SDK throttles);
the first heartbeat comes after one interval, so a call shorter than that sends none."""


def quick_retry_wait(calls: int) -> float:
    """Seconds to wait after the ``calls``-th call failed with a blip: 0.2, 0.4, 0.8, then
    1 s."""
    return min(1.0, 0.2 * 2.0 ** (calls - 1))


async def _heartbeating(call: Awaitable[T]) -> T:
    """Await ``call`` while heartbeating, so a worker that dies mid-call is noticed within
    the heartbeat timeout instead of the contract's whole time budget. A heartbeat is a
    request to the server: the first is sent after one interval (well inside the 10 s
    heartbeat timeout), so the short calls, most of them, send none, and cost one timer
    (the beating task starts only when the call outlasts the interval)."""
    beater: asyncio.Task[None] | None = None

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)

    def start() -> None:
        nonlocal beater
        beater = asyncio.create_task(beat())

    timer = asyncio.get_running_loop().call_later(HEARTBEAT_EVERY_SECONDS, start)
    try:
        return await call
    finally:
        timer.cancel()
        if beater is not None:
            beater.cancel()


def _blip(error: BaseException) -> bool:
    """A transient provider failure with no Retry-After: worth a quick retry in place."""
    return isinstance(error, ProviderRetryableError) and error.retry_after is None


def _parse(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object in ``text``, tolerating a Markdown code fence around it.

    Whatever a model sends, this returns: an answer Python cannot decode (nesting too
    deep, an integer too long, ...) is a parse error like any other, so the node retries
    it with feedback instead of failing the activity.
    """
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as err:
        return None, f"the answer is not valid JSON: {err.msg} at line {err.lineno} col {err.colno}"
    except (ValueError, RecursionError) as err:
        return None, f"the answer cannot be decoded: {type(err).__name__}: {str(err)[:200]}"
    if not isinstance(value, dict):
        return None, f"the answer is JSON but not an object (got {type(value).__name__})"
    cleaned: dict[str, Any] = _clean(value)
    return cleaned, None


def _confidence(output: dict[str, Any] | None) -> float | None:
    """The answer's self-reported confidence, when it is a finite number."""
    value = output.get("confidence") if output else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _clean(value: Any) -> Any:
    """``value`` with lone UTF-16 surrogates replaced, so it can always be encoded."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
