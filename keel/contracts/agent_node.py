"""Input and output of the agent-node activity (one model call)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AGENT_NODE_ACTIVITY = "keel.agent_node"
"""Activity name of one agent-node attempt; stable, because histories outlive code."""


class AgentNodeRequest(BaseModel):
    """One attempt of an agent node, as the workflow asks for it."""

    contract: str
    """``name@version``."""
    contract_fingerprint: str
    """The fingerprint the workflow expects; a worker with other contract code refuses."""
    node: str
    input: dict[str, Any]
    feedback: list[str] = Field(default_factory=list)
    attempt: int = Field(ge=1)
    model: str | None = None
    """A fallback model spec from the contract; ``None`` means the worker's own model."""


class AgentDecision(BaseModel):
    """A model's answer with its provenance. ``output`` is parsed JSON, not yet validated."""

    contract: str
    contract_fingerprint: str
    provider: str
    model: str
    prompt_sha256: str
    prompt: str | None = None
    """Only when KEEL_RECORD_PROMPTS is on: prompts can hold data that must not be in history."""
    raw_response: str
    output: dict[str, Any] | None = None
    parse_error: str | None = None
    confidence: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float
    attempt: int
    activity_attempt: int
    provider_calls: int = 1
    """Calls to the provider in this activity attempt (quick in-activity retries of blips)."""


SystemProblem = Literal[
    "unknown-contract",
    "contract-mismatch",
    "provider-config",
    "provider-auth",
    "invalid-request",
    "provider-unavailable",
    "worker-error",
]
"""Why a model call failed when the failure is not the agent's answer."""

AUTH_STATUSES = (401, 403)
KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server)",
    "anthropic": "ANTHROPIC_API_KEY",
}


class SystemFailure(BaseModel):
    """A model call that failed for a reason that is not the agent's: what failed, and
    what a person must change so that it does not fail again."""

    model_config = ConfigDict(frozen=True)

    problem: SystemProblem
    reason: str
    """What failed, in a sentence."""
    fix: str
    """What to change."""
    error_type: str
    message: str
    """The error as the activity reported it."""
    status: int | None = None
    provider: str | None = None

    def explain(self, node: str) -> str:
        """The one message a failed run carries: ``agent node N: reason; fix``."""
        return f"agent node {node}: {self.reason}; {self.fix}"


def classify_failure(
    error_type: str,
    message: str,
    *,
    contract: str,
    task_queue: str,
    status: int | None = None,
    provider: str | None = None,
    attempts: int | None = None,
) -> SystemFailure:
    """Name a failed model call's problem and its fix.

    Retryable failures reach here only once Temporal's retry budget is spent (and the
    contract's fallback models with it): they are not answers either.
    """
    where = f"the worker that ran the call (task queue {task_queue})"
    if error_type == "ContractNotFoundError":
        problem: SystemProblem = "unknown-contract"
        reason = f"contract {contract} is not registered on {where}"
        fix = (
            "every worker of a task queue must serve the same apps: run the app that "
            f"registers {contract} on every worker polling {task_queue} (keel worker --app, "
            "KEEL_APPS), or give the other apps their own task queue"
        )
    elif error_type == "ContractFingerprintMismatch":
        problem = "contract-mismatch"
        reason = f"{where} has other code for contract {contract} ({message})"
        fix = (
            "deploy every worker with the same contract code, or publish the change as a new "
            "contract version"
        )
    elif error_type == "ProviderConfigError":
        problem = "provider-config"
        reason = f"the model provider of {where} is misconfigured: {message}"
        fix = (
            "fix the worker's model settings (KEEL_MODEL, the provider's API key, the apps' "
            "offline rules) and start the workflow again"
        )
    elif error_type == "ProviderAuthError" or (
        error_type == "ProviderPermanentError" and status in AUTH_STATUSES
    ):
        problem = "provider-auth"
        refused = "API key" if status != 403 else "API key's access to the model"
        reason = f"the provider refused the {refused} ({status or 'auth'}): {message}"
        variable = KEY_VARIABLES.get(provider or "", "the provider's API key")
        fix = f"set {variable} on the worker to a valid key with access to the model"
    elif error_type == "ProviderPermanentError":
        problem = "invalid-request"
        reason = f"the provider refused the request ({status or 'permanent error'}): {message}"
        fix = (
            "check that KEEL_MODEL names a model the provider serves and that it accepts the "
            f"output schema of {contract}"
        )
    elif error_type in ("ProviderRetryableError", "TimeoutError"):
        problem = "provider-unavailable"
        spent = f" after {attempts} tries" if attempts else ""
        reason = f"the model provider kept failing{spent}: {message}"
        fix = (
            "check the provider's status and the worker's network; give the contract "
            "fallback_models or more provider_attempts to ride out an outage"
        )
    else:
        problem = "worker-error"
        spent = f" after {attempts} tries" if attempts else ""
        reason = f"the agent-node activity failed{spent} with {error_type}: {message}"
        fix = "see the worker's log for the traceback"
    return SystemFailure(
        problem=problem,
        reason=reason,
        fix=fix,
        error_type=error_type,
        message=message,
        status=status,
        provider=provider,
    )
