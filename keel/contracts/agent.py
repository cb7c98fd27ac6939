"""Agent-node contracts: what a model may be asked, what it must answer, and the budgets."""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel.contracts.gates import GateSpec
from keel.contracts.guardrails import GuardrailConfig, prompt_overhead_tokens


class RetryStrategy(StrEnum):
    """How an agent node re-enters after a rejected output."""

    FEEDBACK = "feedback"
    """Re-invoke with the failure reasons appended to the prompt (the default)."""
    PLAIN = "plain"
    """Re-invoke with the same prompt."""


class EscalateToGate(BaseModel):
    """When the retry budget is spent, ask a human to supply the output through a gate."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["escalate"] = "escalate"
    gate: GateSpec


class UseDefault(BaseModel):
    """When the retry budget is spent, take a deterministic default output."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["default"] = "default"
    output: dict[str, Any]
    reason: str


In = TypeVar("In", bound=BaseModel)
"""The input model of a contract."""
Out = TypeVar("Out", bound=BaseModel)
"""The output model of a contract: what ``AgentOutcome.output`` holds."""

SystemFailurePolicy = Literal["fail", "escalate"]


class AgentContract(BaseModel, Generic[In, Out]):
    """A registered, versioned, immutable agent-node contract.

    Generic in its input and output models: ``AgentContract(input_model=X, output_model=Y,
    ...)`` is an ``AgentContract[X, Y]``, and an agent node run under it settles on a ``Y``.

    The output model must have a ``confidence`` field (a float in [0, 1]): it is what
    the confidence threshold reads.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    version: int = Field(ge=1)
    description: str
    input_model: type[In]
    output_model: type[Out]
    system_prompt: str
    prompt_template: str
    """``string.Template`` text; ``$field`` names fields of the input model, ``$input_json``
    the whole input."""
    time_budget: timedelta = timedelta(seconds=60)
    """Start-to-close timeout of one model call."""
    confidence_threshold: float = Field(0.7, ge=0.0, le=1.0)
    max_attempts: int = Field(3, ge=1, le=10)
    """Agent attempts (schema or confidence failures) before ``on_exhausted``."""
    retry_strategy: RetryStrategy = RetryStrategy.FEEDBACK
    on_exhausted: EscalateToGate | UseDefault
    """What the node does when the agent's answers keep failing (schema, rule, confidence)."""
    on_system_failure: SystemFailurePolicy = "fail"
    """What the node does when the failure is not the agent's: an unknown contract, other
    contract code, a misconfigured provider, a refused key or request, or a provider still
    failing after its retry budget. ``fail`` (the default) fails the run, non-retryably, with
    a message that says what to fix; ``escalate`` opens the ``on_exhausted`` gate (it must be
    ``EscalateToGate``) with the reason and the fix in its context. Never the default output:
    that is a business answer, and this is not one."""
    provider_attempts: int = Field(5, ge=1)
    """Temporal activity attempts per agent attempt for transient provider errors."""
    fallback_models: tuple[str, ...] = ()
    """Model specs (``offline``, ``openai:<model>``, ``anthropic:<model>``) to try, in order,
    when the worker's model keeps failing after Temporal's retries."""
    guardrails: GuardrailConfig = GuardrailConfig()
    """Policies run in workflow code before every model call: prompt-injection check on the
    untrusted fields, PII scrubbing, the workflow's token budget."""

    if TYPE_CHECKING:
        # Spelled out so that type checkers infer ``In`` and ``Out`` from the models passed.
        def __init__(
            self,
            *,
            name: str,
            version: int,
            description: str,
            input_model: type[In],
            output_model: type[Out],
            system_prompt: str,
            prompt_template: str,
            on_exhausted: EscalateToGate | UseDefault,
            time_budget: timedelta = ...,
            confidence_threshold: float = ...,
            max_attempts: int = ...,
            retry_strategy: RetryStrategy = ...,
            on_system_failure: SystemFailurePolicy = ...,
            provider_attempts: int = ...,
            fallback_models: tuple[str, ...] = ...,
            guardrails: GuardrailConfig = ...,
        ) -> None: ...

    @model_validator(mode="after")
    def _check(self) -> AgentContract[In, Out]:
        if "confidence" not in self.output_model.model_fields:
            raise ValueError(f"{self.key}: output model needs a 'confidence' field")
        template = string.Template(self.prompt_template)
        if not template.is_valid():
            raise ValueError(f"{self.key}: prompt template has a stray '$' (write '$$' for '$')")
        fields = set(self.input_model.model_fields) | {"input_json"}
        for name in template.get_identifiers():
            if name not in fields:
                raise ValueError(f"{self.key}: prompt names unknown field ${name}")
        if isinstance(self.on_exhausted, UseDefault):
            self.output_model.model_validate(self.on_exhausted.output)
            if self.on_system_failure == "escalate":
                raise ValueError(
                    f"{self.key}: on_system_failure='escalate' needs a gate: set on_exhausted "
                    "to EscalateToGate, or let system failures fail the run"
                )
        fields = set(self.input_model.model_fields)
        unknown = {f.split(".", 1)[0] for f in self.guardrails.untrusted_fields} - fields
        if unknown:
            raise ValueError(f"{self.key}: untrusted_fields names unknown fields {sorted(unknown)}")
        return self

    @property
    def key(self) -> str:
        """``name@version``: the registry key recorded with every decision."""
        return f"{self.name}@{self.version}"

    @cached_property
    def output_schema(self) -> dict[str, Any]:
        """JSON schema of the output model (computed once: contracts are immutable)."""
        return self.output_model.model_json_schema()

    @cached_property
    def prompt_overhead_tokens(self) -> int:
        """Estimated tokens of the prompt around the input (system prompt, template, output
        schema), computed once; the guardrails add the input and any feedback."""
        return prompt_overhead_tokens(self.system_prompt, self.prompt_template, self.output_schema)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the contract's content and schemas (computed once)."""
        content = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "system_prompt": self.system_prompt,
            "prompt_template": self.prompt_template,
            "time_budget_s": self.time_budget.total_seconds(),
            "confidence_threshold": self.confidence_threshold,
            "max_attempts": self.max_attempts,
            "retry_strategy": self.retry_strategy.value,
            "provider_attempts": self.provider_attempts,
            "fallback_models": list(self.fallback_models),
            "guardrails": self.guardrails.model_dump(mode="json"),
            "on_exhausted": self.on_exhausted.model_dump(mode="json"),
            "input_schema": self.input_model.model_json_schema(),
            "output_schema": self.output_schema,
        }
        if self.on_system_failure != "fail":
            # Only when set: contracts published before the field keep their fingerprint,
            # so runs in flight across the upgrade do not fail with a mismatch.
            content["on_system_failure"] = self.on_system_failure
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()

    @property
    def schema_name(self) -> str:
        """Identifier for the output schema in provider requests."""
        return self.name.replace("-", "_") + f"_v{self.version}"

    def render_prompt(self, node_input: Mapping[str, Any], feedback: Sequence[str]) -> str:
        """The user prompt for one attempt: template, then any feedback to act on."""
        values = {k: _prompt_value(v) for k, v in node_input.items()}
        values["input_json"] = canonical_json(dict(node_input))
        text = string.Template(self.prompt_template).substitute(values)
        if feedback:
            lines = "\n".join(f"- {item}" for item in feedback)
            text += f"\n\nYour previous answer was not accepted. Address this:\n{lines}"
        schema = canonical_json(self.output_schema)
        return f"{text}\n\nAnswer with one JSON object that follows this schema:\n{schema}"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the form Keel hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _prompt_value(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)
