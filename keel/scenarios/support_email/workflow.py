"""Customer support email: triage (agent), order and policy in parallel, draft (agent) under
a guard with repair, refund approval, then the reply sent once.

"Once" as far as anyone can know: when a worker stops after the mail server may have
accepted the reply and before the record says so, the send's outcome is unknown and (policy
``escalate``) the ``confirm-reply-sent`` gate asks a person whether it went out; the reply
is sent again only if they say it did not."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from keel.contracts.effects import EFFECT_OUTCOME_UNKNOWN, ResolveOutcomeInput, UnknownOutcome
    from keel.contracts.email import message_id_for
    from keel.contracts.gates import GateState
    from keel.contracts.ledger import (
        EffectOutcomeUnknown,
        EffectResolved,
        TaskCompleted,
        WorkflowCompleted,
    )
    from keel.contracts.tools import EffectReceipt, ToolCall, ToolResult
    from keel.scenarios.support_email.contracts import (
        CONFIRM_REPLY_SENT,
        MAX_EMAIL_BYTES,
        REFUND_APPROVAL,
        SUPPORT_REPLY,
        SUPPORT_TRIAGE,
        Order,
        RefundPolicy,
        Reply,
        ReplyInput,
        SupportEmail,
        SupportResult,
        Triage,
        TriageInput,
        modified_reply,
        reply_problems,
    )
    from keel.scenarios.support_email.tools import LOOKUP_ORDER, REFUND_POLICY, OrderQuery

from keel.workflows.base import KeelWorkflow
from keel.workflows.effects import execute_tool, resolve_effect, unknown_outcome

Outcome = Literal["replied", "escalated", "denied", "rejected"]
SEND_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
    non_retryable_error_types=[
        "InvalidToolInput",
        "SmtpRejected",
        "IdempotencyKeyConflict",
        EFFECT_OUTCOME_UNKNOWN,
    ],
)
"""Retries of the send for SMTP trouble; an outage of the side-effect record's database is
waited out beyond them without limit (``execute_tool``)."""
MAX_SEND_CONFIRMATIONS = 3
"""How many times one run asks a person whether its reply went out before it ends escalated
(each "not sent" sends again, and that send's outcome can be unknown too)."""


@workflow.defn(name="SupportEmail")
class SupportEmailWorkflow(KeelWorkflow):
    """Answer one customer email: triage, look up, draft under a guard, approve, send once."""

    token_budget = 20_000

    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> SupportResult:
        """Handle the email in ``raw_input`` (a ``SupportEmail``)."""
        return await self.settle(self._handle(raw_input))

    async def _handle(self, raw_input: dict[str, Any]) -> SupportResult:
        self.start(raw_input)
        email = self.ingest(SupportEmail, raw_input, max_bytes=MAX_EMAIL_BYTES)
        triaged = await self.agents.run(
            "triage", SUPPORT_TRIAGE, TriageInput(subject=email.subject, body=email.body)
        )
        triage = triaged.output
        if triage is None:
            outcome: Outcome = "denied" if triaged.source == "denied" else "escalated"
            return self._finish(email, outcome, triaged.note)
        workflow.set_current_details("Fetching the order and the refund policy")
        order, policy = await asyncio.gather(
            self._lookup_order(email, triage), self._refund_policy()
        )
        drafted = await self.agents.run(
            "draft-reply",
            SUPPORT_REPLY,
            ReplyInput(
                customer_text=email.body,
                triage=triage.model_dump(mode="json"),
                order=order.model_dump(mode="json") if order else None,
                policy=policy.model_dump(mode="json"),
            ),
            check=lambda reply: reply_problems(reply, order, policy),
        )
        reply = drafted.output
        if reply is None:
            outcome = "denied" if drafted.source == "denied" else "escalated"
            return self._finish(email, outcome, drafted.note, triage)
        if reply.refund_usd:
            drafted_reply = reply
            gate = self.gate_book.open(
                REFUND_APPROVAL,
                {
                    "order": order.model_dump(mode="json") if order else None,
                    "refund_usd": reply.refund_usd,
                    "reply_subject": reply.subject,
                    "reply_body": reply.body,
                    "customer": email.from_address,
                },
                check=lambda mods: modified_reply(drafted_reply, mods, order, policy)[1],
            )
            await self.gate_book.wait(gate)
            if gate.state is GateState.MODIFIED and gate.review:
                # Approved with modifications (checked when the review was accepted).
                mods = gate.review.modifications or {}
                changed, problems = modified_reply(reply, mods, order, policy)
                if changed is None:
                    refused = "; ".join(problems)
                    return self._finish(email, "rejected", f"modified refund refused: {refused}")
                reply = changed
            elif gate.state is not GateState.APPROVED:
                why = gate.review.comment if gate.review else "no decision before the SLAs"
                return self._finish(email, "rejected", f"refund not approved: {why}", triage, reply)
        sent = await self._send(email, reply)
        if sent is None:
            why = "nobody confirmed whether the reply reached the customer; it was not sent again"
            return self._finish(email, "escalated", why, triage, reply)
        return self._finish(
            email,
            "replied",
            _sent_reason(sent),
            triage,
            reply,
            sent.effect.provider_id if sent.effect else None,
        )

    async def _lookup_order(self, email: SupportEmail, triage: Triage) -> Order | None:
        if triage.order_number is None:
            return None
        order: Order | None = await workflow.execute_local_activity(
            LOOKUP_ORDER,
            OrderQuery(order_number=triage.order_number, customer_email=email.from_address),
            result_type=Order | None,  # type: ignore[arg-type]
            start_to_close_timeout=timedelta(seconds=10),
            summary=f"lookup order {triage.order_number}",
        )
        return order

    async def _refund_policy(self) -> RefundPolicy:
        policy: RefundPolicy = await workflow.execute_local_activity(
            REFUND_POLICY,
            result_type=RefundPolicy,
            start_to_close_timeout=timedelta(seconds=10),
            summary="refund policy",
        )
        return policy

    async def _send(self, email: SupportEmail, reply: Reply) -> ToolResult | None:
        """Send the reply; None when its outcome stayed unknown (nobody confirmed)."""
        workflow.set_current_details(f"Sending the reply to {email.from_address}")
        key = f"{workflow.info().workflow_id}/send-reply"
        call = ToolCall(
            tool="send_email",
            idempotency_key=key,
            input={
                "to": email.from_address,
                "subject": reply.subject,
                "body": reply.body,
                "in_reply_to": email.message_id,
            },
        )
        for _ in range(MAX_SEND_CONFIRMATIONS + 1):
            try:
                result = await execute_tool(
                    call,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=SEND_RETRIES,
                    summary=f"send reply to {email.from_address}",
                )
            except ActivityError as err:
                unknown = unknown_outcome(err, call)
                if unknown is None:
                    raise
                # The Message-ID from the key this run owns: details that crossed the worker's
                # scrubbing (a 32-hex id looks key-shaped) are not trusted for it.
                unknown = unknown.model_copy(
                    update={"idempotency_key": key, "provider_ref": message_id_for(key)}
                )
                reviewer = await self._confirm_sent(email, unknown)
                if reviewer is None:
                    return None
                if not reviewer[1]:
                    continue  # confirmed not sent: the record lets the next attempt send
                result = ToolResult(
                    tool="send_email",
                    output={"message_id": message_id_for(key), "confirmed_by": reviewer[0]},
                    effect=EffectReceipt(
                        idempotency_key=key,
                        provider_id=message_id_for(key),
                        replayed=True,
                        unknown_resolved_by="person",
                    ),
                )
            self._record_sent(result)
            return result
        return None

    async def _confirm_sent(
        self, email: SupportEmail, unknown: UnknownOutcome
    ) -> tuple[str, bool] | None:
        """Ask a person whether the reply went out; record and return (reviewer, sent)."""
        self.ledger.record(
            EffectOutcomeUnknown(
                idempotency_key=unknown.idempotency_key,
                tool=unknown.tool,
                policy=unknown.policy,
                known=unknown.model_dump(
                    mode="json", exclude={"idempotency_key", "tool", "policy"}
                ),
            )
        )
        gate = self.gate_book.open(
            CONFIRM_REPLY_SENT,
            {
                "message_id": unknown.provider_ref,
                "in_reply_to": email.message_id,
                "intent_at": unknown.intent_at.isoformat(),
                "found_by": unknown.found_by,
            },
            reason=(
                f"the send's outcome is unknown: an attempt recorded its intent at "
                f"{unknown.intent_at.isoformat()} and stopped before recording the server's "
                f"answer; look for Message-ID {unknown.provider_ref} in the mail server's log"
            ),
        )
        await self.gate_book.wait(gate)
        review = gate.review
        if gate.state not in (GateState.APPROVED, GateState.REJECTED) or review is None:
            return None
        sent = gate.state is GateState.APPROVED
        await resolve_effect(
            ResolveOutcomeInput(
                idempotency_key=unknown.idempotency_key,
                tool=unknown.tool,
                performed=sent,
                by=review.reviewer,
                provider_id=unknown.provider_ref if sent else None,
                note=review.comment,
            )
        )
        self.ledger.record(
            EffectResolved(
                idempotency_key=unknown.idempotency_key,
                tool=unknown.tool,
                resolution="confirmed_performed" if sent else "confirmed_not_performed",
                by=review.reviewer,
                gate=gate.name,
            )
        )
        return review.reviewer, sent

    def _record_sent(self, result: ToolResult) -> None:
        self.ledger.record(
            TaskCompleted(
                round=0,
                ref="send-reply",
                tool="send_email",
                workflow_id=workflow.info().workflow_id,
                output=result.output,
                effect=result.effect.model_dump(mode="json") if result.effect else None,
            )
        )

    def _finish(
        self,
        email: SupportEmail,
        outcome: Outcome,
        reason: str,
        triage: Triage | None = None,
        reply: Reply | None = None,
        reply_message_id: str | None = None,
    ) -> SupportResult:
        self.ledger.record(
            WorkflowCompleted(
                outcome=outcome, summary={"reason": reason, "message": email.message_id}
            )
        )
        workflow.set_current_details(f"Finished: **{outcome}** ({reason})")
        return SupportResult(
            message_id=email.message_id,
            outcome=outcome,
            reason=reason,
            intent=triage.intent if triage else None,
            order_number=triage.order_number if triage else None,
            refund_usd=reply.refund_usd if reply else None,
            reply_message_id=reply_message_id,
            ledger=list(self.ledger.events),
            ledger_head=self.ledger.head_hash,
        )


def _sent_reason(sent: ToolResult) -> str:
    """``reply sent``, saying so when a person settled an unknown outcome on the way."""
    effect = sent.effect
    if effect is None or effect.unknown_resolved_by != "person":
        return "reply sent"
    if effect.replayed:
        return "reply sent (confirmed by a person)"
    return "reply sent (again: a person confirmed the first attempt had not gone out)"
