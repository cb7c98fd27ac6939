"""A test-only workflow that continues as new with honest or forged state.

The workflow sandbox re-imports this module, so it must stay import-safe: no side effects.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from keel.contracts.tools import TOOL_TASK_WORKFLOW, ToolResult, ToolTaskInput

from keel.workflows.base import KeelWorkflow
from keel.workflows.sealed import CONTINUED_KEY, STATE_PURPOSE, seal_task
from keel.workflows.signing import sign


@workflow.defn(name="SealedStateProbe", sandboxed=True)
class SealedStateProbe(KeelWorkflow):
    """Continues as new once: honestly, with the state altered after signing, or with a
    signature by a key the worker does not trust; the next run reports what it received."""

    @workflow.run
    async def run(self, raw: dict[str, Any]) -> dict[str, Any]:
        """First run: continue as new as ``raw["mode"]`` says; next run: return its state."""
        state = await self.resume(raw)
        if state is not None:
            return state
        self.start(raw)
        honest = {"balance": 10, "mode": raw["mode"]}
        if raw["mode"] == "honest":
            await self.continue_as_new(honest)
        info = workflow.info()
        message = {"workflow_id": info.workflow_id, "previous_run_id": info.run_id}
        signature = await sign(STATE_PURPOSE, {**message, "state": honest})
        if raw["mode"] == "untrusted":
            signature = signature.model_copy(update={"key_id": raw["other_key_id"]})
        state_sent = {**honest, "balance": 10_000} if raw["mode"] == "altered" else honest
        envelope = {
            "state": state_sent,
            "previous_run_id": info.run_id,
            "signature": signature.model_dump(),
        }
        workflow.continue_as_new({CONTINUED_KEY: envelope})


@workflow.defn(name="ToolTaskParentProbe", sandboxed=True)
class ToolTaskParentProbe:
    """Seals one tool task and runs it as its child, the way a plan's task is run."""

    @workflow.run
    async def run(self, task: ToolTaskInput, child_id: str) -> ToolResult:
        """Run ``task`` as child workflow ``child_id``."""
        seal = await seal_task(child_id, task.model_dump(mode="json", exclude={"seal"}))
        result: ToolResult = await workflow.execute_child_workflow(
            TOOL_TASK_WORKFLOW,
            task.model_copy(update={"seal": seal}),
            id=child_id,
            result_type=ToolResult,
        )
        return result
