"""Gate notifications from workflow code, on a dev server (retries wait real seconds): each
gate event reaches each channel once, and a receiver that is down is told once it is back.

The probe workflow (``tests.apps.notify_probe``) stands in for a gate book: it tells its
channels that its gate opened, waits for a signal, tells them it was decided, and drains.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from keel.activities.effects import EffectEntry, EffectStatus, SqliteEffectRecord
from keel.activities.notify import EFFECT_TOOL
from keel.contracts.notifications import idempotency_key, signature_problem
from keel.workers.runtime import workflow_runner
from tests.apps.notify_probe import NotifyProbeWorkflow
from tests.conftest import free_port
from tests.notify_receiver import WebhookReceiver
from tests.test_notify_webhooks import SECRET, notifications


async def test_each_gate_event_reaches_each_channel_once(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    with WebhookReceiver() as hook, WebhookReceiver() as slack:
        channels = {
            "legal-hook": {"kind": "webhook", "url": hook.url, "secret": SECRET},
            "legal-slack": {
                "kind": "webhook",
                "url": slack.url,
                "secret": SECRET,
                "format": "slack",
            },
        }
        queue = f"notify-{uuid.uuid4()}"
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=[NotifyProbeWorkflow],
            activities=notifications(tmp_path, channels).activities(),
            workflow_runner=workflow_runner(),
        ):
            handle = await dev_env.client.start_workflow(
                NotifyProbeWorkflow.run,
                {"channels": ["legal-hook", "legal-slack", "legal-hook"]},
                id=f"notify-probe-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
            )
            await asyncio.to_thread(hook.wait_for, 1)
            await handle.signal(NotifyProbeWorkflow.decide, "gc.morgan")
            result = await asyncio.wait_for(handle.result(), 60)
    # Two events, two channels (named twice, told once): four deliveries, four ids.
    assert (hook.raw(), len(hook.distinct()), slack.raw(), len(slack.distinct())) == (2, 2, 2, 2)
    assert [d.json()["type"] for d in hook.deliveries] == ["keel.gate.opened", "keel.gate.decided"]
    decided = hook.deliveries[1].json()
    assert (decided["decided_by"], decided["decision"], decided["state"]) == (
        "gc.morgan",
        "approve",
        "approved",
    )
    assert decided["run_id"] == (await handle.describe()).run_id
    for delivery in [*hook.deliveries, *slack.deliveries]:
        assert (
            signature_problem(
                SECRET, delivery.body, delivery.headers["keel-signature"], time.time()
            )
            is None
        )
    assert {"text", "blocks"} <= set(slack.deliveries[0].json())
    assert len(result["sent"]) == 4 and result["failed"] == []


def refused_twice(entry: EffectEntry | None) -> bool:
    """Whether a second attempt has found the receiver down too."""
    return (
        entry is not None
        and entry.tool == EFFECT_TOOL
        and entry.attempts >= 2
        and entry.status is EffectStatus.NOT_PERFORMED
    )


async def test_a_receiver_down_then_up_is_told_once(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """One receiver answers 503 twice (down behind its load balancer), the other is not
    listening at all until the record shows a refused attempt; each then gets the event
    once: raw requests that reached them, 2xx answers and distinct delivery ids counted."""
    port = free_port()
    record = SqliteEffectRecord(tmp_path / "effects.sqlite3")
    with WebhookReceiver() as flaky:
        flaky.state.down_for = 2
        channels = {
            "flaky": {"kind": "webhook", "url": flaky.url, "secret": SECRET},
            "offline": {
                "kind": "webhook",
                "url": f"http://127.0.0.1:{port}/hook",
                "secret": SECRET,
            },
        }
        queue = f"notify-{uuid.uuid4()}"
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=[NotifyProbeWorkflow],
            activities=notifications(tmp_path, channels).activities(),
            workflow_runner=workflow_runner(),
        ):
            workflow_id = f"notify-down-{uuid.uuid4().hex[:8]}"
            handle = await dev_env.client.start_workflow(
                NotifyProbeWorkflow.run,
                {"channels": ["flaky", "offline"]},
                id=workflow_id,
                task_queue=queue,
            )
            run_id = (await handle.describe()).run_id
            key = idempotency_key(workflow_id, run_id or "", "legal", "opened", "offline")
            async with asyncio.timeout(30):
                while not refused_twice(await record.get(key)):
                    await asyncio.sleep(0.1)
            with WebhookReceiver(port) as late:
                await asyncio.to_thread(late.wait_for, 1)
                await asyncio.to_thread(flaky.wait_for, 3)
                await handle.signal(NotifyProbeWorkflow.decide, "gc.morgan")
                result = await asyncio.wait_for(handle.result(), 60)
                late_opened = [d for d in late.deliveries if d.json()["type"] == "keel.gate.opened"]
    flaky_opened = [d for d in flaky.deliveries if d.json()["type"] == "keel.gate.opened"]
    assert [d.answered for d in flaky_opened] == [503, 503, 200]
    assert len({d.delivery_id for d in flaky_opened}) == 1
    assert [d.answered for d in late_opened] == [200]
    entry = await record.get(key)
    assert entry is not None and entry.status is EffectStatus.PERFORMED
    assert entry.attempts >= 3  # refused at least twice, then delivered
    assert len(result["sent"]) == 4
    await record.aclose()
