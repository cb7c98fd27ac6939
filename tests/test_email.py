"""``send_email`` over real SMTP to a local sink: once per key, whatever the worker does.

The activity tests run it under ``ActivityEnvironment`` against an ``SmtpSink``; the
integration tests run it as ``KeelToolTask`` on a dev server, and kill a worker process with
SIGKILL after the SMTP server accepted the message and before the activity completed: a
second worker finishes the task and the server has received the message once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from keel.activities.effects import (
    EffectRecord,
    PostgresEffectRecord,
    SqliteEffectRecord,
    open_effect_record,
)
from keel.activities.tools.email import FAULT_EXIT_AFTER_EFFECT_ENV, EmailSender
from keel.contracts.email import SEND_EMAIL, SendEmailOutput, message_id_for
from keel.contracts.signing import Keyring, SigningKey, WorkerKeys
from keel.contracts.tools import (
    CATALOG,
    TOOL_TASK_WORKFLOW,
    ToolCall,
    ToolResult,
    ToolTaskInput,
    tool_activity_name,
)
from keel.settings import KeelSettings
from keel.workers.runtime import engine_activities
from keel.workers.smtp_sink import SmtpSink, count_mail, read_mailbox
from keel.workflows.tool_task import ToolTaskWorkflow
from tests.conftest import REVIEW_ENV, free_port
from tests.email_worker import SENDER
from tests.probe_sealed import ToolTaskParentProbe
from tests.test_effects import PG_URL

ACTIVITY_TIMEOUT = timedelta(seconds=4)
"""The kill test's tool timeout: how long the dead worker's attempt goes unnoticed."""

ROOT = Path(__file__).resolve().parent.parent
REPLY = {
    "to": "dana@customer.example",
    "subject": "Re: order #4521 arrived damaged",
    "body": "Hi Dana,\n\nWe are sorry: a replacement ships today.\n\n-- Support",
}


def new_key(step: str = "send-reply") -> str:
    return f"test-{uuid.uuid4().hex}/r1/{step}"


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(mailbox=tmp_path / "mailbox.jsonl") as running:
        yield running


@pytest.fixture(params=["sqlite", "postgres"])
async def effects(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EffectRecord]:
    record: EffectRecord
    if request.param == "postgres":
        record = PostgresEffectRecord(PG_URL)
    else:
        record = SqliteEffectRecord(tmp_path / "effects.sqlite3")
    yield record
    await record.aclose()


@pytest.fixture
def sender(effects: EffectRecord, sink: SmtpSink) -> EmailSender:
    return EmailSender(effects, host="127.0.0.1", port=sink.port, sender=SENDER, timeout=5)


async def send(sender: EmailSender, key: str, **overrides: Any) -> ToolResult:
    call = ToolCall(tool="send_email", input={**REPLY, **overrides}, idempotency_key=key)
    result: ToolResult = await ActivityEnvironment().run(sender.send_email, call)
    assert result.tool == "send_email"
    return result


async def refused(sender: EmailSender, call: ToolCall) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(sender.send_email, call)
    return caught.value


# --- the activity ----------------------------------------------------------------------------


def test_send_email_is_a_catalog_tool_and_an_activity() -> None:
    assert CATALOG.get("send_email") is SEND_EMAIL
    assert SEND_EMAIL.side_effects and not SEND_EMAIL.needs_approval
    definition = activity._Definition.must_from_callable(EmailSender.send_email)
    assert definition.name == tool_activity_name("send_email") == "keel.tool.send_email"
    key = "support-42/r1/send-reply"
    assert message_id_for(key) == message_id_for(key) != message_id_for(key + "x")
    assert message_id_for(key).startswith("<") and message_id_for(key).endswith("@keel>")
    assert len(message_id_for(key)) == len("<@keel>") + 32


async def test_sends_once_per_key(sender: EmailSender, sink: SmtpSink) -> None:
    key = new_key()
    first = await send(sender, key)
    output = SendEmailOutput.model_validate(first.output)
    assert output.message_id == message_id_for(key)
    assert output.smtp_response == "250 Message accepted for delivery"
    assert first.effect is not None and not first.effect.replayed
    assert first.effect.idempotency_key == key
    assert first.effect.provider_id == output.message_id

    assert sink.count() == 1 and sink.count(output.message_id) == 1
    (mail,) = sink.messages
    assert (mail.mail_from, mail.rcpt_tos) == (SENDER, [REPLY["to"]])
    assert mail.message_id == message_id_for(key)
    assert mail.subject == REPLY["subject"]
    assert mail.body.rstrip("\n") == REPLY["body"]
    headers = dict(mail.headers)
    assert (headers["From"], headers["To"]) == (SENDER, REPLY["to"])
    assert parsedate_to_datetime(headers["Date"]).tzinfo is not None
    assert "In-Reply-To" not in headers

    again = await send(sender, key)
    assert again.effect is not None and again.effect.replayed
    assert again.effect.provider_id == output.message_id
    assert again.output == first.output
    assert sink.count() == 1

    other_key = new_key("send-followup")
    other = await send(sender, other_key)
    assert other.output["message_id"] == message_id_for(other_key) != output.message_id
    assert sink.count() == 2 and sink.count(output.message_id) == 1
    assert sink.mailbox is not None
    assert [m.message_id for m in read_mailbox(sink.mailbox)] == [
        message_id_for(key),
        message_id_for(other_key),
    ]

    entry = await sender.effects.get(key)
    assert entry is not None
    assert (entry.tool, entry.status, entry.attempts) == ("send_email", "performed", 1)
    assert entry.provider_id == message_id_for(key)


async def test_a_reply_threads_and_unicode_survives(sender: EmailSender, sink: SmtpSink) -> None:
    original = "<CAF3x9-order-4521@mail.customer.example>"
    await send(sender, new_key(), in_reply_to=original, subject="Re: Größe ✓", body="Grüße ✓")
    (mail,) = sink.messages
    headers = dict(mail.headers)
    assert headers["In-Reply-To"] == headers["References"] == original
    assert mail.subject == "Re: Größe ✓"
    assert mail.body.rstrip("\n") == "Grüße ✓"


async def test_smtp_down_is_retryable_and_the_retry_sends_once(
    effects: EffectRecord, sink: SmtpSink
) -> None:
    closed = EmailSender(effects, host="127.0.0.1", port=free_port(), sender=SENDER, timeout=5)
    key = new_key()
    call = ToolCall(tool="send_email", input=REPLY, idempotency_key=key)
    err = await refused(closed, call)
    assert (err.type, err.non_retryable) == ("SmtpUnavailable", False)
    assert "unavailable" in str(err)
    entry = await effects.get(key)
    assert entry is not None and (entry.status, entry.attempts) == ("not_performed", 1)
    assert entry.failure is not None and "unavailable" in entry.failure

    # The retry reaches a server: it sends, once.
    up = EmailSender(effects, host="127.0.0.1", port=sink.port, sender=SENDER)
    result: ToolResult = await ActivityEnvironment().run(up.send_email, call)
    assert result.effect is not None and not result.effect.replayed
    assert sink.count() == sink.count(message_id_for(key)) == 1
    entry = await effects.get(key)
    assert entry is not None and (entry.status, entry.attempts) == ("performed", 2)


async def test_4xx_is_retryable_5xx_is_permanent(sender: EmailSender, sink: SmtpSink) -> None:
    key = new_key()
    call = ToolCall(tool="send_email", input=REPLY, idempotency_key=key)
    sink.refuse_with = "451 4.3.0 Mailbox busy, try again later"
    err = await refused(sender, call)
    assert (err.type, err.non_retryable) == ("SmtpTransientFailure", False)
    assert "451" in str(err) and err.details == ({"code": 451},)

    sink.refuse_with = "550 5.1.1 No such user"
    err = await refused(sender, call)
    assert (err.type, err.non_retryable) == ("SmtpRejected", True)
    assert "550 5.1.1 No such user" in str(err)
    assert sink.count() == 0

    sink.refuse_with = None
    await send(sender, key)
    assert sink.count() == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("to", "not-an-address"),
        ("to", "Dana <dana@customer.example>"),
        ("to", "dana@customer.example\r\nBcc: everyone@example.com"),
        ("subject", "Re: hi\r\nBcc: everyone@example.com"),
        ("subject", ""),
        ("body", ""),
        ("in_reply_to", "no-angle-brackets@example.com"),
        ("cc", "extra@example.com"),
    ],
)
async def test_invalid_input_is_permanent(
    sender: EmailSender, sink: SmtpSink, field: str, value: str
) -> None:
    call = ToolCall(tool="send_email", input={**REPLY, field: value}, idempotency_key=new_key())
    err = await refused(sender, call)
    assert (err.type, err.non_retryable) == ("InvalidToolInput", True)
    assert field in str(err)
    assert sink.count() == 0


async def test_a_send_needs_a_key_and_its_own_tool(sender: EmailSender, sink: SmtpSink) -> None:
    for call in (
        ToolCall(tool="send_email", input=REPLY, idempotency_key=""),
        ToolCall(tool="update_incident", input=REPLY, idempotency_key=new_key()),
    ):
        err = await refused(sender, call)
        assert (err.type, err.non_retryable) == ("InvalidToolInput", True)
    key = new_key()
    await send(sender, key)
    err = await refused(
        sender, ToolCall(tool="send_email", input={**REPLY, "body": "else"}, idempotency_key=key)
    )
    assert (err.type, err.non_retryable) == ("IdempotencyKeyConflict", True)
    assert sink.count() == 1


async def test_the_fault_switch_kills_after_the_effect_only(
    sender: EmailSender, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    kills: list[tuple[int, int, int]] = []

    def fake_kill(pid: int, sig: int) -> None:
        kills.append((pid, sig, sink.count()))

    monkeypatch.setattr(os, "kill", fake_kill)  # the switch calls os.kill at send time
    monkeypatch.setenv(FAULT_EXIT_AFTER_EFFECT_ENV, "rollback_deploy")
    await send(sender, new_key("a"))
    assert kills == []

    monkeypatch.setenv(FAULT_EXIT_AFTER_EFFECT_ENV, "rollback_deploy, send_email")
    key = new_key("b")
    await send(sender, key)
    # After the server accepted and the record says performed; not again on a replay.
    assert kills == [(os.getpid(), signal.SIGKILL, 2)]
    entry = await sender.effects.get(key)
    assert entry is not None and entry.status == "performed"
    await send(sender, key)
    assert len(kills) == 1


def test_the_sink_binds_a_given_port_and_restarts(tmp_path: Path) -> None:
    port = free_port()
    mailbox = tmp_path / "box" / "mail.jsonl"
    with SmtpSink(port, mailbox=mailbox) as sink:
        assert sink.port == port
    assert mailbox.exists() and read_mailbox(mailbox) == []
    assert read_mailbox(tmp_path / "missing.jsonl") == []
    with pytest.raises(RuntimeError):
        _ = sink.port
    sink.start()
    try:
        assert sink.port == port
    finally:
        sink.stop()


# --- on a dev server, with real worker processes ---------------------------------------------


async def test_send_email_runs_as_keel_tool_task(
    dev_env: WorkflowEnvironment, sink: SmtpSink, tmp_path: Path
) -> None:
    task_queue = f"email-{uuid.uuid4()}"
    sender = EmailSender(
        SqliteEffectRecord(tmp_path / "effects.sqlite3"),
        host="127.0.0.1",
        port=sink.port,
        sender=SENDER,
    )
    workflow_id = f"support-{uuid.uuid4().hex[:8]}/r1/send-reply"
    task = ToolTaskInput(
        parent_workflow_id=workflow_id.split("/")[0],
        round=1,
        ref="send-reply",
        tool="send_email",
        input=REPLY,
        purpose="reply to the customer",
    )
    keys = WorkerKeys(SigningKey.generate(), Keyring())
    async with Worker(
        dev_env.client,
        task_queue=task_queue,
        workflows=[ToolTaskWorkflow, ToolTaskParentProbe],
        activities=[*sender.activities(), *engine_activities(keys)],
    ):
        # Started by hand, the task sends nothing; started by its parent, it sends once.
        with pytest.raises(WorkflowFailureError):
            await dev_env.client.execute_workflow(
                TOOL_TASK_WORKFLOW, task, id=workflow_id, task_queue=task_queue
            )
        assert sink.count() == 0
        result = await dev_env.client.execute_workflow(
            ToolTaskParentProbe.run,
            args=[task, workflow_id],
            id=task.parent_workflow_id,
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=60),
        )
    await sender.aclose()
    assert result.effect is not None and not result.effect.replayed
    assert result.effect.idempotency_key == workflow_id
    assert result.effect.provider_id == result.output["message_id"] == message_id_for(workflow_id)
    assert sink.count() == sink.count(message_id_for(workflow_id)) == 1


class WorkerProcess:
    """``python -m tests.email_worker``, its output collected as it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, env: dict[str, str]) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.email_worker",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        worker = cls(proc)
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while "email worker: ready" not in (line := (await proc.stdout.readline()).decode()):
                assert line, f"the email worker exited before it was ready:\n{worker.output}"
                worker.lines.append(line)
        worker._drain = asyncio.create_task(worker._read())
        return worker

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode())

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def wait(self, timeout: float = 30) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout=timeout)
        if self._drain is not None:
            await self._drain
        return code

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        await self.wait()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_worker_killed_mid_send_does_not_send_twice(
    dev_env: WorkflowEnvironment, tmp_path: Path, backend: str
) -> None:
    began = time.monotonic()
    settings = KeelSettings(
        _env_file=None,
        data_dir=tmp_path / "data",
        database_url=PG_URL if backend == "postgres" else None,
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"KEEL_DATABASE_URL", FAULT_EXIT_AFTER_EFFECT_ENV}
    }
    env |= {
        "PYTHONPATH": str(ROOT),
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace,
        "KEEL_TASK_QUEUE": f"email-kill-{uuid.uuid4()}",
        **REVIEW_ENV,  # the test kit signs the reviews these processes take
        "KEEL_DATA_DIR": str(settings.data_dir),
    }
    if settings.database_url:
        env["KEEL_DATABASE_URL"] = settings.database_url
    workflow_id = f"support-{uuid.uuid4().hex[:8]}/r1/send-reply"
    message_id = message_id_for(workflow_id)
    task = ToolTaskInput(
        parent_workflow_id=workflow_id.split("/")[0],
        round=1,
        ref="send-reply",
        tool="send_email",
        input=REPLY,
        timeout_seconds=ACTIVITY_TIMEOUT.total_seconds(),
    )
    record = open_effect_record(settings)
    mailbox = tmp_path / "mailbox.jsonl"
    with SmtpSink(mailbox=mailbox) as sink:
        env["KEEL_TEST_SMTP_PORT"] = str(sink.port)
        doomed = await WorkerProcess.start(env | {FAULT_EXIT_AFTER_EFFECT_ENV: "send_email"})
        handle = await dev_env.client.start_workflow(
            ToolTaskParentProbe.run,
            args=[task, workflow_id],
            id=task.parent_workflow_id,
            task_queue=env["KEEL_TASK_QUEUE"],
            execution_timeout=timedelta(seconds=90),
        )
        child = dev_env.client.get_workflow_handle(workflow_id)
        # The first worker sends, records the effect, and dies before completing the activity.
        assert await doomed.wait() == -signal.SIGKILL, doomed.output
        assert "killing worker pid" in doomed.output
        assert sink.count() == sink.count(message_id) == 1
        assert count_mail(read_mailbox(mailbox), message_id) == 1
        entry = await record.get(workflow_id)
        assert entry is not None and (entry.status, entry.attempts) == ("performed", 1)
        killed_at = time.monotonic()

        second = await WorkerProcess.start(env)
        try:
            result = await asyncio.wait_for(handle.result(), timeout=60)
        finally:
            await second.stop()
        recovered_in = time.monotonic() - killed_at

        assert result.effect is not None and result.effect.replayed
        assert result.effect.provider_id == result.output["message_id"] == message_id
        assert sink.count() == sink.count(message_id) == 1
    await record.aclose()
    assert [m.message_id for m in read_mailbox(mailbox)] == [message_id]

    # Temporal retried the attempt after its timeout; the second attempt found it performed.
    started = [
        event.activity_task_started_event_attributes.attempt
        async for event in child.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    assert started == [2]
    print(
        f"\n{backend}: retried after the {ACTIVITY_TIMEOUT.total_seconds():.0f}s activity timeout, "
        f"recovered {recovered_in:.1f}s after the kill, {time.monotonic() - began:.1f}s in all"
    )
