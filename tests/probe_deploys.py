"""One workflow type, ``TestDeployProbe``, as three deploys of its code, for the deploy tests.

* ``DeployProbeV1``: opens gate ``deploy-review``, waits for it, returns path ``v1``.
* ``DeployProbeV2Patched``: the change (the ledger's head is signed before the gate opens,
  an extra activity) under ``workflow.patched(PATCH)``: a run started before the change
  replays and finishes on the v1 path; a new run takes the v2 path.
* ``DeployProbeV2``: the same change without the patch: it cannot replay a v1 run's
  history, so only a worker that v1 runs never reach (Worker Versioning, pinned) may
  serve it.

The workflow sandbox re-imports this module: it stays import-safe.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from keel.contracts.gates import GateSpec, GateState
    from keel.contracts.ledger import WorkflowCompleted

from keel.workflows.base import KeelWorkflow

WORKFLOW_TYPE = "TestDeployProbe"
PATCH = "test-deploy-probe-sign-before-review"
GATE = GateSpec(
    name="deploy-review",
    title="Approve the change request",
    reviewers=("deploy.reviewer",),
    sla=timedelta(hours=4),
)


class _DeployProbe(KeelWorkflow):
    async def _run(self, raw_input: dict[str, Any], *, new_path: bool) -> dict[str, Any]:
        self.start(raw_input)
        if new_path:
            await self.ledger.sign_head("before-review")
        gate = self.gate_book.open(GATE, {"change": raw_input.get("change", "")})
        await self.gate_book.wait(gate)
        path = "v2" if new_path else "v1"
        approved = gate.state in (GateState.APPROVED, GateState.MODIFIED)
        self.ledger.record(WorkflowCompleted(outcome="approved" if approved else "rejected"))
        return await self.settle({"path": path, "state": gate.state.value})


@workflow.defn(name=WORKFLOW_TYPE)
class DeployProbeV1(_DeployProbe):
    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> dict[str, Any]:
        return await self._run(raw_input, new_path=False)


@workflow.defn(name=WORKFLOW_TYPE)
class DeployProbeV2Patched(_DeployProbe):
    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> dict[str, Any]:
        return await self._run(raw_input, new_path=workflow.patched(PATCH))


@workflow.defn(name=WORKFLOW_TYPE)
class DeployProbeV2(_DeployProbe):
    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> dict[str, Any]:
        return await self._run(raw_input, new_path=True)
