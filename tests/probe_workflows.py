"""Test-only workflows that drive Keel's building blocks directly.

The workflow sandbox re-imports this module, so it must stay import-safe: no side effects,
and Keel's models come in through ``imports_passed_through`` (the registry is shared).
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from keel.contracts.registry import REGISTRY
    from keel.scenarios.contract_review.contracts import RiskClassifierInput

from keel.workflows.base import KeelWorkflow


@workflow.defn(name="AgentNodeProbe")
class AgentNodeProbe(KeelWorkflow):
    """Run one agent node under the contract named by ``params["contract"]``.

    Returns the outcome and the ledger in JSON form (``parse_ledger`` reads it back).
    """

    @workflow.run
    async def run(self, params: dict[str, Any]) -> dict[str, Any]:
        self.start(params)
        contract = REGISTRY.get(params["contract"])
        outcome = await self.agents.run(
            "probe", contract, RiskClassifierInput.model_validate(params["input"])
        )
        return {
            "source": outcome.source,
            "attempts": outcome.attempts,
            "note": outcome.note,
            "output": outcome.output.model_dump(mode="json") if outcome.output else None,
            "ledger": [event.model_dump(mode="json") for event in self.ledger.events],
            "ledger_head": self.ledger.head_hash,
        }


@workflow.defn(name="UnstartedAgentNodeProbe")
class UnstartedAgentNodeProbe(KeelWorkflow):
    """One agent node in a run that never calls ``start``: the engine's patches are decided
    in ``KeelWorkflow.__init__`` all the same. Returns the ledger in JSON form."""

    @workflow.run
    async def run(self, node_input: RiskClassifierInput) -> list[dict[str, Any]]:
        contract = REGISTRY.get("risk-classifier@1")
        await self.agents.run("probe", contract, node_input)
        return [event.model_dump(mode="json") for event in self.ledger.events]
