"""Exactly one notification per gate event across a ``keel worker`` killed with SIGKILL at
the instant that matters: the webhook receiver has the request, the activity has not
completed.

The receiver keeps each request before it answers, and holds its answer to the first one
until the test has killed the worker (``tests.notify_receiver``), so the side-effect record
says ``intent`` for the webhook delivery while the receiver has it. The email channel's
delivery of the same event (through the SMTP sink, with STARTTLS and AUTH) is recorded
``performed`` before the kill; whether its completion reached the server first is left to
chance, and does not matter.

A second worker takes over. What is counted, per channel, on the receiving end:

* webhook ``raw`` requests: 3 (opened twice: the dead attempt's and the resend, which
  carries the same ``Keel-Delivery-Id`` because the outcome was unknown; decided once);
  ``distinct`` delivery ids: 2, one per gate event;
* email messages: 2 and distinct Message-IDs: 2 (the retry, if any, found ``performed``
  and sent nothing).
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from keel.activities.effects import EffectStatus, SqliteEffectRecord
from keel.contracts.email import message_id_for
from keel.contracts.notifications import idempotency_key
from keel.workers.smtp_sink import SmtpSink
from tests.apps.notify_probe import NotifyProbeWorkflow
from tests.notify_receiver import WebhookReceiver
from tests.test_fault_injection import KeelWorker, worker_env
from tests.test_notify_webhooks import SECRET

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
USER, PASSWORD = "keel-notify", "sink password 1"


async def until(check: Any, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


async def test_sigkill_between_the_receiver_and_the_record_tells_each_event_once(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    queue = f"notify-kill-{uuid.uuid4()}"
    workflow_id = f"notify-kill-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "data"
    record = SqliteEffectRecord(data_dir / "effects.sqlite3")
    with (
        WebhookReceiver() as receiver,
        SmtpSink(tls=True, credentials={USER: PASSWORD}) as sink,
    ):
        receiver.state.hold = threading.Event()
        channels = {
            "hook": {"kind": "webhook", "url": receiver.url, "secret": SECRET},
            "mail": {
                "kind": "email",
                "host": "127.0.0.1",
                "port": sink.port,
                "ca_file": str(sink.ca_file),
                "username": USER,
                "password": PASSWORD,
                "sender": "keel@keel.example",
                "to": ["legal-team@keel.example"],
            },
        }
        env = worker_env(
            client.service_client.config.target_host,
            queue,
            data_dir,
            sink.port,
            KEEL_APPS="tests.apps.notify_probe",
            KEEL_NOTIFY_CHANNELS=json.dumps(channels),
            PYTHONPATH=str(REPO),
        )
        doomed = await KeelWorker.start(env, tmp_path)
        survivor: KeelWorker | None = None
        try:
            handle = await client.start_workflow(
                NotifyProbeWorkflow.run,
                {"channels": ["hook", "mail"]},
                id=workflow_id,
                task_queue=queue,
            )
            run_id = (await handle.describe()).run_id or ""
            hook_key = idempotency_key(workflow_id, run_id, "legal", "opened", "hook")
            mail_key = idempotency_key(workflow_id, run_id, "legal", "opened", "mail")

            async def status(key: str) -> EffectStatus | None:
                entry = await record.get(key)
                return entry.status if entry else None

            async def mail_performed() -> bool:
                return await status(mail_key) is EffectStatus.PERFORMED

            await asyncio.to_thread(receiver.wait_for, 1)
            await until(mail_performed)
            assert await status(hook_key) is EffectStatus.INTENT
            doomed.proc.send_signal(signal.SIGKILL)  # the receiver has it; nobody recorded it
            assert await doomed.proc.wait() == -signal.SIGKILL
            receiver.state.hold.set()
            receiver.state.hold = None
            assert (receiver.raw(), sink.count()) == (1, 1)

            survivor = await KeelWorker.start(env, tmp_path)
            # The dead attempt's heartbeat times out (10 s); the retry finds the intent
            # unfinished (unknown outcome) and resends with the same delivery id.
            await asyncio.to_thread(receiver.wait_for, 2, 90)
            await handle.signal(NotifyProbeWorkflow.decide, "gc.morgan")
            result = await asyncio.wait_for(handle.result(), 90)
        finally:
            await doomed.stop()
            if survivor is not None:
                await survivor.stop()
        deliveries = receiver.deliveries
        mails = sink.messages

    opened = [d for d in deliveries if d.json()["type"] == "keel.gate.opened"]
    assert len(opened) == 2 and len({d.delivery_id for d in opened}) == 1
    assert opened[0].body == opened[1].body  # the same event, byte for byte
    assert (len(deliveries), len({d.delivery_id for d in deliveries})) == (3, 2)
    assert len(mails) == 2 and len({m.message_id for m in mails}) == 2
    assert message_id_for(mail_key) in {m.message_id for m in mails}
    hook_entry = await record.get(hook_key)
    assert hook_entry is not None
    assert (hook_entry.status, hook_entry.resolution) == (EffectStatus.PERFORMED, "resend")
    assert hook_entry.unknown_found_by is not None
    sent = {(s["channel"], s["kind"]): s for s in result["sent"]}
    assert sent["hook", "opened"]["resent_after_unknown"] is True
    assert sent["mail", "decided"]["resent_after_unknown"] is False
    assert result["failed"] == []
    await record.aclose()
