"""Approval gates in workflow code: state machine, review checks, SLA timers, escalation,
and governance (roles, n-of-m approvals, separation of duties, delegation, reassign, defer).

A gate opened by this code takes only signed decisions (``keel.workflows.reviews``); one
opened before Keel required signatures (a run recorded by an older worker, replaying) still
takes the unsigned form, and the ledger says so of each decision it took.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import TypeAdapter, ValidationError

    from keel.contracts.agent import canonical_json
    from keel.contracts.gates import (
        MAX_MODIFICATION_CHARS,
        GateSpec,
        GateState,
        GateView,
        LegacyReview,
        ReviewDecision,
        ReviewReceipt,
        Verdict,
    )
    from keel.contracts.guardrails import redact_pii
    from keel.contracts.ledger import (
        Escalated,
        EventBase,
        GateApproved,
        GateDecided,
        GateDeferred,
        GateExpired,
        GateOpened,
        GateReassigned,
    )
    from keel.contracts.names import PENDING_GATES
    from keel.contracts.registry import REGISTRY
    from keel.contracts.reviews import (
        REVIEWER_TRUST_ACTIVITY,
        Action,
        ReviewerTrust,
        SignedReview,
        signed_content,
    )

from keel.workflows.ledger import Ledger
from keel.workflows.notify import GateNotifier
from keel.workflows.patches import engine_patched
from keel.workflows.reviews import MAX_CLOCK_SKEW, signed_review

SIGNED_REVIEWS = "keel-signed-reviews"
"""Patch id: gates opened before it take the unsigned review form (recorded as such)."""


@dataclass
class Review:
    """A review that passed every check, ready to apply."""

    gate: str
    action: Action
    reviewer: str
    on_behalf_of: str | None
    roles: list[str]
    comment: str | None
    modifications: dict[str, Any] | None
    signed: SignedReview | None
    """None only for a gate opened before signatures were required (``LegacyReview``)."""
    content: dict[str, Any] | None = None
    """What the signature covers, as it arrived."""
    legacy_device: str | None = None

    @property
    def acting_as(self) -> str:
        """Whose decision it is: the delegator's, when delegated."""
        return self.on_behalf_of or self.reviewer


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
    roles: list[str] = field(default_factory=list)
    requesters: list[str] = field(default_factory=list)
    review: Verdict | None = None
    """The verdict, once decided (for an n-of-m gate: the approval that completed it)."""
    decided_at: datetime | None = None
    check: Callable[[dict[str, Any]], list[str]] | None = None
    """Workflow-side check of a ``modify`` decision's modifications."""
    reason: str | None = None
    """Why the gate opened (``GateView.reason``)."""
    signed: bool = True
    """Whether the gate takes only signed decisions."""
    trust: ReviewerTrust | None = None
    """The reviewer keys trusted when the gate opened (or last escalated)."""
    approvals: list[Review] = field(default_factory=list)
    modifications: dict[str, Any] | None = None
    """An n-of-m gate's modified version, which the later approvals approve."""
    deferred_by: list[str] = field(default_factory=list)
    receipts: dict[str, tuple[str, ReviewReceipt]] = field(default_factory=dict)
    """Nonce -> (digest of the signed content, the receipt it got): a repeat is idempotent."""

    def view(self) -> GateView:
        """What the ``gates`` query shows of this gate."""
        review = self.review
        return GateView(
            gate=self.name,
            title=self.spec.title,
            state=self.state,
            reviewers=self.reviewers,
            roles=self.roles,
            approvals_needed=self.spec.approvals,
            approved_by=[a.acting_as for a in self.approvals],
            deferred_by=self.deferred_by,
            requesters=self.requesters,
            modify_schema=modify_schema(self.spec),
            signed_reviews=self.signed,
            opened_at=self.opened_at,
            deadline=self.deadline if self.state.open else None,
            context=self.context,
            reason=self.reason,
            decided_by=review.reviewer if review else None,
            on_behalf_of=review.on_behalf_of if review else None,
            decided_at=self.decided_at,
            decision=review.decision if review else None,
            comment=review.comment if review else None,
            modifications=review.modifications if review else None,
        )

    def may_decide(self, subject: str, roles: list[str]) -> bool:
        """Whether ``subject`` with ``roles`` is one of the gate's reviewers."""
        if not self.reviewers and not self.roles:
            return True
        return subject in self.reviewers or bool(set(roles) & set(self.roles))


class GateBook:
    """The gates of one workflow execution."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._gates: dict[str, GateRecord] = {}
        self.notifier = GateNotifier()
        self.requesters: list[str] = []
        """Who asked for this execution's work: they may decide none of its gates (an app
        sets it from its input, e.g. a contract's ``requested_by``)."""

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
        signed = engine_patched(SIGNED_REVIEWS)
        if not signed:  # a gate an older worker opened: its rules as they were then
            spec = spec.model_copy(update={"roles": (), "escalation_roles": (), "approvals": 1})
        record = GateRecord(
            name=name,
            spec=spec,
            state=GateState.PENDING,
            reviewers=list(spec.reviewers),
            roles=list(spec.roles),
            requesters=list(self.requesters) if signed else [],
            context=context,
            opened_at=now,
            deadline=now + spec.sla,
            check=check,
            reason=reason,
            signed=signed,
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
                roles=record.roles or None,
                approvals_needed=spec.approvals if spec.approvals > 1 else None,
                requesters=record.requesters or None,
            )
        )
        self._publish()
        self.notifier.gate_event("opened", record.view(), spec.notify)
        return record

    async def wait(self, record: GateRecord) -> GateRecord:
        """Wait for a decision; escalate when the SLA passes, then take the default path. The
        ledger's head is signed when the gate opens and when it is decided or expires."""
        await self._load_trust(record)
        await self._ledger.sign_head(f"gate-opened:{record.name}")
        await self._wait(record)
        await self._ledger.sign_head(f"gate-{record.state.value}:{record.name}")
        return record

    async def _wait(self, record: GateRecord) -> GateRecord:
        spec = record.spec
        workflow.set_current_details(self._details(record))
        if await self._decided_within(record, spec.sla):
            return record
        if spec.escalates:
            record.state = GateState.ESCALATED
            record.reviewers = _union(record.reviewers, spec.escalation_reviewers)
            record.roles = _union(record.roles, spec.escalation_roles)
            record.deadline = workflow.now() + spec.escalation_sla
            self._ledger.record(
                Escalated(
                    subject=f"gate:{record.name}",
                    reason=f"no decision within the SLA of {spec.sla}",
                    to=[*spec.escalation_reviewers, *(f"role:{r}" for r in spec.escalation_roles)],
                )
            )
            await self._load_trust(record)  # keys added since the gate opened count now
            self._publish()
            self.notifier.gate_event("escalated", record.view(), spec.notify)
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
        self.notifier.gate_event("expired", record.view(), spec.notify)
        return record

    def check(self, payload: Any) -> tuple[Review | None, list[str], ReviewReceipt | None]:
        """Parse and check a ``review`` payload: the review, why it is refused, and — for a
        repeat of a decision already taken (its nonce) — the receipt it got then.

        Never raises, whatever ``payload`` holds; the reasons are bounded (``bounded_reasons``)
        and quote what the caller sent only in bounded form.
        """
        review, reasons, repeat = self._check(payload)
        return review, bounded_reasons(reasons), repeat

    def _check(self, payload: Any) -> tuple[Review | None, list[str], ReviewReceipt | None]:
        if not isinstance(payload, dict):
            return None, [f"the review payload must be a JSON object, not {_kind(payload)}"], None
        gate = payload.get("gate")
        record = self._gates.get(gate) if isinstance(gate, str) else None
        if record is None:
            open_names = [g.name for g in self._gates.values() if g.state.open]
            named = bounded_text(gate) if gate is not None else "none"
            return None, [f"unknown gate {named!r} (open gates: {open_names or 'none'})"], None
        if not record.signed:
            review, reasons = _legacy_review(payload)
        else:
            review, reasons = self._signed(record, payload)
            if review is not None and review.signed is not None:
                nonce = review.signed.nonce
                if nonce in record.receipts:
                    digest, receipt = record.receipts[nonce]
                    if digest != payload_digest(review.content):
                        return review, [f"nonce {nonce!r} was used for another decision"], None
                    return review, [], receipt.model_copy(update={"repeated": True})
        if review is None or reasons:
            return review, reasons, None
        if not record.state.open:
            return (
                review,
                [f"gate {record.name!r} is {record.state.value}, not awaiting approval"],
                None,
            )
        return review, self._governance(record, review), None

    def _signed(
        self, record: GateRecord, payload: dict[str, Any]
    ) -> tuple[Review | None, list[str]]:
        if record.trust is None:
            return None, [f"gate {record.name!r} is still opening; try again in a moment"]
        signed, reasons, roles = signed_review(payload, record.trust)
        if signed is None or reasons:
            return None, reasons
        info = workflow.info()
        if (signed.workflow_id, signed.run_id) != (info.workflow_id, info.run_id):
            return None, [
                f"the decision was signed for run {bounded_text(signed.run_id)} of "
                f"{bounded_text(signed.workflow_id)!r}, not this one"
            ]
        if signed.issued_at > workflow.now() + MAX_CLOCK_SKEW:
            return None, [f"the decision is dated {signed.issued_at.isoformat()}, in the future"]
        review = Review(
            gate=record.name,
            action=signed.decision,
            reviewer=signed.reviewer,
            on_behalf_of=signed.on_behalf_of,
            roles=roles,
            comment=signed.comment,
            modifications=signed.modifications,
            signed=signed,
            content=signed_content(payload),
        )
        return review, []

    def _governance(self, record: GateRecord, review: Review) -> list[str]:
        """Who may act, separation of duties, n-of-m, and what each action needs: every
        problem, not just the first."""
        return self._authority(record, review) + self._action_problems(record, review)

    @staticmethod
    def _authority(record: GateRecord, review: Review) -> list[str]:
        acting = review.acting_as
        if not record.may_decide(acting, review.roles):
            allowed = ", ".join([*record.reviewers, *(f"role {r}" for r in record.roles)])
            return [
                f"{bounded_text(acting)!r} may not review gate {record.name!r} (allowed: {allowed})"
            ]
        conflicted = {acting, review.reviewer} & set(record.requesters)
        if conflicted and review.action is not Action.DEFER:
            who = bounded_text(sorted(conflicted)[0])
            return [f"{who!r} asked for this work and may not decide it (separation of duties)"]
        if review.action in (Action.APPROVE, Action.MODIFY):
            approvers = {a.acting_as for a in record.approvals}
            approvers |= {a.reviewer for a in record.approvals}
            if {acting, review.reviewer} & approvers:
                return [
                    f"{bounded_text(acting)!r} has already approved gate {record.name!r}; it "
                    f"needs {record.spec.approvals} distinct approvers"
                ]
        return []

    @staticmethod
    def _action_problems(record: GateRecord, review: Review) -> list[str]:
        target = review.signed.reassign_to if review.signed else None
        if review.action is Action.REASSIGN:
            reasons = []
            if target is None or not (target.reviewers or target.roles):
                reasons.append("a reassign names the reviewers or roles it hands the gate to")
            if not (review.comment or "").strip():
                reasons.append("a reassign needs a comment saying why")
            if review.modifications:
                reasons.append("modifications are only accepted with decision 'modify'")
            return reasons
        if target is not None:
            return ["reassign_to is only accepted with decision 'reassign'"]
        if review.action is Action.DEFER:
            return ["a defer takes no modifications"] if review.modifications else []
        reasons = _decision_problems(record.name, record.spec, review)
        if not reasons and record.check and review.action is Action.MODIFY:
            try:
                reasons += record.check(review.modifications or {})
            except Exception as err:  # an app's check must not fail the workflow task
                reasons.append(f"the modifications could not be checked ({type(err).__name__})")
        return reasons

    def apply(self, review: Review, *, via: Literal["update", "signal"]) -> ReviewReceipt:
        """Record a checked review: decide the gate, count an approval, reassign or defer."""
        record = self._gates[review.gate]
        signature = _signature_fields(review, via)
        event: EventBase
        if review.action is Action.REASSIGN:
            target = review.signed.reassign_to if review.signed else None
            assert target is not None  # checked
            record.reviewers, record.roles = list(target.reviewers), list(target.roles)
            record.deferred_by = []
            event = self._ledger.record(
                GateReassigned(
                    gate=record.name,
                    to_reviewers=record.reviewers,
                    to_roles=record.roles,
                    comment=review.comment or "",
                    **signature,
                )
            )
        elif review.action is Action.DEFER:
            if review.acting_as not in record.deferred_by:
                record.deferred_by.append(review.acting_as)
            event = self._ledger.record(
                GateDeferred(gate=record.name, comment=review.comment, **signature)
            )
        elif (
            review.action is Action.REJECT
            or len(self._count_approval(record, review)) >= record.spec.approvals
        ):
            event = self._decide(record, review, signature)
        else:
            event = self._ledger.record(
                GateApproved(
                    gate=record.name,
                    approvals=len(record.approvals),
                    approvals_needed=record.spec.approvals,
                    comment=review.comment,
                    modifications=review.modifications,
                    **signature,
                )
            )
        self._publish()
        if not record.state.open:
            self.notifier.gate_event("decided", record.view(), record.spec.notify)
        receipt = ReviewReceipt(
            gate=record.name,
            state=record.state,
            ledger_seq=event.seq,
            approvals=len(record.approvals),
            approvals_needed=record.spec.approvals,
        )
        if review.signed is not None:
            record.receipts[review.signed.nonce] = (payload_digest(review.content), receipt)
        return receipt

    @staticmethod
    def _count_approval(record: GateRecord, review: Review) -> list[Review]:
        """Count an approve or modify; a modify restarts the count on its version."""
        if review.action is Action.MODIFY:
            record.approvals = []
            record.modifications = review.modifications
        record.approvals.append(review)
        return record.approvals

    def _decide(self, record: GateRecord, review: Review, signature: dict[str, Any]) -> EventBase:
        if review.action is Action.REJECT:
            record.state, decision = GateState.REJECTED, ReviewDecision.REJECT
            modifications = None
        elif record.modifications is not None:
            record.state, decision = GateState.MODIFIED, ReviewDecision.MODIFY
            modifications = record.modifications
        else:
            record.state, decision = GateState.APPROVED, ReviewDecision.APPROVE
            modifications = None
        rejected = decision is ReviewDecision.REJECT
        approvers = [] if rejected else [a.acting_as for a in record.approvals]
        record.review = Verdict(
            decision=decision,
            reviewer=review.reviewer,
            on_behalf_of=review.on_behalf_of,
            comment=review.comment,
            modifications=modifications,
            approvers=approvers,
        )
        record.decided_at = workflow.now()
        return self._ledger.record(
            GateDecided(
                gate=record.name,
                decision=decision.value,
                state=record.state.value,
                comment=review.comment,
                modifications=modifications,
                device=review.legacy_device,
                approvers=approvers if record.spec.approvals > 1 else None,
                **signature,
            )
        )

    def views(self) -> list[GateView]:
        """Every gate opened so far, as the ``gates`` query shows them."""
        return [record.view() for record in self._gates.values()]

    async def _load_trust(self, record: GateRecord) -> None:
        """Take the worker's reviewer trust into history (a local activity), so every replay
        checks each decision against the same keys."""
        if record.signed:
            record.trust = await workflow.execute_local_activity(
                REVIEWER_TRUST_ACTIVITY,
                result_type=ReviewerTrust,
                start_to_close_timeout=timedelta(seconds=30),
            )

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
        who = ", ".join([*record.reviewers, *(f"role {r}" for r in record.roles)]) or (
            "any reviewer"
        )
        return (
            f"Waiting at gate **{record.name}**: {record.spec.title}. State "
            f"`{record.state.value}`, for {who}; deadline {record.deadline:%Y-%m-%d %H:%M} UTC"
        )


def _decision_problems(gate: str, spec: GateSpec, review: Review) -> list[str]:
    mods = review.modifications
    if review.action is Action.REJECT and not (review.comment or "").strip():
        return ["a rejection needs a comment saying why"]
    if review.action is not Action.MODIFY:
        if mods:
            return ["modifications are only accepted with decision 'modify'"]
        if spec.output_contract and review.action is Action.APPROVE:
            return [
                f"gate {gate!r} takes over from an agent: answer with decision 'modify' "
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
        return [f"gate {gate!r} does not allow modifying {unknown} (modifiable: {allowed})"]
    reasons = []
    for name, value in mods.items():
        if name in spec.field_types:
            try:
                TypeAdapter(spec.field_types[name]).validate_python(value)
            except ValidationError as err:
                reasons += [
                    f"modifications.{'.'.join(str(p) for p in (name, *e['loc']))}: {e['msg']}"
                    for e in err.errors()
                ]
    return reasons


def modify_schema(spec: GateSpec) -> dict[str, Any] | None:
    """JSON Schema of a ``modify`` decision's modifications at a gate of ``spec`` (None: the
    gate takes no modify). The workflow checks more (an app's own check); this is what a
    form can check before sending."""
    if spec.output_contract:
        schema = dict(REGISTRY.get(spec.output_contract).output_model.model_json_schema())
        properties = dict(schema.get("properties", {}))
        properties.pop("confidence", None)
        required = [name for name in schema.get("required", []) if name != "confidence"]
        return {**schema, "properties": properties, "required": required}
    if not spec.modifiable_fields:
        return None
    properties = {
        name: TypeAdapter(spec.field_types[name]).json_schema() if name in spec.field_types else {}
        for name in spec.modifiable_fields
    }
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "minProperties": 1,
    }


def _legacy_review(payload: dict[str, Any]) -> tuple[Review | None, list[str]]:
    """A review for a gate opened before signatures were required (the old form)."""
    try:
        old = LegacyReview.model_validate(payload)
    except ValidationError as err:
        return None, [
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in err.errors()
        ]
    review = Review(
        gate=old.gate,
        action=Action(old.decision.value),
        reviewer=old.reviewer,
        on_behalf_of=None,
        roles=[],
        comment=old.comment,
        modifications=old.modifications,
        signed=None,
        legacy_device=old.device,
    )
    return review, []


def _signature_fields(review: Review, via: Literal["update", "signal"]) -> dict[str, Any]:
    """The fields every accepted review's event carries (``SignedAction``)."""
    signed = review.signed
    if signed is None:
        return {
            "reviewer": review.reviewer,
            "via": via,
            "auth": {"method": "unsigned: the gate opened before Keel required signatures"},
        }
    return {
        "reviewer": review.reviewer,
        "on_behalf_of": review.on_behalf_of,
        "roles": review.roles,
        "auth": signed.auth.model_dump(mode="json", exclude_none=True),
        "key_id": signed.signature.key_id,
        "signature": signed.signature.signature,
        "signed": review.content,
        "via": via,
    }


def _union(first: list[str], more: tuple[str, ...]) -> list[str]:
    return [*first, *(name for name in more if name not in first)]


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
