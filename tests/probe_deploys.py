"""One workflow type, ``TestDeployProbe``, as three deploys of its code, for the deploy tests.

* ``DeployProbeV1``: opens gate ``deploy-review``, waits for it, returns path ``v1``.
* ``DeployProbeV2Patched``: the change (the ledger's head is signed before the gate opens,
  an extra activity) under ``workflow.patched(PATCH)``: a run started before the change
  replays and finishes on the v1 path; a new run takes the v2 path. And a fix of what
  follows the review, under ``workflow.patched(FIX)``: every run that reaches it after the
  deploy takes it (``fixed``), the runs that waited at the gate too.
* ``DeployProbeV2``: the same change without the patch: it cannot replay a v1 run's
  history, so only a worker that v1 runs never reach (Worker Versioning, pinned) may
  serve it.

The workflow sandbox re-imports this module: it stays import-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from keel.contracts.gates import GateSpec, GateState
    from keel.contracts.ledger import WorkflowCompleted

from keel.workflows.base import KeelWorkflow

WORKFLOW_TYPE = "TestDeployProbe"
PATCH = "test-deploy-probe-sign-before-review"
FIX = "test-deploy-probe-fix-after-review"
GATE = GateSpec(
    name="deploy-review",
    title="Approve the change request",
    reviewers=("deploy.reviewer",),
    sla=timedelta(hours=4),
)


class _DeployProbe(KeelWorkflow):
    async def _run(
        self, raw_input: dict[str, Any], *, new_path: bool, fix: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
        self.start(raw_input)
        if new_path:
            await self.ledger.sign_head("before-review")
        gate = self.gate_book.open(GATE, {"change": raw_input.get("change", "")})
        await self.gate_book.wait(gate)
        # v2's fix of what happens after the review: decided when a run gets here, so it
        # reaches runs that were waiting at the gate when v2 was deployed.
        fixed = fix() if fix is not None else False
        approved = gate.state in (GateState.APPROVED, GateState.MODIFIED)
        outcome = "approved" if approved else "rejected"
        self.ledger.record(WorkflowCompleted(outcome=outcome, summary={"fixed": fixed}))
        path = "v2" if new_path else "v1"
        return await self.settle({"path": path, "state": gate.state.value, "fixed": fixed})


@workflow.defn(name=WORKFLOW_TYPE)
class DeployProbeV1(_DeployProbe):
    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> dict[str, Any]:
        return await self._run(raw_input, new_path=False)


@workflow.defn(name=WORKFLOW_TYPE)
class DeployProbeV2Patched(_DeployProbe):
    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> dict[str, Any]:
        return await self._run(
            raw_input, new_path=workflow.patched(PATCH), fix=lambda: workflow.patched(FIX)
        )


@workflow.defn(name=WORKFLOW_TYPE)
class DeployProbeV2(_DeployProbe):
    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> dict[str, Any]:
        return await self._run(raw_input, new_path=True)
