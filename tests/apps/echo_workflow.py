"""The echo app's workflow: echo by agent, record ``EchoNoted``, wait at ``echo-review``."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from keel.contracts.gates import GateState
    from keel.contracts.ledger import WorkflowCompleted
    from tests.apps.echo_contracts import (
        ECHO_CONTRACT,
        ECHO_GATE,
        WORKFLOW_TYPE,
        EchoInput,
        EchoNoted,
        EchoResult,
    )

from keel.workflows.base import KeelWorkflow


@workflow.defn(name=WORKFLOW_TYPE)
class EchoReviewWorkflow(KeelWorkflow):
    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> EchoResult:
        self.start(raw_input)
        request = self.ingest(EchoInput, raw_input, max_bytes=4096)
        outcome = await self.agents.run("echo", ECHO_CONTRACT, request)
        answer = outcome.output
        if answer is None:  # the contract's default applies instead, so this cannot happen
            raise ApplicationError("the echo agent gave no answer", non_retryable=True)
        self.ledger.record(EchoNoted(words=answer.words, echo=answer.echo))
        gate = self.gate_book.open(ECHO_GATE, {"echo": answer.echo})
        await self.gate_book.wait(gate)
        approved = gate.state in (GateState.APPROVED, GateState.MODIFIED)
        decided_by = gate.review.reviewer if gate.review else "nobody"
        verdict = "approved" if approved else "rejected"
        self.ledger.record(WorkflowCompleted(outcome=verdict, summary={"decided_by": decided_by}))
        return await self.settle(
            EchoResult(
                outcome=verdict,
                decided_by=decided_by,
                ledger=list(self.ledger.events),
                ledger_head=self.ledger.head_hash,
            )
        )


@workflow.defn(name="TestTamperedLedger")
class TamperedLedgerWorkflow(KeelWorkflow):
    """Hands back a ledger one of whose events changed after it was recorded, as a tampered
    store would: ``keel ledger`` must not call it verified."""

    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> dict[str, Any]:
        self.start(raw_input)
        self.ledger.record(EchoNoted(words=1, echo="original"))
        self.ledger.record(WorkflowCompleted(outcome="approved"))
        events = [event.model_dump(mode="json") for event in self.ledger.events]
        events[1]["echo"] = "changed afterwards"
        return {"outcome": "approved", "ledger": events, "ledger_head": self.ledger.head_hash}
