"""A test-only twin of ``KeelToolTask`` with a short activity timeout.

``KeelToolTask`` gives a tool activity 60 s to finish, so a worker SIGKILLed mid-send is
noticed (and the attempt retried elsewhere) only a minute later. This workflow runs the same
activity call, keyed the same way (its workflow id), with a timeout a test can wait for.

The workflow sandbox re-imports this module: it must stay import-safe.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from keel.contracts.tools import ToolCall, ToolResult, ToolTaskInput, tool_activity_name
    from keel.workflows.tool_task import PERMANENT_TOOL_ERRORS

QUICK_TOOL_TASK = "KeelTestQuickToolTask"
ACTIVITY_TIMEOUT = timedelta(seconds=4)


@workflow.defn(name=QUICK_TOOL_TASK)
class QuickToolTask:
    @workflow.run
    async def run(self, task: ToolTaskInput) -> ToolResult:
        result: ToolResult = await workflow.execute_activity(
            tool_activity_name(task.tool),
            ToolCall(tool=task.tool, input=task.input, idempotency_key=workflow.info().workflow_id),
            result_type=ToolResult,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=200),
                maximum_attempts=5,
                non_retryable_error_types=PERMANENT_TOOL_ERRORS,
            ),
        )
        return result
