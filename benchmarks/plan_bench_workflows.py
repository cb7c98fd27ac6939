"""Workflows for ``plan_fanout.py``: a Keel plan of N independent tasks versus N bare children.

* ``BenchKeelPlan`` (a ``KeelWorkflow``): builds a plan of N independent ``bench_noop`` tasks,
  validates it with ``validate_plan`` and runs it with ``PlanExecutor.run_plan``; every task
  is a real ``KeelToolTask`` child workflow running the tool's activity once.
* ``BenchBareChildren``: starts N ``BenchBareChild`` workflows at once
  (``asyncio.gather`` of ``workflow.execute_child_workflow``); each runs the same activity once,
  with the same timeout and retry policy as ``KeelToolTask``.

Both parents return counts, never their ledger or children's results: the Keel parent's ledger
holds N ``TaskCompleted`` events, and a result that big would only measure payload size.

The workflow sandbox imports this module for workflow runs, so it stays import-safe: Keel's
modules come in through ``imports_passed_through``. ``plan_fanout.py`` runs it with Keel's
sandbox (``keel.workers.runtime.workflow_runner``, which passes ``keel`` through) and passes
this module through as well, so that neither variant's children pay a per-run re-import.
The ``bench_noop`` tool itself is registered in Keel's process-wide catalog by
``plan_fanout.py``, outside the sandbox.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from keel.contracts.plans import PlannedTask, PlannerOutput, PlanPolicy, validate_plan
    from keel.contracts.tools import CATALOG, ToolCall, ToolResult, tool_activity_name
    from keel.workflows.base import KeelWorkflow
    from keel.workflows.plan_executor import PlanExecutor
    from keel.workflows.tool_task import PERMANENT_TOOL_ERRORS

BENCH_TOOL = "bench_noop"
"""The benchmark tool (registered by ``plan_fanout.py``): no side effects, returns at once."""

KEEL_PLAN_WORKFLOW = "BenchKeelPlan"
BARE_PARENT_WORKFLOW = "BenchBareChildren"
BARE_CHILD_WORKFLOW = "BenchBareChild"


class FanoutInput(BaseModel):
    tasks: int
    """N: tasks in the plan (Keel) or children started (bare)."""


class FanoutResult(BaseModel):
    """Counts only: the benchmark must not measure the size of a big result."""

    children: int
    """Children that completed."""
    outcome: str = "completed"
    ledger_events: int = 0
    """Keel only: events in the parent's ledger at the end."""


def bench_policy(tasks: int) -> PlanPolicy:
    """A policy that allows a plan of ``tasks`` independent tasks, all at once."""
    return PlanPolicy(
        max_tasks_per_plan=tasks,
        max_fanout_width=tasks,
        max_rounds=1,
        allowed_tools=(BENCH_TOOL,),
        side_effects_require_gate=False,
    )


def bench_plan(tasks: int) -> PlannerOutput:
    """``tasks`` independent ``bench_noop`` tasks."""
    return PlannerOutput(
        done=True,
        summary=f"benchmark: {tasks} independent tasks",
        tasks=[
            PlannedTask(ref=f"t-{i:04d}", tool=BENCH_TOOL, input={"n": i}, purpose="benchmark")
            for i in range(tasks)
        ],
        confidence=1.0,
    )


@workflow.defn(name=KEEL_PLAN_WORKFLOW)
class BenchKeelPlan(KeelWorkflow):
    """Build, validate and run a plan of N independent tasks (one round, no gates)."""

    @workflow.run
    async def run(self, params: FanoutInput) -> FanoutResult:
        policy = bench_policy(params.tasks)
        plan = bench_plan(params.tasks)
        reasons = validate_plan(plan, CATALOG, policy)
        if reasons:
            raise RuntimeError("the benchmark plan is invalid: " + "; ".join(reasons[:5]))
        executor = PlanExecutor(self.ledger, self.gate_book, CATALOG, policy)
        run = await executor.run_plan(1, plan)
        return FanoutResult(
            children=len(run.results), outcome=run.outcome, ledger_events=len(self.ledger.events)
        )


@workflow.defn(name=BARE_CHILD_WORKFLOW)
class BenchBareChild:
    """One activity, with ``KeelToolTask``'s timeout and retry policy."""

    @workflow.run
    async def run(self, call: ToolCall) -> ToolResult:
        result: ToolResult = await workflow.execute_activity(
            tool_activity_name(call.tool),
            call,
            result_type=ToolResult,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=5,
                non_retryable_error_types=PERMANENT_TOOL_ERRORS,
            ),
        )
        return result


@workflow.defn(name=BARE_PARENT_WORKFLOW)
class BenchBareChildren:
    """Start N bare children at once and wait for all of them."""

    @workflow.run
    async def run(self, params: FanoutInput) -> FanoutResult:
        parent = workflow.info().workflow_id
        results = await asyncio.gather(
            *(
                workflow.execute_child_workflow(
                    BenchBareChild.run,
                    ToolCall(tool=BENCH_TOOL, input={"n": i}, idempotency_key=f"{parent}/c{i}"),
                    id=f"{parent}/c{i}",
                )
                for i in range(params.tasks)
            )
        )
        return FanoutResult(children=len(results))
