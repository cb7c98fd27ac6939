"""Approval gates in workflow code: state machine, review checks, SLA timers, escalation."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from keel.contracts.agent import canonical_json
    from keel.contracts.gates import (
        MAX_MODIFICATION_CHARS,
        GateSpec,
        GateState,
        GateView,
        ReviewDecision,
        ReviewInput,
        ReviewReceipt,
    )
    from keel.contracts.guardrails import redact_pii
    from keel.contracts.ledger import Escalated, GateDecided, GateExpired, GateOpened
    from keel.contracts.names import PENDING_GATES
    from keel.contracts.registry import REGISTRY

from keel.workflows.ledger import Ledger


@dataclass
class GateRecord:
    """One opened gate and what happened to it."""

    name: str
    spec: GateSpec
    state: GateState
    reviewers: list[str]
    context: dict[str, Any]
    opened_at: datetime
    deadline: datetime
    review: ReviewInput | None = None
    decided_at: datetime | None = None
    check: Callable[[dict[str, Any]], list[str]] | None = None
    """Workflow-side check of a ``modify`` decision's modifications."""
    reason: str | None = None
    """Why the gate opened (``GateView.reason``)."""

    def view(self) -> GateView:
        """What the ``gates`` query shows of this gate."""
        review = self.review
        return GateView(
            gate=self.name,
            title=self.spec.title,
            state=self.state,
            reviewers=self.reviewers,
            opened_at=self.opened_at,
            deadline=self.deadline if self.state.open else None,
            context=self.context,
            reason=self.reason,
            decided_by=review.reviewer if review else None,
            decided_at=self.decided_at,
            decision=review.decision if review else None,
            comment=review.comment if review else None,
            modifications=review.modifications if review else None,
        )


class GateBook:
    """The gates of one workflow execution."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._gates: dict[str, GateRecord] = {}

    def open(
        self,
        spec: GateSpec,
        context: dict[str, Any],
        *,
        check: Callable[[dict[str, Any]], list[str]] | None = None,
        reason: str | None = None,
    ) -> GateRecord:
        """Open a gate from ``spec``; a reopened spec gets a numbered name (``name-2``).

        ``check`` validates the modifications of a ``modify`` decision beyond the spec's
        field list; its reasons refuse the review like any other. ``reason`` says why the gate
        opened, for the ``gates`` query.
        """
        name, n = spec.name, 1
        while name in self._gates:
            n += 1
            name = f"{spec.name}-{n}"
        now = workflow.now()
        record = GateRecord(
            name=name,
            spec=spec,
            state=GateState.PENDING,
            reviewers=list(spec.reviewers),
            context=context,
            opened_at=now,
            deadline=now + spec.sla,
            check=check,
            reason=reason,
        )
        self._gates[name] = record
        record.state = GateState.AWAITING_APPROVAL
        self._ledger.record(
            GateOpened(
                gate=name,
                title=spec.title,
                reviewers=record.reviewers,
                sla_seconds=spec.sla.total_seconds(),
                deadline=record.deadline,
                # The reviewer sees the context whole (the gates query); the ledger keeps
                # no raw PII, so what it records is redacted.
                context=redact_pii(context),
            )
        )
        self._publish()
        return record

    async def wait(self, record: GateRecord) -> GateRecord:
        """Wait for a decision; escalate when the SLA passes, then take the default path. The
        ledger's head is signed when the gate opens and when it is decided or expires."""
        await self._ledger.sign_head(f"gate-opened:{record.name}")
        await self._wait(record)
        await self._ledger.sign_head(f"gate-{record.state.value}:{record.name}")
        return record

    async def _wait(self, record: GateRecord) -> GateRecord:
        spec = record.spec
        workflow.set_current_details(self._details(record))
        if await self._decided_within(record, spec.sla):
            return record
        if spec.escalation_reviewers:
            record.state = GateState.ESCALATED
            record.reviewers = [*record.reviewers, *spec.escalation_reviewers]
            record.deadline = workflow.now() + spec.escalation_sla
            self._ledger.record(
                Escalated(
                    subject=f"gate:{record.name}",
                    reason=f"no decision within the SLA of {spec.sla}",
                    to=list(spec.escalation_reviewers),
                )
            )
            self._publish()
            workflow.set_current_details(self._details(record))
            if await self._decided_within(record, spec.escalation_sla):
                return record
        record.state = GateState.EXPIRED
        self._ledger.record(
            GateExpired(
                gate=record.name,
                default_decision=spec.on_expiry,
                waited_seconds=(workflow.now() - record.opened_at).total_seconds(),
            )
        )
        self._publish()
        return record

    def check(self, payload: Any) -> tuple[ReviewInput | None, list[str]]:
        """Parse and check a ``review`` payload; the reasons say why it is refused.

        Never raises, whatever ``payload`` holds; the reasons are bounded (``bounded_reasons``)
        and quote what the caller sent only in bounded form.
        """
        review, reasons = self._check(payload)
        return review, bounded_reasons(reasons)

    def _check(self, payload: Any) -> tuple[ReviewInput | None, list[str]]:
        if not isinstance(payload, dict):
            return None, [f"the review payload must be a JSON object, not {_kind(payload)}"]
        try:
            review = ReviewInput.model_validate(payload)
        except ValidationError as err:
            return None, [
                f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}"
                for e in err.errors()
            ]
        record = self._gates.get(review.gate)
        if record is None:
            open_names = [g.name for g in self._gates.values() if g.state.open]
            return review, [
                f"unknown gate {bounded_text(review.gate)!r} (open gates: {open_names or 'none'})"
            ]
        if not record.state.open:
            return review, [f"gate {review.gate!r} is {record.state.value}, not awaiting approval"]
        reasons: list[str] = []
        if record.reviewers and review.reviewer not in record.reviewers:
            reasons.append(
                f"{bounded_text(review.reviewer)!r} may not review gate {review.gate!r} "
                f"(allowed: {', '.join(record.reviewers)})"
            )
        reasons += _decision_problems(record.spec, review)
        if not reasons and record.check and review.decision is ReviewDecision.MODIFY:
            try:
                reasons += record.check(review.modifications or {})
            except Exception as err:  # an app's check must not fail the workflow task
                reasons.append(f"the modifications could not be checked ({type(err).__name__})")
        return review, reasons

    def apply(self, review: ReviewInput, *, via: Literal["update", "signal"]) -> ReviewReceipt:
        """Record a checked review and close the gate with its verdict."""
        record = self._gates[review.gate]
        if review.decision is ReviewDecision.APPROVE:
            record.state = GateState.APPROVED
        elif review.decision is ReviewDecision.REJECT:
            record.state = GateState.REJECTED
        else:
            record.state = GateState.MODIFIED
        record.review = review
        record.decided_at = workflow.now()
        event = self._ledger.record(
            GateDecided(
                gate=record.name,
                decision=review.decision.value,
                state=record.state.value,
                reviewer=review.reviewer,
                comment=review.comment,
                modifications=review.modifications,
                device=review.device,
                via=via,
            )
        )
        self._publish()
        return ReviewReceipt(gate=record.name, state=record.state, ledger_seq=event.seq)

    def views(self) -> list[GateView]:
        """Every gate opened so far, as the ``gates`` query shows them."""
        return [record.view() for record in self._gates.values()]

    async def _decided_within(self, record: GateRecord, timeout: Any) -> bool:
        try:
            await workflow.wait_condition(lambda: not record.state.open, timeout=timeout)
        except TimeoutError:
            return False
        return True

    def _publish(self) -> None:
        pending = sorted(name for name, g in self._gates.items() if g.state.open)
        workflow.upsert_search_attributes(
            [PENDING_GATES.value_set(pending) if pending else PENDING_GATES.value_unset()]
        )

    @staticmethod
    def _details(record: GateRecord) -> str:
        who = ", ".join(record.reviewers) or "any reviewer"
        return (
            f"Waiting at gate **{record.name}**: {record.spec.title}. State "
            f"`{record.state.value}`, for {who}; deadline {record.deadline:%Y-%m-%d %H:%M} UTC"
        )


def _decision_problems(spec: GateSpec, review: ReviewInput) -> list[str]:
    mods = review.modifications
    if review.decision is ReviewDecision.REJECT and not (review.comment or "").strip():
        return ["a rejection needs a comment saying why"]
    if review.decision is not ReviewDecision.MODIFY:
        if mods:
            return ["modifications are only accepted with decision 'modify'"]
        if spec.output_contract and review.decision is ReviewDecision.APPROVE:
            return [
                f"gate {review.gate!r} takes over from an agent: answer with decision 'modify' "
                f"and the {spec.output_contract} output as modifications, or 'reject'"
            ]
        return []
    if not mods:
        return ["decision 'modify' needs modifications"]
    if len(canonical_json(mods)) > MAX_MODIFICATION_CHARS:
        return [f"modifications exceed {MAX_MODIFICATION_CHARS} characters"]
    if spec.output_contract:
        model = REGISTRY.get(spec.output_contract).output_model
        try:
            model.model_validate({"confidence": 1.0, **mods})
        except ValidationError as err:
            return [
                f"modifications.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in err.errors()
            ]
        return []
    unknown = sorted(set(mods) - set(spec.modifiable_fields))
    if unknown:
        allowed = ", ".join(spec.modifiable_fields) or "none"
        return [f"gate {review.gate!r} does not allow modifying {unknown} (modifiable: {allowed})"]
    return []


MAX_QUOTED_CHARS = 200
"""Longest text a caller sent that a refusal or ledger event quotes whole."""
MAX_REASONS = 10
MAX_REASON_CHARS = 500


def bounded_text(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """``value`` as text, cut to ``limit`` characters plus a note of its full length."""
    text = value if isinstance(value, str) else _json_or_repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text)} chars)"


def bounded_reasons(reasons: list[str]) -> list[str]:
    """At most ``MAX_REASONS`` reasons of at most ``MAX_REASON_CHARS`` each (a payload with a
    thousand unknown keys gets ten reasons and a count of the rest)."""
    kept = [bounded_text(reason, MAX_REASON_CHARS) for reason in reasons[:MAX_REASONS]]
    if len(reasons) > MAX_REASONS:
        kept.append(f"and {len(reasons) - MAX_REASONS} more problems")
    return kept


def payload_digest(payload: Any) -> str:
    """sha256 of a payload as received (refused payloads are recorded by digest only)."""
    return hashlib.sha256(_json_or_repr(payload).encode()).hexdigest()


def refusal(reasons: list[str]) -> ApplicationError:
    """The error an update validator raises for a refused review (its message bounded)."""
    text = bounded_text("; ".join(reasons), (MAX_REASONS + 1) * MAX_REASON_CHARS)
    return ApplicationError("review refused: " + text, type="ReviewRefused")


def _json_or_repr(value: Any) -> str:
    try:
        return canonical_json(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def _kind(payload: Any) -> str:
    if payload is None:
        return "null"
    if isinstance(payload, bool):
        return "a boolean"
    if isinstance(payload, int | float):
        return "a number"
    if isinstance(payload, str):
        return "a string"
    if isinstance(payload, list | tuple):
        return "a list"
    return type(payload).__name__
