"""The tool catalog: what a planner may ask for, and how each tool must be used."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keel.contracts.effects import UnknownOutcomePolicy
from keel.contracts.signing import Signature

TOOL_TASK_WORKFLOW = "KeelToolTask"
"""Workflow type of the child that runs one planned task (stable: histories outlive code)."""


def tool_activity_name(tool: str) -> str:
    """Activity name of ``tool`` (stable, shown in the Temporal UI)."""
    return f"keel.tool.{tool}"


class ToolSpec(BaseModel):
    """A tool the planner may propose.

    Attributes:
        side_effects: the tool changes something outside Keel; it runs through the
            side-effect record with an idempotency key.
        needs_approval: a task using it must have a human gate.
        requires_compensation: a task using it must declare a compensation.
        compensation_tools: tools allowed as its compensation.
        task_queue: queue of the worker that runs it; ``None`` means the workflow's own.
        unknown_outcome: what a side-effecting tool does when an attempt finds that an
            earlier one may have acted without recording it (``keel.contracts.effects``):
            ``lookup`` (ask the provider first), ``resend`` (the receiver deduplicates) or
            ``escalate`` (a person confirms; the default).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    side_effects: bool = False
    needs_approval: bool = False
    requires_compensation: bool = False
    compensation_tools: tuple[str, ...] = ()
    task_queue: str | None = None
    unknown_outcome: UnknownOutcomePolicy = "escalate"

    def describe(self) -> dict[str, Any]:
        """What a planner is told about the tool."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_model.model_json_schema(),
            "side_effects": self.side_effects,
            "needs_approval": self.needs_approval,
            "requires_compensation": self.requires_compensation,
            "compensation_tools": list(self.compensation_tools),
        }


class ToolCatalog:
    """Tools by name."""

    def __init__(self) -> None:
        self._tools: dict[str, ToolSpec] = {}

    def register(self, spec: ToolSpec) -> ToolSpec:
        """Add ``spec``; registering the same spec again is a no-op, a different one an error."""
        known = self._tools.get(spec.name)
        if known is not None and known != spec:
            raise ValueError(f"tool {spec.name!r} is already registered differently")
        self._tools[spec.name] = spec
        return spec

    def get(self, name: str) -> ToolSpec | None:
        """The tool called ``name``, if registered."""
        return self._tools.get(name)

    def names(self) -> list[str]:
        """Every registered tool name, sorted."""
        return sorted(self._tools)


CATALOG = ToolCatalog()
"""The process-wide catalog; scenario modules register their tools on import."""


class ToolCall(BaseModel):
    """Input of a tool activity."""

    tool: str
    input: dict[str, Any]
    idempotency_key: str
    """Derived from the workflow and the step, never from the attempt."""


class EffectReceipt(BaseModel):
    """What the side-effect record says about one effect."""

    idempotency_key: str
    provider_id: str
    replayed: bool
    """True when the effect had already been performed and was not performed again."""
    recorded: bool = True
    """False when the effect was performed but the record could not be updated (its
    database was down): the caller records it through the tool's ``record`` activity."""
    unknown_resolved_by: str | None = None
    """How an unknown outcome before this result was resolved: ``lookup`` (the provider
    was asked), ``resend`` (acted again; the receiver deduplicates) or ``person``."""


class ToolResult(BaseModel):
    """Output of a tool activity: the tool's output model, dumped, plus its effect receipt."""

    tool: str
    output: dict[str, Any]
    effect: EffectReceipt | None = None


class ToolTaskInput(BaseModel):
    """Input of the child workflow that runs one planned task."""

    parent_workflow_id: str
    round: int
    ref: str
    tool: str
    input: dict[str, Any]
    purpose: str = ""
    compensating: str | None = None
    """The task ref this run compensates, if it is a compensation."""
    timeout_seconds: float = Field(60.0, gt=0, le=3_600)
    """Start-to-close timeout of one tool activity attempt: how long a worker that died
    mid-call goes unnoticed before another retries it."""
    seal: Signature | None = None
    """The parent's signature over the rest of this input, its own ids and the child's id
    (``keel.workflows.sealed``): a task started by hand, or with an altered input, has none
    that holds and performs nothing."""
