"""A ``keel worker`` killed with SIGKILL between the SMTP server's acceptance and the record's
update, deterministically: the test's SMTP sink, on receiving DATA, takes a row lock on the
effect's row in PostgreSQL (``SELECT ... FOR UPDATE``) and only then answers 250, so the
worker's ``performed`` update blocks; the test sees it blocked (``pg_blocking_pids``), kills
the worker, releases the lock and starts another worker.

Two support workflows go through it at once, one per policy:

* ``escalate`` (the default): the retry finds the intent unfinished, marks it ``unknown``
  and fails the send with ``EffectOutcomeUnknown``; the workflow opens
  ``confirm-reply-sent``; a person confirms the reply went out; the run completes
  ``replied`` with exactly one message received.
* ``resend`` (``KEEL_SMTP_UNKNOWN_OUTCOME=resend``): the retry sends again with the same
  Message-ID; the receiver, deduplicating by Message-ID, has one distinct message.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from keel.activities.effects import EffectStatus, PostgresEffectRecord
from keel.contracts.email import message_id_for
from keel.contracts.ledger import EffectOutcomeUnknown, EffectResolved, TaskCompleted
from keel.scenarios.support_email import SupportEmailWorkflow
from keel.scenarios.support_email.contracts import SupportResult
from keel.testing import events_of
from keel.workers.smtp_sink import ReceivedMail
from tests.helpers import decide, review, wait_for_gate
from tests.test_effects import PG_URL
from tests.test_effects_db_cut import HookedSink, status_email
from tests.test_fault_injection import KeelWorker, worker_env

pytestmark = pytest.mark.integration


class RowLocks:
    """On the first delivery of a watched Message-ID, lock its effect row, then let the sink
    answer 250; ``release()`` ends every lock."""

    def __init__(self, keys: list[str]) -> None:
        self.watch = {message_id_for(key): key for key in keys}
        self.held: dict[str, psycopg.Connection[Any]] = {}
        self.lock = threading.Lock()

    def on_accept(self, mail: ReceivedMail) -> None:
        with self.lock:
            key = self.watch.pop(mail.message_id or "", None)
            if key is None:
                return
            conn = psycopg.connect(PG_URL)  # a transaction, open until release()
            row = conn.execute(
                "SELECT status FROM keel_effects WHERE idempotency_key = %s FOR UPDATE", (key,)
            ).fetchone()
            assert row == ("intent",), row
            self.held[key] = conn

    def backend_pid(self, key: str) -> int | None:
        with self.lock:
            conn = self.held.get(key)
            return conn.info.backend_pid if conn else None

    def release(self) -> None:
        with self.lock:
            for conn in self.held.values():
                conn.rollback()
                conn.close()
            self.held.clear()


async def blocked_on(admin: psycopg.AsyncConnection[Any], locks: RowLocks, key: str) -> None:
    """Until a backend waits for the row lock of ``key`` (the worker's ``performed`` update)."""
    async with asyncio.timeout(60):
        while True:
            pid = locks.backend_pid(key)
            if pid is not None:
                cursor = await admin.execute(
                    "SELECT query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    (pid,),
                )
                waiting = [row[0] for row in await cursor.fetchall()]
                if any(q.startswith("UPDATE keel_effects SET status") for q in waiting):
                    return
            await asyncio.sleep(0.05)


async def test_sigkill_after_the_smtp_acceptance_escalates_or_resends_never_silently(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    address = client.service_client.config.target_host
    ids = {policy: f"sigkill-{policy}-{uuid.uuid4().hex[:8]}" for policy in ("escalate", "resend")}
    keys = {policy: f"{wid}/send-reply" for policy, wid in ids.items()}
    queues = {policy: f"sigkill-{policy}-{uuid.uuid4()}" for policy in ids}
    locks = RowLocks(list(keys.values()))
    mailbox = tmp_path / "mailbox.jsonl"
    record = PostgresEffectRecord(PG_URL)
    admin = await psycopg.AsyncConnection.connect(PG_URL, autocommit=True)
    with HookedSink(locks.on_accept, mailbox=mailbox) as sink:

        def env(policy: str, **extra: str) -> dict[str, str]:
            base = worker_env(address, queues[policy], tmp_path / "data", sink.port)
            return base | {"KEEL_DATABASE_URL": PG_URL, "KEEL_CODEC": "off", **extra}

        doomed = [await KeelWorker.start(env(policy), tmp_path) for policy in ids]
        handles: dict[str, WorkflowHandle[Any, SupportResult]] = {
            policy: await client.start_workflow(
                SupportEmailWorkflow.run,
                status_email(),
                id=ids[policy],
                task_queue=queues[policy],
            )
            for policy in ids
        }
        survivors: list[KeelWorker] = []
        try:
            for key in keys.values():
                await blocked_on(admin, locks, key)
            for worker in doomed:  # the server has the message; the record says "intent"
                worker.proc.send_signal(signal.SIGKILL)
                assert await worker.proc.wait() == -signal.SIGKILL
            locks.release()
            for key in keys.values():
                entry = await record.get(key)
                assert entry is not None and entry.status is EffectStatus.INTENT
                assert sink.count(message_id_for(key)) == 1

            survivors = [
                await KeelWorker.start(env("escalate"), tmp_path),
                await KeelWorker.start(env("resend", KEEL_SMTP_UNKNOWN_OUTCOME="resend"), tmp_path),
            ]
            # escalate: the retry (after the dead attempt's 30 s timeout) asks a person.
            gate = await wait_for_gate(handles["escalate"], "confirm-reply-sent", timeout=90)
            assert gate.reviewers == ["support.lead.chen"]
            assert gate.context["message_id"] == message_id_for(keys["escalate"])
            unknown = await record.get(keys["escalate"])
            assert unknown is not None and unknown.status is EffectStatus.UNKNOWN
            assert unknown.unknown_found_by is not None
            assert "activity attempt 2" in unknown.unknown_found_by
            assert sink.count(message_id_for(keys["escalate"])) == 1  # not resent
            await decide(
                handles["escalate"],
                review("confirm-reply-sent", "approve", "support.lead.chen", comment="in the log"),
            )
            results = {p: await asyncio.wait_for(h.result(), 90) for p, h in handles.items()}
        finally:
            locks.release()
            for worker in [*doomed, *survivors]:
                await worker.stop()
            await admin.close()
        messages = list(sink.messages)

    escalated, resent = results["escalate"], results["resend"]
    assert (escalated.outcome, escalated.reason) == (
        "replied",
        "reply sent (confirmed by a person)",
    )
    assert escalated.reply_message_id == message_id_for(keys["escalate"])
    assert [m.message_id for m in messages].count(message_id_for(keys["escalate"])) == 1
    (unknown_event,) = events_of(escalated.ledger, EffectOutcomeUnknown)
    assert (unknown_event.idempotency_key, unknown_event.policy) == (keys["escalate"], "escalate")
    (resolved,) = events_of(escalated.ledger, EffectResolved)
    assert (resolved.resolution, resolved.by, resolved.gate) == (
        "confirmed_performed",
        "support.lead.chen",
        "confirm-reply-sent",
    )
    confirmed = await record.get(keys["escalate"])
    assert confirmed is not None and confirmed.status is EffectStatus.CONFIRMED_PERFORMED

    assert resent.outcome == "replied"
    copies = [m for m in messages if m.message_id == message_id_for(keys["resend"])]
    assert len(copies) == 2 and len({m.message_id for m in copies}) == 1  # one distinct
    assert not events_of(resent.ledger, EffectOutcomeUnknown)
    (sent,) = [e for e in events_of(resent.ledger, TaskCompleted) if e.ref == "send-reply"]
    assert sent.effect is not None and sent.effect["unknown_resolved_by"] == "resend"
    entry = await record.get(keys["resend"])
    assert entry is not None and (entry.status, entry.resolution) == ("performed", "resend")
    await record.aclose()
