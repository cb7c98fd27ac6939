"""Workflows for ``agent_node_overhead.py``: one Keel agent node versus one bare activity.

The benchmarks pass this module through the sandbox (``measure.BENCH_MODULES``), as Keel's
own workflow modules are; it stays import-safe all the same (a sandbox that does not pass it
through re-imports it for every run), and Keel's models come in through
``imports_passed_through``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from keel.scenarios.contract_review.contracts import (
        RISK_CLASSIFIER,
        RiskAssessment,
        RiskClassifierInput,
    )

from keel.workflows.base import KeelWorkflow

BARE_ACTIVITY = "bench.bare_activity"
"""The bare variant's activity: takes the node input, returns a constant RiskAssessment."""


@workflow.defn(name="BenchKeelAgentNode")
class BenchKeelAgentNode(KeelWorkflow):
    """One Keel agent node (checkpoint, activity, validation, ledger events), then return."""

    @workflow.run
    async def run(self, node_input: RiskClassifierInput) -> RiskAssessment:
        outcome = await self.agents.run("classify-risk", RISK_CLASSIFIER, node_input)
        if not isinstance(outcome.output, RiskAssessment):
            raise RuntimeError(f"the agent node did not settle on an agent output: {outcome}")
        return outcome.output


@workflow.defn(name="BenchBareActivity")
class BenchBareActivity:
    """One plain activity with the agent node's timeout and retry policy, then return."""

    @workflow.run
    async def run(self, node_input: RiskClassifierInput) -> RiskAssessment:
        return await workflow.execute_activity(
            BARE_ACTIVITY,
            node_input,
            result_type=RiskAssessment,
            start_to_close_timeout=RISK_CLASSIFIER.time_budget,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=60),
                maximum_attempts=RISK_CLASSIFIER.provider_attempts,
            ),
        )
