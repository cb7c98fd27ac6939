"""The plan executor: materialize a validated plan as child workflows, in dependency order,
independent tasks in parallel; gates before gated tasks; compensation in reverse on failure.

Deterministic workflow code; the saga stack (completed tasks with their compensations) spans
planning rounds and is carried across continue-as-new.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError, FailureError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from keel.contracts.gates import GateState
    from keel.contracts.ledger import (
        Compensated,
        PlanMaterialized,
        TaskCompleted,
        TaskFailed,
        TaskSkipped,
    )
    from keel.contracts.plans import (
        Compensation,
        PlannedTask,
        PlannerOutput,
        PlanPolicy,
        execution_levels,
    )
    from keel.contracts.tools import (
        TOOL_TASK_WORKFLOW,
        ToolCatalog,
        ToolResult,
        ToolTaskInput,
    )

from keel.workflows.gates import GateBook
from keel.workflows.ledger import Ledger
from keel.workflows.patches import engine_patched
from keel.workflows.sealed import seal_task


class CompletedTask(BaseModel):
    """A finished task, with what undoes it."""

    round: int
    ref: str
    tool: str
    workflow_id: str
    output: dict[str, Any]
    compensation: Compensation | None = None


@dataclass
class PlanRun:
    """What running one plan came to: results, outcome and the failure if any."""

    outcome: Literal["completed", "failed"]
    results: dict[str, ToolResult] = field(default_factory=dict)
    failure: str | None = None


class TaskNotRun(Exception):
    """A gate refused the task, or its child workflow failed."""


class PlanExecutor:
    """Runs plans for one workflow execution."""

    def __init__(
        self,
        ledger: Ledger,
        gates: GateBook,
        catalog: ToolCatalog,
        policy: PlanPolicy,
        *,
        completed: list[CompletedTask] | None = None,
    ) -> None:
        self._ledger = ledger
        self._gates = gates
        self._catalog = catalog
        self._policy = policy
        self.completed: list[CompletedTask] = list(completed or [])

    async def run_plan(self, round_no: int, plan: PlannerOutput) -> PlanRun:
        """Run every task of a validated ``plan``; on the first failure, stop starting new
        tasks, let running ones finish, and report the failure (compensation is separate)."""
        parent = workflow.info().workflow_id
        levels = execution_levels(plan.tasks) or []
        self._ledger.record(
            PlanMaterialized(
                round=round_no,
                levels=levels,
                children={t.ref: self.child_id(parent, round_no, t.ref) for t in plan.tasks},
            )
        )
        # Each wake-up costs only what finished: unmet-dependency counts and a ready queue
        # (plan order) instead of rescanning every task, completions pushed by callbacks.
        pending = {t.ref: t for t in plan.tasks}
        unmet = {t.ref: len(set(t.depends_on)) for t in plan.tasks}
        dependents: dict[str, list[str]] = {t.ref: [] for t in plan.tasks}
        for t in plan.tasks:
            for dep in set(t.depends_on):
                dependents[dep].append(t.ref)
        ready = deque(t.ref for t in plan.tasks if unmet[t.ref] == 0)
        running: dict[str, asyncio.Task[ToolResult]] = {}
        finished: deque[str] = deque()
        run = PlanRun(outcome="completed")
        while pending or running:
            while run.failure is None and ready and len(running) < self._policy.max_fanout_width:
                task = pending.pop(ready.popleft())
                started = asyncio.create_task(self._run_task(round_no, task))
                started.add_done_callback(partial(_push, finished, task.ref))
                running[task.ref] = started
            if not running:
                break
            await workflow.wait_condition(lambda: bool(finished))
            while finished:
                ref = finished.popleft()
                try:
                    run.results[ref] = running.pop(ref).result()
                except TaskNotRun as exc:
                    run.failure = run.failure or str(exc)
                    continue
                for follower in dependents[ref]:
                    unmet[follower] -= 1
                    if unmet[follower] == 0:
                        ready.append(follower)
        for ref in pending:
            reason = f"not started: {run.failure}" if run.failure else "dependencies not met"
            self._ledger.record(TaskSkipped(round=round_no, ref=ref, reason=reason))
        if run.failure:
            run.outcome = "failed"
        return run

    async def compensate(self, reason: str) -> list[str]:
        """Undo completed tasks in reverse order of completion; returns the undone refs."""
        undone: list[str] = []
        parent = workflow.info().workflow_id
        while self.completed:
            task = self.completed.pop()
            if task.compensation is None:
                continue
            workflow.set_current_details(f"Compensating `{task.ref}` ({reason})")
            child_id = f"{task.workflow_id}/compensate"
            output: dict[str, Any] | None = None
            error: str | None = None
            try:
                undo = ToolTaskInput(
                    parent_workflow_id=parent,
                    round=task.round,
                    ref=task.ref,
                    tool=task.compensation.tool,
                    input=task.compensation.input,
                    purpose=f"undo {task.tool}",
                    compensating=task.ref,
                )
                result: ToolResult = await workflow.execute_child_workflow(
                    TOOL_TASK_WORKFLOW,
                    await _sealed(child_id, undo),
                    id=child_id,
                    result_type=ToolResult,
                    static_summary=f"compensate {task.ref}: {task.compensation.tool}",
                )
                output = result.output
            except ChildWorkflowError as exc:
                error = _cause(exc)  # recorded; the remaining compensations still run
            self._ledger.record(
                Compensated(
                    ref=task.ref,
                    round=task.round,
                    tool=task.compensation.tool,
                    workflow_id=child_id,
                    ok=error is None,
                    output=output,
                    error=error,
                )
            )
            if error is None:
                undone.append(task.ref)
        return undone

    @staticmethod
    def child_id(parent: str, round_no: int, ref: str) -> str:
        """Deterministic child workflow id: parent, round and task ref."""
        return f"{parent}/r{round_no}/{ref}"

    async def _run_task(self, round_no: int, task: PlannedTask) -> ToolResult:
        task_input = dict(task.input)
        if task.gate is not None:
            task_input = await self._pass_gate(round_no, task)
        spec = self._catalog.get(task.tool)
        parent = workflow.info().workflow_id
        child_id = self.child_id(parent, round_no, task.ref)
        try:
            child_input = ToolTaskInput(
                parent_workflow_id=parent,
                round=round_no,
                ref=task.ref,
                tool=task.tool,
                input=task_input,
                purpose=task.purpose,
            )
            result: ToolResult = await workflow.execute_child_workflow(
                TOOL_TASK_WORKFLOW,
                await _sealed(child_id, child_input),
                id=child_id,
                result_type=ToolResult,
                task_queue=spec.task_queue if spec and spec.task_queue else None,
                static_summary=f"{task.tool}: {task.purpose or task.ref}"[:200],
            )
        except ChildWorkflowError as exc:
            error = _cause(exc)
            self._ledger.record(
                TaskFailed(
                    round=round_no, ref=task.ref, tool=task.tool, workflow_id=child_id, error=error
                )
            )
            raise TaskNotRun(f"task {task.ref!r} failed: {error}") from exc
        self._ledger.record(
            TaskCompleted(
                round=round_no,
                ref=task.ref,
                tool=task.tool,
                workflow_id=child_id,
                output=result.output,
                effect=result.effect.model_dump(mode="json") if result.effect else None,
            )
        )
        self.completed.append(
            CompletedTask(
                round=round_no,
                ref=task.ref,
                tool=task.tool,
                workflow_id=child_id,
                output=result.output,
                compensation=task.compensation,
            )
        )
        return result

    async def _pass_gate(self, round_no: int, task: PlannedTask) -> dict[str, Any]:
        """Open the task's gate (reviewers and SLAs from the policy) and wait; returns the
        (possibly modified) task input."""
        tool = self._catalog.get(task.tool)
        spec = self._policy.gate_spec(task)
        record = self._gates.open(
            spec,
            {
                "round": round_no,
                "task": task.ref,
                "tool": task.tool,
                "input": task.input,
                "purpose": task.purpose,
                "compensation": task.compensation.model_dump() if task.compensation else None,
            },
            check=lambda mods: _input_problems(
                tool.input_model if tool else None, task.input, mods
            ),
        )
        await self._gates.wait(record)
        review = record.review
        if record.state is GateState.MODIFIED and review and review.modifications:
            return {**task.input, **review.modifications}
        if record.state is GateState.APPROVED:
            return dict(task.input)
        who = f"{review.reviewer}: {review.comment}" if review else "no reviewer before the SLAs"
        self._ledger.record(
            TaskSkipped(
                round=round_no,
                ref=task.ref,
                reason=f"gate {record.name} {record.state.value} ({who})",
            )
        )
        raise TaskNotRun(f"gate {record.name} was {record.state.value} ({who})")


async def _sealed(child_id: str, task: ToolTaskInput) -> ToolTaskInput:
    """``task`` with the seal that lets child ``child_id`` run it (none when replaying a
    run started before tool tasks were sealed)."""
    if not engine_patched("keel-tool-task-seal"):
        return task
    seal = await seal_task(child_id, task.model_dump(mode="json", exclude={"seal"}))
    return task.model_copy(update={"seal": seal})


def _push(queue: deque[str], ref: str, _task: object) -> None:
    queue.append(ref)


def _input_problems(
    model: type[BaseModel] | None, base: dict[str, Any], mods: dict[str, Any]
) -> list[str]:
    """Why a reviewer's modified task input would not satisfy the tool's input model."""
    if model is None:
        return []
    try:
        model.model_validate({**base, **mods})
    except ValidationError as err:
        return [f"modifications.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
    return []


def _cause(exc: FailureError) -> str:
    """The innermost failure message of a child workflow error."""
    cause: BaseException | None = exc
    message = str(exc)
    while cause is not None:
        message = getattr(cause, "message", None) or str(cause) or message
        cause = cause.__cause__ if cause.__cause__ is not cause else None
    return message
