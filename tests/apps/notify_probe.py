"""Probes of gate notifications: the tests' own app.

``TestNotifyProbe`` drives the notifier without a gate book: it tells its channels that
gate ``probe.gate`` opened, waits for the ``decide`` signal, tells them it was decided,
drains the notifier and returns what was sent. Served with ``keel worker --app
tests.apps.notify_probe`` (the kill test) or by an in-process worker.

``TestNotifyGate`` opens a real gate (``KeelWorkflow.gate_book``) whose spec names the
channels, waits for it to be decided or to expire, and settles (which drains).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from keel.contracts.gates import GateSpec, GateState, GateView, ReviewDecision
    from keel.workers.app import App

from keel.workflows.base import KeelWorkflow
from keel.workflows.notify import GateNotifier

PROBE_WORKFLOW = "TestNotifyProbe"
GATE_PROBE_WORKFLOW = "TestNotifyGate"


class NotifyProbe(BaseModel):
    gate: str = "legal"
    title: str = "Approve the vendor agreement"
    channels: list[str]
    reviewers: list[str] = Field(default_factory=lambda: ["gc.morgan"])
    roles: list[str] = Field(default_factory=lambda: ["general-counsel"])


@workflow.defn(name=PROBE_WORKFLOW)
class NotifyProbeWorkflow:
    def __init__(self) -> None:
        self.notifier = GateNotifier()
        self.decided_by: str | None = None

    @workflow.run
    async def run(self, raw: dict[str, Any]) -> dict[str, Any]:
        probe = NotifyProbe.model_validate(raw)
        view = GateView.model_validate(
            {
                "gate": probe.gate,
                "title": probe.title,
                "state": GateState.AWAITING_APPROVAL,
                "reviewers": probe.reviewers,
                "roles": probe.roles,
                "opened_at": workflow.now(),
                "deadline": workflow.now() + timedelta(hours=4),
            }
        )
        self.notifier.gate_event("opened", view, probe.channels)
        await workflow.wait_condition(lambda: self.decided_by is not None)
        decided = view.model_copy(
            update={
                "state": GateState.APPROVED,
                "deadline": None,
                "decided_by": self.decided_by,
                "decision": ReviewDecision.APPROVE,
                "decided_at": workflow.now(),
            }
        )
        self.notifier.gate_event("decided", decided, probe.channels)
        await self.notifier.drain()
        return {
            "sent": [sent.model_dump(mode="json") for sent in self.notifier.sent],
            "failed": self.notifier.failed,
        }

    @workflow.signal
    def decide(self, reviewer: str) -> None:
        self.decided_by = reviewer

    @workflow.query
    def outstanding(self) -> int:
        return self.notifier.outstanding


@workflow.defn(name=GATE_PROBE_WORKFLOW)
class NotifyGateWorkflow(KeelWorkflow):
    @workflow.run
    async def run(self, raw: dict[str, Any]) -> dict[str, Any]:
        self.start(raw)
        spec = GateSpec.model_validate(raw["spec"])
        gate = self.gate_book.open(spec, {"note": "a probe"})
        await self.gate_book.wait(gate)
        await self.gate_book.notifier.drain()  # settle drains too; the result lists them
        return await self.settle(
            {
                "state": gate.state.value,
                "sent": [sent.model_dump(mode="json") for sent in self.gate_book.notifier.sent],
                "failed": self.gate_book.notifier.failed,
            }
        )


APP = App(name="test-notify", workflows=[NotifyProbeWorkflow, NotifyGateWorkflow])
