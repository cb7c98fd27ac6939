"""Workflows for ``ledger_signing_cost.py``: the same ledger, completed with or without a
signed head (one ``keel.sign`` local activity). Import-safe for the workflow sandbox."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from keel.contracts.ledger import COMPLETION, Routed, WorkflowCompleted

from keel.workflows.base import KeelWorkflow


@workflow.defn(name="BenchLedgerUnsigned")
class BenchLedgerUnsigned(KeelWorkflow):
    """``events`` ledger events and a completion, returned without a signature."""

    @workflow.run
    async def run(self, events: int) -> int:
        """Record the events; return the ledger's length."""
        self.record(events)
        return len(self.ledger.events)

    def record(self, events: int) -> None:
        """WorkflowStarted, ``events`` Routed events, WorkflowCompleted."""
        self.start({"events": events})
        for i in range(events):
            self.ledger.record(Routed(rule="bench@1", inputs={"i": i}, route="on"))
        self.ledger.record(WorkflowCompleted(outcome="done"))


@workflow.defn(name="BenchLedgerSigned")
class BenchLedgerSigned(BenchLedgerUnsigned):
    """The same ledger, its head signed at completion as ``KeelWorkflow.settle`` does."""

    @workflow.run
    async def run(self, events: int) -> int:
        """Record the events, sign the head; return the ledger's length."""
        self.record(events)
        await self.ledger.sign_head(COMPLETION, final=True)
        return len(self.ledger.events)
