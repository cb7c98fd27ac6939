"""Support email on the time-skipping server: PII scrubbed before the model, a guard that
repairs a bad draft, refund approval, a prompt injection denied, the reply sent once."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from keel.activities.providers.base import ModelReply, ModelRequest
from keel.activities.tools.email import EmailSender
from keel.contracts.email import message_id_for
from keel.contracts.gates import GateView
from keel.contracts.ledger import (
    Escalated,
    GateDecided,
    PolicyApplied,
    ValidationFailed,
    verify_chain,
)
from keel.offline import OfflineFault, OfflineProvider
from keel.scenarios.support_email import SupportEmailWorkflow
from keel.scenarios.support_email.contracts import SupportResult
from keel.scenarios.support_email.tools import SupportDesk
from keel.testing import events_of
from keel.workers.smtp_sink import SmtpSink
from tests.conftest import keel_worker, offline_settings
from tests.helpers import decide, refused, review, types_of, wait_for_gate
from tests.samples import load_sample

PHONE = "+44 20 7946 0958"


class Recording:
    """The offline model, keeping every request it was sent."""

    def __init__(self, faults: list[OfflineFault] | None = None) -> None:
        self.inner = OfflineProvider(faults or [])
        self.name, self.model = self.inner.name, self.inner.model
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        return await self.inner.complete(request)


@asynccontextmanager
async def support_worker(
    env: WorkflowEnvironment, tmp: Path, model: Recording
) -> AsyncIterator[tuple[str, SmtpSink]]:
    with SmtpSink() as sink:
        sender = EmailSender.open(
            offline_settings(data_dir=tmp),
            host="127.0.0.1",
            port=sink.port,
            sender="support@keel.example",
        )
        tools = [*SupportDesk().activities(), *sender.activities()]
        try:
            async with keel_worker(env.client, provider=model, tools=tools) as tq:
                yield tq, sink
        finally:
            await sender.aclose()


async def start(
    env: WorkflowEnvironment, tq: str, sample: str
) -> WorkflowHandle[Any, SupportResult]:
    return await env.client.start_workflow(
        SupportEmailWorkflow.run, load_sample(sample), id=f"support-{uuid.uuid4()}", task_queue=tq
    )


async def test_refund_is_approved_then_sent_exactly_once(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    model = Recording()
    async with support_worker(ts_env, tmp_path, model) as (tq, sink):
        handle = await start(ts_env, tq, "support-refund")
        gate = await wait_for_gate(handle, "approve-refund")
        assert gate.context["refund_usd"] == 89.0 and gate.reviewers == ["support.lead.chen"]
        await decide(handle, review("approve-refund", "approve", "support.lead.chen"))
        result = await handle.result()
        received = list(sink.messages)
    assert (result.outcome, result.intent, result.order_number) == (
        "replied",
        "refund",
        "AB-104233",
    )
    expected_id = message_id_for(f"{handle.id}/send-reply")
    assert result.reply_message_id == expected_id
    assert [m.message_id for m in received] == [expected_id]
    assert received[0].rcpt_tos == ["maya.lindqvist@example.com"]
    assert "AB-104233" in received[0].body and "$89.00" in received[0].body
    # PII never reached the model; the redaction is in the ledger, without the number itself.
    assert all(PHONE not in r.prompt and PHONE not in str(r.input) for r in model.requests)
    scrubbed = [e for e in events_of(result.ledger, PolicyApplied) if e.action == "modify"]
    assert scrubbed and scrubbed[0].policy == "pii-scrubber"
    assert PHONE not in str([e.model_dump() for e in events_of(result.ledger, PolicyApplied)])
    assert verify_chain(result.ledger).ok
    # No raw PII anywhere in the ledger: not the customer's address, not the phone in any
    # spacing (the reply went to the address; the ledger holds only the Message-ID).
    ledger_text = json.dumps([e.model_dump(mode="json") for e in result.ledger])
    squeezed = "".join(ledger_text.split()).replace("-", "")
    assert "maya.lindqvist@example.com" not in ledger_text, [
        e.type for e in result.ledger if "maya.lindqvist" in e.model_dump_json()
    ]
    assert "442079460958" not in squeezed and "2079460958" not in squeezed


async def test_a_bad_draft_is_repaired_with_the_violations_fed_back(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    model = Recording([OfflineFault(kind="reply_policy_violation", contract="support-reply@1")])
    async with support_worker(ts_env, tmp_path, model) as (tq, sink):
        handle = await start(ts_env, tq, "support-refund")
        await wait_for_gate(handle, "approve-refund")
        await decide(handle, review("approve-refund", "approve", "support.lead.chen"))
        result = await handle.result()
        assert sink.count() == 1
    failed = events_of(result.ledger, ValidationFailed)
    assert [(f.node, f.kind) for f in failed] == [("draft-reply", "rule")]
    reasons = " ".join(failed[0].reasons)
    assert "'AB-000000'" in reasons and "'guarantee'" in reasons and "'voucher'" in reasons
    repair = [r for r in model.requests if r.contract == "support-reply@1"][1]
    assert list(repair.feedback) == failed[0].reasons  # the repair saw every violation
    assert result.outcome == "replied"


async def test_prompt_injection_is_denied_and_nothing_is_sent(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    model = Recording()
    async with support_worker(ts_env, tmp_path, model) as (tq, sink):
        result = await (await start(ts_env, tq, "support-injection")).result()
        assert sink.count() == 0
    assert result.outcome == "denied"
    assert "prompt-injection" in result.reason and "body" in result.reason
    assert model.requests == []  # the model was never called
    denied = [e for e in events_of(result.ledger, PolicyApplied) if e.action == "deny"]
    assert len(denied) == 1 and denied[0].node == "triage"
    assert "AgentDecided" not in types_of(result.ledger)


async def test_a_rejected_refund_sends_nothing(ts_env: WorkflowEnvironment, tmp_path: Path) -> None:
    async with support_worker(ts_env, tmp_path, Recording()) as (tq, sink):
        handle = await start(ts_env, tq, "support-refund")
        await wait_for_gate(handle, "approve-refund")
        await decide(
            handle,
            review("approve-refund", "reject", "support.lead.chen", comment="item was misused"),
        )
        result = await handle.result()
        assert sink.count() == 0
    assert (result.outcome, result.reason) == ("rejected", "refund not approved: item was misused")


async def test_a_modified_refund_is_approved_and_sent_with_the_reviewers_changes(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with support_worker(ts_env, tmp_path, Recording()) as (tq, sink):
        handle = await start(ts_env, tq, "support-refund")
        await wait_for_gate(handle, "approve-refund")
        # Modifications the guard refuses change nothing: the gate still waits.
        lead = "support.lead.chen"
        too_much = review("approve-refund", "modify", lead, modifications={"refund_usd": 120.0})
        assert "refund $120.00 exceeds the limit $89.00" in await refused(handle, too_much)
        vague = {"body": "Hello, we will refund part of order AB-104233 within 5 business days."}
        assert "must state the refund $89.00" in await refused(
            handle, review("approve-refund", "modify", lead, modifications=vague)
        )
        subject = {"subject": "Re: anything"}
        assert "does not allow modifying ['subject']" in await refused(
            handle, review("approve-refund", "modify", lead, modifications=subject)
        )
        gates = await handle.query("gates", result_type=list[GateView])
        assert [(g.gate, g.state.value) for g in gates] == [("approve-refund", "awaiting_approval")]
        assert gates[0].context["refund_usd"] == 89.0
        await decide(
            handle,
            review(
                "approve-refund",
                "modify",
                lead,
                comment="partial refund: the lid only",
                modifications={"refund_usd": 60.0},
            ),
        )
        result = await handle.result()
        received = list(sink.messages)
    assert (result.outcome, result.refund_usd) == ("replied", 60.0)
    assert len(received) == 1 and received[0].message_id == result.reply_message_id
    assert "$60.00" in received[0].body and "$89.00" not in received[0].body
    (decided,) = events_of(result.ledger, GateDecided)
    assert (decided.decision, decided.state, decided.reviewer) == ("modify", "modified", lead)
    assert decided.modifications == {"refund_usd": 60.0}
    assert verify_chain(result.ledger).ok


async def test_a_refund_modified_with_a_new_body_sends_that_body(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    body = "Hello Maya, we will refund $45.50 for the lid of order AB-104233 within 5 days."
    async with support_worker(ts_env, tmp_path, Recording()) as (tq, sink):
        handle = await start(ts_env, tq, "support-refund")
        await wait_for_gate(handle, "approve-refund")
        mods = {"refund_usd": 45.5, "body": body}
        await decide(
            handle, review("approve-refund", "modify", "support.lead.chen", modifications=mods)
        )
        result = await handle.result()
        received = list(sink.messages)
    assert (result.outcome, result.refund_usd) == ("replied", 45.5)
    assert len(received) == 1 and received[0].body.strip() == body


class AlwaysOverpromising(Recording):
    """Drafts that keep breaking the policy, repair or not."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        reply = await super().complete(request)
        if request.contract != "support-reply@1":
            return reply
        draft = json.loads(reply.text)
        draft["body"] += " We guarantee a voucher."
        return ModelReply(text=json.dumps(draft), provider=reply.provider, model=reply.model)


async def test_a_draft_that_stays_bad_escalates_to_a_person_who_writes_it(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with support_worker(ts_env, tmp_path, AlwaysOverpromising()) as (tq, sink):
        handle = await start(ts_env, tq, "support-refund")
        gate = await wait_for_gate(handle, "write-reply")
        assert "voucher" in " ".join(gate.context["last_problems"])
        written: dict[str, Any] = {
            "subject": "Re: your order AB-104233",
            "body": "Hello Maya, we will refund $89.00 for order AB-104233 within 5 days.",
            "order_number": "AB-104233",
            "refund_usd": 89.0,
        }
        # A person is held to the same guard: an overpromising reply is refused.
        promising = {**written, "body": written["body"] + " We guarantee it."}
        reason = await refused(
            handle, review("write-reply", "modify", "support.agent.ana", modifications=promising)
        )
        assert "promises 'guarantee'" in reason
        await decide(
            handle, review("write-reply", "modify", "support.agent.ana", modifications=written)
        )
        await wait_for_gate(handle, "approve-refund")
        await decide(handle, review("approve-refund", "approve", "support.lead.chen"))
        result = await handle.result()
        received = list(sink.messages)
    failed = [e for e in events_of(result.ledger, ValidationFailed) if e.node == "draft-reply"]
    assert len(failed) == 3  # the contract's retry budget, each repair fed the violations
    assert [e.subject for e in events_of(result.ledger, Escalated)] == ["node:draft-reply"]
    assert result.outcome == "replied"
    assert len(received) == 1 and "Hello Maya" in received[0].body
