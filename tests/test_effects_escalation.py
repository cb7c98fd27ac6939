"""An unknown send outcome in the support workflow (time-skipping server, in-process worker),
an unknown rollback outcome resolved by lookup, and a planned task whose outcome is unknown.

The first SMTP exchange breaks during DATA without a reply (``SmtpFailure(maybe_sent=True)``,
nothing actually sent): the retry finds the intent unfinished and, under the default policy
``escalate``, the workflow asks a person at ``confirm-reply-sent``. "Not sent" resolves the
record ``confirmed_not_performed`` and sends once; nobody answering ends the run
``escalated`` with nothing sent again and the record still ``unknown``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

import keel.activities.tools.email as email_tool
from keel.activities.effects import EffectStatus, SqliteEffectRecord
from keel.activities.tools.email import EmailSender, SmtpFailure
from keel.contracts.effects import EFFECT_OUTCOME_UNKNOWN, UnknownOutcome
from keel.contracts.email import message_id_for
from keel.contracts.ledger import (
    EffectOutcomeUnknown,
    EffectResolved,
    GateExpired,
    TaskCompleted,
    TaskFailed,
)
from keel.contracts.tools import ToolCall, ToolResult, tool_activity_name
from keel.scenarios.incident.contracts import RollbackDeployInput
from keel.scenarios.incident.tools import IncidentTools
from keel.scenarios.incident.world import IncidentWorld
from keel.scenarios.support_email import SupportEmailWorkflow
from keel.scenarios.support_email.tools import SupportDesk
from keel.testing import events_of
from keel.workers.smtp_sink import SmtpSink
from tests.conftest import keel_worker
from tests.helpers import decide, review, wait_for_gate
from tests.standins import ScriptedPlanner, plan, task
from tests.test_effects_db_cut import status_email
from tests.test_incident_workflow import start_incident


@pytest.fixture
def broken_first_exchange(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The first SMTP exchange breaks during DATA, nothing delivered; the rest go through."""
    real = email_tool.smtp_send
    calls: list[str] = []

    def flaky(
        host: str, port: int, timeout: float, sender: str, to: str, message: EmailMessage
    ) -> str:
        calls.append(str(message["Message-ID"]))
        if len(calls) == 1:
            raise SmtpFailure("connection reset during DATA", maybe_sent=True)
        return real(host, port, timeout, sender, to, message)

    monkeypatch.setattr(email_tool, "smtp_send", flaky)
    yield calls


@pytest.fixture
async def support(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[tuple[str, SmtpSink, SqliteEffectRecord]]:
    record = SqliteEffectRecord(tmp_path / "effects.sqlite3")
    with SmtpSink() as sink:
        sender = EmailSender(record, host="127.0.0.1", port=sink.port, sender="s@keel.test")
        tools = [*SupportDesk().activities(), *sender.activities()]
        async with keel_worker(ts_env.client, tools=tools) as task_queue:
            yield task_queue, sink, record
    await record.aclose()


async def test_not_sent_resolves_the_record_and_sends_once(
    ts_env: WorkflowEnvironment,
    support: tuple[str, SmtpSink, SqliteEffectRecord],
    broken_first_exchange: list[str],
) -> None:
    task_queue, sink, record = support
    handle = await ts_env.client.start_workflow(
        SupportEmailWorkflow.run,
        status_email(),
        id=f"support-{uuid.uuid4()}",
        task_queue=task_queue,
    )
    key = f"{handle.id}/send-reply"
    gate = await wait_for_gate(handle, "confirm-reply-sent")
    assert gate.context["message_id"] == message_id_for(key)
    assert gate.reason is not None and message_id_for(key) in gate.reason
    entry = await record.get(key)
    assert entry is not None and entry.status is EffectStatus.UNKNOWN
    assert sink.count() == 0 and len(broken_first_exchange) == 1  # no silent resend
    await decide(
        handle,
        review("confirm-reply-sent", "reject", "support.lead.chen", comment="not in the log"),
    )
    result = await handle.result()
    assert result.outcome == "replied" and result.reason.startswith("reply sent (again")
    assert sink.count() == sink.count(message_id_for(key)) == 1
    (resolved,) = events_of(result.ledger, EffectResolved)
    assert (resolved.resolution, resolved.by) == ("confirmed_not_performed", "support.lead.chen")
    assert len(events_of(result.ledger, EffectOutcomeUnknown)) == 1
    (sent,) = [e for e in events_of(result.ledger, TaskCompleted) if e.ref == "send-reply"]
    assert sent.effect is not None and sent.effect["unknown_resolved_by"] == "person"
    entry = await record.get(key)
    assert entry is not None and entry.status is EffectStatus.PERFORMED


async def test_nobody_answering_ends_escalated_and_nothing_is_sent_again(
    ts_env: WorkflowEnvironment,
    support: tuple[str, SmtpSink, SqliteEffectRecord],
    broken_first_exchange: list[str],
) -> None:
    task_queue, sink, record = support
    handle = await ts_env.client.start_workflow(
        SupportEmailWorkflow.run,
        status_email(),
        id=f"support-{uuid.uuid4()}",
        task_queue=task_queue,
    )
    result = await handle.result()  # the SLAs (4 h, then 20 h) pass in skipped time
    assert result.outcome == "escalated"
    assert "nobody confirmed whether the reply reached the customer" in result.reason
    assert result.reply_message_id is None
    assert [e.gate for e in events_of(result.ledger, GateExpired)] == ["confirm-reply-sent"]
    assert not events_of(result.ledger, EffectResolved)
    assert sink.count() == 0 and len(broken_first_exchange) == 1
    entry = await record.get(f"{handle.id}/send-reply")
    assert entry is not None and entry.status is EffectStatus.UNKNOWN


ROLLBACK = {"service": "checkout-api", "deploy_id": "dep-7f3a91", "to_version": "1.41.3"}


async def test_an_unknown_rollback_is_looked_up_not_repeated(tmp_path: Path) -> None:
    record = SqliteEffectRecord(tmp_path / "effects.sqlite3")
    tools = IncidentTools(IncidentWorld(record.store, namespace=uuid.uuid4().hex), record)
    key = f"incident-{uuid.uuid4().hex}/r1/rb"

    async def rolled_back_then_died(k: str) -> tuple[str, dict[str, Any]]:
        await tools.world.rollback(k, **ROLLBACK)
        raise ConnectionResetError("the worker died after the deploy API acted")

    request = RollbackDeployInput(**ROLLBACK).model_dump(mode="json")
    try:
        with pytest.raises(ConnectionResetError):
            await record.perform_once(key, "rollback_deploy", request, rolled_back_then_died)
        call = ToolCall(tool="rollback_deploy", input=ROLLBACK, idempotency_key=key)
        result: ToolResult = await ActivityEnvironment().run(tools.rollback_deploy, call)
        actions = await tools.world.deploy_actions("checkout-api")
        entry = await record.get(key)
    finally:
        await tools.aclose()
    assert [a["kind"] for a in actions] == ["rollback"]  # once, by the attempt that died
    assert result.effect is not None and result.effect.replayed
    assert result.effect.unknown_resolved_by == "lookup"
    assert result.effect.provider_id == actions[0]["action_id"] == result.output["action_id"]
    assert entry is not None and (entry.status, entry.resolution) == ("performed", "lookup:found")


async def test_a_planned_task_with_an_unknown_outcome_fails_with_the_reason(
    ts_env: WorkflowEnvironment,
) -> None:
    attempts: list[int] = []

    @activity.defn(name=tool_activity_name("update_incident"))
    async def unknown_note(call: ToolCall) -> ToolResult:
        attempts.append(activity.info().attempt)
        outcome = UnknownOutcome(
            idempotency_key=call.idempotency_key,
            tool=call.tool,
            policy="escalate",
            intent_at=datetime(2026, 3, 14, 9, 0, tzinfo=UTC),
            unknown_at=datetime(2026, 3, 14, 9, 1, tzinfo=UTC),
            attempts=2,
            found_by="record entry 2",
        )
        raise ApplicationError(
            "the outcome is unknown",
            outcome.model_dump(mode="json"),
            type=EFFECT_OUTCOME_UNKNOWN,
            non_retryable=True,
        )

    planner = ScriptedPlanner(plan(task("notify", "update_incident")))
    async with keel_worker(ts_env.client, provider=planner, tools=[unknown_note]) as task_queue:
        result = await (await start_incident(ts_env.client, task_queue)).result()
    (failed,) = events_of(result.ledger, TaskFailed)
    assert failed.ref == "notify"
    assert "the outcome of update_incident for task 'notify' is unknown" in failed.error
    assert "so it was not repeated" in failed.error and "/r1/notify" in failed.error
    assert attempts == [1]  # not retried, not resent: the plan sees why
    assert result.outcome == "compensated" and not events_of(result.ledger, TaskCompleted)
