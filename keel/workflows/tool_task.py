"""The child workflow that runs one planned task: one tool activity, idempotency-keyed."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from keel.contracts.effects import EFFECT_OUTCOME_UNKNOWN
    from keel.contracts.tools import (
        CATALOG,
        TOOL_TASK_WORKFLOW,
        ToolCall,
        ToolResult,
        ToolTaskInput,
    )

from keel.workflows.effects import execute_tool, unknown_outcome
from keel.workflows.patches import engine_patched
from keel.workflows.sealed import task_seal_problem

PERMANENT_TOOL_ERRORS = [
    "InvalidToolInput",
    "IdempotencyKeyConflict",
    "UnknownTool",
    EFFECT_OUTCOME_UNKNOWN,
]
"""The engine's permanent tool errors; a tool marks its own refusals non-retryable."""
TOOL_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=PERMANENT_TOOL_ERRORS,
)
"""Retries of one tool activity for transient failures (a side-effect record outage is
waited out beyond them, without limit: ``keel.workflows.effects.execute_tool``)."""


@workflow.defn(name=TOOL_TASK_WORKFLOW)
class ToolTaskWorkflow:
    """Runs ``task.tool`` once. Its workflow id is derived from the parent and the task ref,
    and is the idempotency key of the tool's side effect: a retry never repeats the effect."""

    @workflow.run
    async def run(self, task: ToolTaskInput) -> ToolResult:
        """Run the task's tool once; its workflow id is the idempotency key.

        Refused, performing nothing, unless the parent that started it sealed this task.
        """
        if engine_patched("keel-tool-task-seal"):
            unsealed = await task_seal_problem(
                task.model_dump(mode="json", exclude={"seal"}), task.seal
            )
            if unsealed is not None:
                workflow.set_current_details(f"Refused: {unsealed}")
                raise ApplicationError(unsealed, type="UnsealedToolTask", non_retryable=True)
        if CATALOG.get(task.tool) is None:
            raise ApplicationError(
                f"tool {task.tool!r} is not in this worker's catalog",
                type="UnknownTool",
                non_retryable=True,
            )
        doing = f"compensating {task.compensating}" if task.compensating else task.purpose
        workflow.set_current_details(f"Running **{task.tool}** for task `{task.ref}`: {doing}")
        try:
            result = await self._run_tool(task)
        except Exception as exc:
            workflow.set_current_details(f"Failed: **{task.tool}** for task `{task.ref}`: {exc}")
            raise
        effect = f", effect {result.effect.provider_id}" if result.effect else ""
        workflow.set_current_details(f"Done: **{task.tool}** for task `{task.ref}`{effect}")
        return result

    async def _run_tool(self, task: ToolTaskInput) -> ToolResult:
        """The tool's activity; an outage of the side-effect record is waited out, and an
        unknown outcome the tool could not look up fails the task (never resent here)."""
        try:
            return await execute_tool(
                ToolCall(
                    tool=task.tool, input=task.input, idempotency_key=workflow.info().workflow_id
                ),
                start_to_close_timeout=timedelta(seconds=task.timeout_seconds),
                retry_policy=TOOL_RETRIES,
                summary=f"{task.tool} ({task.ref})",
            )
        except ActivityError as err:
            call_key = workflow.info().workflow_id
            unknown = unknown_outcome(
                err, ToolCall(tool=task.tool, input=task.input, idempotency_key=call_key)
            )
            if unknown is None:
                raise
            raise ApplicationError(
                f"the outcome of {task.tool} for task {task.ref!r} is unknown: an earlier "
                f"attempt (intent at {unknown.intent_at.isoformat()}) ended without recording "
                f"whether it acted; the tool's policy is {unknown.policy!r}, so it was not "
                f"repeated. A person must check whether it happened and record the answer "
                f"for idempotency key {call_key!r} (EffectRecord.resolve, or the tool's "
                f"resolve_outcome activity) before a task with this key can run again",
                unknown.model_dump(mode="json"),
                type=EFFECT_OUTCOME_UNKNOWN,
                non_retryable=True,
            ) from None  # this is the reason the plan reads (the innermost failure)
