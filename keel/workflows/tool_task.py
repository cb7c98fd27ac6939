"""The child workflow that runs one planned task: one tool activity, idempotency-keyed."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from keel.contracts.tools import (
        CATALOG,
        TOOL_TASK_WORKFLOW,
        ToolCall,
        ToolResult,
        ToolTaskInput,
        tool_activity_name,
    )

from keel.workflows.sealed import task_seal_problem

PERMANENT_TOOL_ERRORS = ["InvalidToolInput", "IdempotencyKeyConflict", "UnknownTool"]
"""The engine's permanent tool errors; a tool marks its own refusals non-retryable."""


@workflow.defn(name=TOOL_TASK_WORKFLOW)
class ToolTaskWorkflow:
    """Runs ``task.tool`` once. Its workflow id is derived from the parent and the task ref,
    and is the idempotency key of the tool's side effect: a retry never repeats the effect."""

    @workflow.run
    async def run(self, task: ToolTaskInput) -> ToolResult:
        """Run the task's tool once; its workflow id is the idempotency key.

        Refused, performing nothing, unless the parent that started it sealed this task.
        """
        if workflow.patched("keel-tool-task-seal"):
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
        result: ToolResult = await workflow.execute_activity(
            tool_activity_name(task.tool),
            ToolCall(tool=task.tool, input=task.input, idempotency_key=workflow.info().workflow_id),
            result_type=ToolResult,
            start_to_close_timeout=timedelta(seconds=task.timeout_seconds),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=5,
                non_retryable_error_types=PERMANENT_TOOL_ERRORS,
            ),
            summary=f"{task.tool} ({task.ref})",
        )
        return result
