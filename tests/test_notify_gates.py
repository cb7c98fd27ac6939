"""The gate book tells a gate's channels when it opens, escalates, expires or is decided,
on the time-skipping server (the SLAs pass in no time); each event once, none of them
holding the gate up."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from keel.contracts.gates import GateSpec
from keel.testing import approve, keel_worker, offline_settings
from tests.apps.notify_probe import NotifyGateWorkflow
from tests.notify_receiver import WebhookReceiver
from tests.test_notify_webhooks import SECRET

SPEC = GateSpec(
    name="legal",
    title="Approve the vendor agreement",
    reviewers=("gc.morgan",),
    roles=("general-counsel",),
    sla=timedelta(hours=4),
    escalation_roles=("legal-director",),
    escalation_sla=timedelta(hours=8),
    notify=("legal-hook",),
)


async def run_gate(
    keel_env: WorkflowEnvironment, tmp_path: Path, receiver: WebhookReceiver, decide: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    settings = offline_settings(
        data_dir=tmp_path,
        notify_channels={"legal-hook": {"kind": "webhook", "url": receiver.url, "secret": SECRET}},
    )
    client = keel_env.client
    async with keel_worker(client, apps=[], workflows=[NotifyGateWorkflow], settings=settings) as q:
        handle = await client.start_workflow(
            NotifyGateWorkflow.run,
            {"spec": SPEC.model_dump(mode="json")},
            id=f"notify-gate-{uuid.uuid4().hex[:8]}",
            task_queue=q,
        )
        if decide:
            await asyncio.to_thread(receiver.wait_for, 1)
            await approve(handle, "legal", "gc.morgan")
        result: dict[str, Any] = await asyncio.wait_for(handle.result(), 60)
    return result, [d.json() for d in receiver.deliveries]


async def test_an_unanswered_gate_tells_of_opening_escalation_and_expiry(
    keel_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    with WebhookReceiver() as receiver:
        result, bodies = await run_gate(keel_env, tmp_path, receiver, decide=False)
    assert result["state"] == "expired" and result["failed"] == []
    assert [b["type"] for b in bodies] == [
        "keel.gate.opened",
        "keel.gate.escalated",
        "keel.gate.expired",
    ]
    assert len({b["delivery_id"] for b in bodies}) == 3
    opened, escalated, expired = bodies
    assert (opened["reviewers"], opened["roles"]) == (["gc.morgan"], ["general-counsel"])
    assert escalated["roles"] == ["general-counsel", "legal-director"]
    assert escalated["state"] == "escalated" and expired["state"] == "expired"


async def test_a_decided_gate_tells_who_decided(
    keel_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    with WebhookReceiver() as receiver:
        result, bodies = await run_gate(keel_env, tmp_path, receiver, decide=True)
    assert result["state"] == "approved"
    assert [b["type"] for b in bodies] == ["keel.gate.opened", "keel.gate.decided"]
    decided = bodies[1]
    assert (decided["decided_by"], decided["decision"]) == ("gc.morgan", "approve")
    assert len(result["sent"]) == 2
