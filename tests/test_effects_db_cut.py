"""The side-effect record's PostgreSQL connections cut by a TCP proxy the test controls, right
after the SMTP server accepted the message: never a second send, and the record still ends
``performed`` (its write retried on fresh connections, or recorded later by the workflow)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from keel.activities.effects import EffectRecord, EffectStatus, PostgresEffectRecord
from keel.activities.sqlstore import PostgresStore
from keel.activities.tools.email import EmailSender
from keel.contracts.email import message_id_for
from keel.contracts.ledger import TaskCompleted
from keel.contracts.tools import ToolCall, ToolResult
from keel.scenarios.support_email import SupportEmailWorkflow
from keel.scenarios.support_email.contracts import SupportResult
from keel.scenarios.support_email.tools import SupportDesk
from keel.testing import events_of
from keel.workers.smtp_sink import ReceivedMail, SmtpSink
from tests.conftest import keel_worker
from tests.tcp_proxy import TcpProxy
from tests.test_effects import PG_URL

RUNS = 5
REPLY = {
    "to": "dana@customer.example",
    "subject": "Re: order #4521",
    "body": "Hi Dana,\n\nA replacement ships today.\n\n-- Support",
}


class HookedSink(SmtpSink):
    """The SMTP sink, calling ``on_accept`` with each message before it answers 250."""

    def __init__(self, on_accept: Callable[[ReceivedMail], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_accept = on_accept

    def _keep(self, mail: ReceivedMail) -> None:
        super()._keep(mail)
        self.on_accept(mail)


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    upstream = urlsplit(PG_URL)
    running = await TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432).start()
    yield running
    await running.aclose()


def proxied_url(proxy: TcpProxy) -> str:
    return urlsplit(PG_URL)._replace(netloc=f"postgres@127.0.0.1:{proxy.port}").geturl()


def proxied_record(proxy: TcpProxy, record_retry_seconds: float) -> EffectRecord:
    store = PostgresStore(proxied_url(proxy), connect_timeout_seconds=2, acquire_timeout_seconds=2)
    return EffectRecord(store, record_retry_seconds=record_retry_seconds)


def activity_env() -> ActivityEnvironment:
    """An activity context whose attempt started now, with a 30 s start-to-close timeout."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, started_time=datetime.now(UTC), start_to_close_timeout=timedelta(seconds=30)
    )
    return env


async def test_cut_connections_after_the_smtp_acceptance_never_send_twice(
    proxy: TcpProxy,
) -> None:
    record = proxied_record(proxy, record_retry_seconds=20)
    direct = PostgresEffectRecord(PG_URL)
    with HookedSink(lambda _mail: proxy.from_thread()) as sink:  # cut at every acceptance
        sender = EmailSender(record, host="127.0.0.1", port=sink.port, sender="s@keel.test")
        try:
            for run in range(1, RUNS + 1):
                key = f"test-{uuid.uuid4().hex}/send-reply"
                call = ToolCall(tool="send_email", input=REPLY, idempotency_key=key)
                result: ToolResult = await activity_env().run(sender.send_email, call)
                assert result.effect is not None
                assert (result.effect.replayed, result.effect.recorded) == (False, True)
                assert sink.count(message_id_for(key)) == 1 and sink.count() == run
                entry = await direct.get(key)
                assert entry is not None and entry.status is EffectStatus.PERFORMED
                assert (entry.attempts, entry.provider_id) == (1, message_id_for(key))
                again: ToolResult = await activity_env().run(sender.send_email, call)
                assert again.effect is not None and again.effect.replayed
                assert sink.count() == run  # 0 duplicates
        finally:
            await record.aclose()
            await direct.aclose()
    assert proxy.cuts == RUNS
    assert proxy.accepted > 2 * RUNS  # every cut forced fresh connections


def status_email() -> dict[str, Any]:
    """An order-status email (no refund gate): the workflow goes straight to the send."""
    return {
        "message_id": f"<status-{uuid.uuid4().hex[:8]}@mail.example.com>",
        "from_address": "tom.okafor@example.com",
        "subject": "where is my order AB-104871?",
        "body": "Hello,\n\nwhere is my order AB-104871? Two desk lamps.\n\nThanks,\nTom",
        "received_at": "2026-03-14T09:50:00Z",
    }


async def test_an_outage_past_the_write_retry_is_recorded_by_the_workflow(
    ts_env: WorkflowEnvironment, proxy: TcpProxy, tmp_path: Path
) -> None:
    outage = 4.0
    loop = asyncio.get_running_loop()

    def outage_at_acceptance(_mail: ReceivedMail) -> None:
        proxy.from_thread(refusing=True)
        loop.call_soon_threadsafe(loop.call_later, outage, proxy.refuse, False)

    record = proxied_record(proxy, record_retry_seconds=1)
    direct = PostgresEffectRecord(PG_URL)
    with HookedSink(outage_at_acceptance) as sink:
        sender = EmailSender(record, host="127.0.0.1", port=sink.port, sender="s@keel.test")
        tools = [*SupportDesk().activities(), *sender.activities()]
        try:
            async with keel_worker(ts_env.client, tools=tools) as task_queue:
                handle = await ts_env.client.start_workflow(
                    SupportEmailWorkflow.run,
                    status_email(),
                    id=f"support-{uuid.uuid4()}",
                    task_queue=task_queue,
                )
                result: SupportResult = await handle.result()
            key = f"{handle.id}/send-reply"
            entry = await direct.get(key)
        finally:
            await record.aclose()
            await direct.aclose()
        assert result.outcome == "replied" and result.reply_message_id == message_id_for(key)
        assert sink.count() == sink.count(message_id_for(key)) == 1
    assert entry is not None and entry.status is EffectStatus.PERFORMED and entry.attempts == 1
    (sent,) = [e for e in events_of(result.ledger, TaskCompleted) if e.ref == "send-reply"]
    assert sent.effect is not None and sent.effect["recorded"] is True
    # The send came back "performed, not recorded"; the workflow's record activity wrote it.
    kinds = [e.activity_type.name async for e in activity_events(handle)]
    assert kinds.count("keel.tool.send_email") == 1
    assert "keel.tool.send_email.record_outcome" in kinds


async def activity_events(handle: Any) -> AsyncIterator[Any]:
    from temporalio.api.enums.v1 import EventType

    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            yield event.activity_task_scheduled_event_attributes
