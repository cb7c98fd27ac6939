"""Plans proposed by a planner agent, the policy they must satisfy, and their validation.

Validation is pure and deterministic: the plan executor runs it in workflow code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from keel.contracts.gates import GateSpec
from keel.contracts.tools import ToolCatalog

_POLICY_GATE_FIELDS = {
    "reviewers": "reviewers",
    "escalation_reviewers": "reviewers",
    "sla": "a gate's SLA",
    "escalation_sla": "a gate's SLA",
    "on_expiry": "what an unanswered gate does",
}


class TaskGate(BaseModel):
    """A human gate before a task runs: the plan says only what it asks.

    Who may approve, the SLAs and the escalation come from the ``PlanPolicy``
    (``PlanPolicy.gate_spec``), never from the plan: a planner that reads untrusted text must
    not be able to pick a reviewer it controls. A gate naming any of them is refused.
    """

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _no_policy_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, what in _POLICY_GATE_FIELDS.items():
                if key in data:
                    raise ValueError(
                        f"plans may not choose {what} ({key!r}): the policy names them"
                    )
        return data


class Compensation(BaseModel):
    """A catalog tool and input that undoes a task."""

    model_config = ConfigDict(extra="forbid")

    tool: str
    input: dict[str, Any]


class PlannedTask(BaseModel):
    """One task of a plan: a tool call with its dependencies, gate and compensation."""

    model_config = ConfigDict(extra="forbid")

    ref: str = Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")
    tool: str
    input: dict[str, Any]
    depends_on: list[str] = Field(default_factory=list, max_length=50)
    gate: TaskGate | None = None
    compensation: Compensation | None = None
    purpose: str = Field("", max_length=300)


class PlannerOutput(BaseModel):
    """What a planner answers each round: new tasks, or that it is done.

    A compensation runs without a gate of its own: approving a task approves its undo.
    """

    model_config = ConfigDict(extra="forbid")

    done: bool
    conclusion: Literal["mitigated", "unresolved"] | None = None
    """With ``done``: whether the problem is mitigated, or still needs a human."""
    summary: str = Field(min_length=1, max_length=4_000)
    tasks: list[PlannedTask] = Field(default_factory=list, max_length=1_000)
    confidence: float = Field(ge=0.0, le=1.0)


class PlanPolicy(BaseModel):
    """Limits a plan must respect."""

    model_config = ConfigDict(frozen=True)

    max_tasks_per_plan: int = Field(8, ge=1)
    max_fanout_width: int = Field(4, ge=1)
    max_rounds: int = Field(5, ge=1)
    max_plan_rejections: int = Field(2, ge=0)
    """Re-plans allowed per round after a rejected plan."""
    allowed_tools: tuple[str, ...]
    side_effects_require_gate: bool = True
    gate_exempt_tools: tuple[str, ...] = ()
    """Side-effecting tools that may run without a gate (e.g. a note on the incident itself)."""
    gate_reviewers: tuple[str, ...] = ()
    """Who may approve a planned task's gate (the plan cannot choose); with ``gate_roles``
    empty too, any authenticated reviewer may."""
    gate_roles: tuple[str, ...] = ()
    """Roles whose holders may approve a planned task's gate."""
    tool_gate_reviewers: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Tool name -> who may approve its tasks' gates, instead of ``gate_reviewers``."""
    gate_escalation_reviewers: tuple[str, ...] = ()
    """Who is added when a planned gate's SLA passes; empty means no escalation."""
    gate_sla: timedelta = timedelta(minutes=30)
    gate_escalation_sla: timedelta = timedelta(hours=2)

    def reviewers_for(self, tool: str) -> tuple[str, ...]:
        """Who may approve a gate before a task of ``tool``."""
        return self.tool_gate_reviewers.get(tool, self.gate_reviewers)

    def gate_spec(self, task: PlannedTask) -> GateSpec:
        """The gate before ``task``: its title from the plan, everything else from policy.

        A reviewer may modify any field of the task's input (checked against the tool's
        input model when the review arrives).
        """
        if task.gate is None:
            raise ValueError(f"task {task.ref!r} has no gate")
        reviewers = self.reviewers_for(task.tool)
        return GateSpec(
            name=f"approve-{task.ref}",
            title=task.gate.title,
            reviewers=reviewers,
            roles=self.gate_roles,
            sla=self.gate_sla,
            escalation_reviewers=tuple(
                r for r in self.gate_escalation_reviewers if r not in reviewers
            ),
            escalation_sla=self.gate_escalation_sla,
            on_expiry="reject",
            modifiable_fields=tuple(task.input),
        )


def validate_plan(plan: PlannerOutput, catalog: ToolCatalog, policy: PlanPolicy) -> list[str]:
    """Every reason ``plan`` cannot run; empty when it can."""
    tasks = plan.tasks
    reasons: list[str] = []
    if len(tasks) > policy.max_tasks_per_plan:
        reasons.append(
            f"the plan has {len(tasks)} tasks; the policy allows at most "
            f"{policy.max_tasks_per_plan}"
        )
    refs = [t.ref for t in tasks]
    for ref in sorted(r for r, n in Counter(refs).items() if n > 1):
        reasons.append(f"task ref {ref!r} is used more than once")
    known = set(refs)
    for task in tasks:
        reasons += _task_problems(task, known, catalog, policy)
    if len(known) < len(refs):
        return reasons  # levels need unique refs
    # Self-dependencies are reported above; do not report them again as cycles.
    graph = [
        t.model_copy(update={"depends_on": [d for d in t.depends_on if d != t.ref]}) for t in tasks
    ]
    levels = execution_levels(graph)
    if levels is None:
        return [*reasons, f"the dependencies form a cycle: {' -> '.join(_find_cycle(graph))}"]
    widest = max((len(level) for level in levels), default=0)
    if widest > policy.max_fanout_width:
        reasons.append(
            f"{widest} tasks would run in parallel; the policy allows at most "
            f"{policy.max_fanout_width}"
        )
    return reasons


def _task_problems(
    task: PlannedTask, known: set[str], catalog: ToolCatalog, policy: PlanPolicy
) -> list[str]:
    name = f"task {task.ref!r}"
    problems: list[str] = []
    for dep in task.depends_on:
        if dep == task.ref:
            problems.append(f"{name} depends on itself")
        elif dep not in known:
            problems.append(f"{name} depends on missing task {dep!r}")
    spec = catalog.get(task.tool)
    if spec is None:
        catalog_names = ", ".join(catalog.names())
        return [*problems, f"{name}: unknown tool {task.tool!r} (catalog: {catalog_names})"]
    if task.tool not in policy.allowed_tools:
        allowed = ", ".join(policy.allowed_tools)
        return [*problems, f"{name}: tool {task.tool!r} is not allowed here (allowed: {allowed})"]
    problems += [f"{name}: input.{p}" for p in _schema_problems(spec.input_model, task.input)]
    needs_gate = spec.needs_approval or (
        spec.side_effects
        and policy.side_effects_require_gate
        and task.tool not in policy.gate_exempt_tools
    )
    if needs_gate and task.gate is None:
        problems.append(f"{name}: tool {task.tool!r} has side effects and needs a human gate")
    if spec.requires_compensation and task.compensation is None:
        problems.append(f"{name}: tool {task.tool!r} must declare a compensation")
    if task.compensation is not None:
        comp = task.compensation
        comp_spec = catalog.get(comp.tool)
        if comp.tool not in spec.compensation_tools or comp_spec is None:
            allowed = ", ".join(spec.compensation_tools) or "none"
            problems.append(
                f"{name}: {comp.tool!r} cannot compensate {task.tool!r} (allowed: {allowed})"
            )
        elif comp.tool not in policy.allowed_tools:
            problems.append(f"{name}: compensation tool {comp.tool!r} is not allowed here")
        else:
            problems += [
                f"{name}: compensation.input.{p}"
                for p in _schema_problems(comp_spec.input_model, comp.input)
            ]
    return problems


def _schema_problems(model: type[BaseModel], value: dict[str, Any]) -> list[str]:
    try:
        model.model_validate(value)
    except ValidationError as err:
        return [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
        ]
    return []


def execution_levels(tasks: Sequence[PlannedTask]) -> list[list[str]] | None:
    """Task refs grouped by dependency depth (level 0 depends on nothing); ``None`` on a
    cycle. Dependencies on refs outside ``tasks`` are ignored."""
    levels = _resolvable(tasks)
    return levels if sum(len(level) for level in levels) == len(tasks) else None


def _find_cycle(tasks: Sequence[PlannedTask]) -> list[str]:
    """One dependency cycle, as a path that ends where it starts."""
    levels_done: set[str] = set()
    for level in _resolvable(tasks):
        levels_done.update(level)
    # Every unresolved task depends on another unresolved one: following them must loop.
    deps = {t.ref: [d for d in t.depends_on if d not in levels_done] for t in tasks}
    unresolved = sorted(ref for ref in deps if ref not in levels_done)
    path = [unresolved[0]]
    while True:
        nxt = next(d for d in deps[path[-1]] if d in deps and d not in levels_done)
        if nxt in path:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)


def _resolvable(tasks: Sequence[PlannedTask]) -> list[list[str]]:
    refs = {t.ref for t in tasks}
    pending = {t.ref: {d for d in t.depends_on if d in refs} for t in tasks}
    levels: list[list[str]] = []
    done: set[str] = set()
    while True:
        ready = sorted(ref for ref, deps in pending.items() if deps <= done)
        if not ready:
            return levels
        levels.append(ready)
        done.update(ready)
        for ref in ready:
            del pending[ref]
