"""The dossier's facts, from one execution's ledger as stored and its verification report.

Every event is parsed on its own: an event that does not parse (a forged or damaged one)
still appears in the timeline, as stored, and the rest of the dossier is built from the
events that do. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.cli.dossier.decisions import DecisionFacts, Text
from keel.cli.dossier.gates import GateFacts, ReviewerChecks, action
from keel.cli.dossier.timeline import Row, describe
from keel.cli.render import verification_lines
from keel.contracts.integrity import LedgerReport
from keel.contracts.ledger import (
    AgentCallFailed,
    AgentDecided,
    AgentRetried,
    ChainHeadSigned,
    CheckpointTaken,
    DefaultApplied,
    Escalated,
    EventBase,
    GateDecided,
    GateExpired,
    GateOpened,
    PolicyApplied,
    ProviderFallback,
    ReviewRefused,
    RolledBack,
    Routed,
    SignedAction,
    ValidationFailed,
    WorkflowCompleted,
    WorkflowStarted,
    parse_ledger,
)
from keel.contracts.outcomes import decision_outcomes
from keel.contracts.reviews import ReviewerTrust

EFFECT_TYPES = frozenset(
    {
        "TaskCompleted",
        "TaskFailed",
        "TaskSkipped",
        "Compensated",
        "EffectOutcomeUnknown",
        "EffectResolved",
    }
)
PLAN_TYPES = frozenset({"PlanProposed", "PlanRejected", "PlanMaterialized"})


@dataclass
class Run:
    """One run of the execution (a continued execution has several)."""

    run_id: str
    status: str
    source: str = "temporal"
    """Where the run's ledger was read: ``temporal`` or ``archive``."""


@dataclass
class Verification:
    """What the dossier says of the ledger's integrity, first and loudly."""

    state: str
    """``verified``, ``broken`` or ``incomplete`` (consistent, but something went unchecked)."""
    headline: str
    lines: list[str]
    broken_at: int | None = None
    reason: str | None = None
    vouched_through: int | None = None
    """When not every event is vouched for (the ledger broke, or events are not signed
    yet): the last event a verified signature covers (0: none)."""

    def mark(self, seq: int | None) -> str:
        """A timeline row's state: ``broken``, ``after`` (vouched for by no signature) or
        ``ok``."""
        if seq is not None and seq == self.broken_at:
            return "broken"
        if seq is not None and self.vouched_through is not None and seq > self.vouched_through:
            return "after"
        return "ok"

    def vouches(self, seqs: Sequence[int]) -> bool:
        """Whether a verified signature covers every event of ``seqs``."""
        return self.vouched_through is None or max(seqs, default=0) <= self.vouched_through

    @property
    def ok(self) -> bool:
        """Whether nothing is broken (``incomplete`` is not broken)."""
        return self.state != "broken"


@dataclass
class Dossier:
    """Everything the page shows about one execution."""

    workflow_id: str
    runs: list[Run]
    verification: Verification
    started: WorkflowStarted | None = None
    completed: WorkflowCompleted | None = None
    decisions: list[DecisionFacts] = field(default_factory=list)
    gates: list[GateFacts] = field(default_factory=list)
    routes: list[Routed] = field(default_factory=list)
    effects: list[Row] = field(default_factory=list)
    plans: list[Row] = field(default_factory=list)
    timeline: list[Row] = field(default_factory=list)
    unparsed: int = 0
    source_note: str | None = None
    """Where the ledger came from, when not (only) from Temporal (the ledger archive)."""
    pairing_problem: str | None = None
    """Why decisions could not be paired with their gates, if they could not."""

    @property
    def workflow_type(self) -> str:
        """The workflow type the ledger's first run names."""
        return self.started.workflow if self.started is not None else "unknown"


def build_dossier(
    workflow_id: str,
    runs: Sequence[Run],
    raw_events: Sequence[Any],
    report: LedgerReport,
    trust: ReviewerTrust,
    *,
    source_note: str | None = None,
) -> Dossier:
    """The dossier of ``raw_events`` (every run's events as stored, oldest first), verified
    as ``report`` says; reviewer signatures are checked against ``trust``."""
    dossier = Dossier(workflow_id, list(runs), verification_of(report, runs))
    dossier.source_note = source_note
    builder = _Builder(dossier, ReviewerChecks.of(raw_events, trust))
    for raw in raw_events:
        event = _parsed(raw)
        if event is None:
            dossier.unparsed += 1
            dossier.timeline.append(Row.unparsed(raw))
            continue
        dossier.timeline.append(Row.of(event, describe(event)))
        builder.add(event, raw)
    builder.pair()
    verification = dossier.verification
    for gate in dossier.gates:
        forged = any(action.signature.state == "failed" for action in gate.actions)
        gate.unverified = forged or not verification.vouches(gate.seqs())
    for decision in dossier.decisions:
        reviewed = decision.gate is not None and decision.gate.unverified
        decision.unverified = reviewed or not verification.vouches(decision.seqs())
    for row in dossier.timeline:
        if row.state != "unparsed":
            row.state = verification.mark(row.seq)
    for row in dossier.timeline:
        row.link = builder.links.get(row.seq) if row.seq is not None else None
    return dossier


def verification_of(report: LedgerReport, runs: Sequence[Run]) -> Verification:
    """The verdict on the ledger: broken, verified, or consistent with something unchecked
    (no trusted keys, no reviewer trust file, unsigned events of an open run, legacy)."""
    status = runs[-1].status if runs else "RUNNING"
    lines = verification_lines(report, status)
    covered = max((head.covers_seq for head in report.signed), default=0)
    vouched = covered if not report.ok or report.unsigned else None
    if not report.ok:
        where = f"at event #{report.broken_at}" if report.broken_at is not None else ""
        return Verification(
            "broken",
            f"LEDGER BROKEN {where}".strip(),
            [f"why: {report.reason}"],
            report.broken_at,
            report.reason,
            vouched,
        )
    gaps = []
    if report.legacy:
        gaps.append("an unsigned legacy ledger")
    elif not report.signatures_checked:
        gaps.append("head signatures not checked (no trusted keys)")
    if report.decisions_checked is None:
        gaps.append("reviewer signatures not checked (no reviewer trust file)")
    if report.unsigned:
        gaps.append(f"{report.unsigned} events after the last signed head")
    if gaps:
        headline = "Hash chain consistent; NOT checked: " + "; ".join(gaps)
        return Verification("incomplete", headline, lines, vouched_through=vouched)
    decided = report.decisions_checked or 0
    return Verification(
        "verified",
        f"VERIFIED: {report.events} events, {len(report.signed)} signed heads and "
        f"{decided} reviewer signatures hold",
        lines,
    )


def _parsed(raw: Any) -> EventBase | None:
    try:
        return parse_ledger([raw])[0]
    except (ValueError, TypeError, RecursionError):  # pydantic's ValidationError: ValueError
        return None


class _Builder:
    """Walks the events once, pairing each with the decision or gate it belongs to."""

    def __init__(self, dossier: Dossier, checks: ReviewerChecks) -> None:
        self.dossier = dossier
        self.checks = checks
        self.links: dict[int, str] = {}
        self.pending: dict[str, list[EventBase]] = {}
        """Guardrail, fallback and failed-call events of a node, before its decision."""
        self.latest: dict[str, DecisionFacts] = {}
        self.inputs: dict[str, dict[str, Any] | None] = {}
        self.accepted: DecisionFacts | None = None
        self.open_gates: dict[str, GateFacts] = {}
        self.events: list[EventBase] = []
        self.rollbacks: list[RolledBack] = []

    def add(self, event: EventBase, raw: Any) -> None:
        self.events.append(event)
        d = self.dossier
        if isinstance(event, WorkflowStarted) and d.started is None:
            d.started = event
        elif isinstance(event, WorkflowCompleted):
            d.completed = event
        elif isinstance(event, PolicyApplied | ProviderFallback | AgentCallFailed):
            self.pending.setdefault(event.node, []).append(event)
        elif isinstance(event, CheckpointTaken):
            self.inputs.pop(event.node, None)  # a new run of the node records its input anew
        elif isinstance(event, AgentDecided):
            self._decided(event)
        elif isinstance(event, ValidationFailed | AgentRetried | DefaultApplied):
            self._checked(event)
        elif isinstance(event, Routed):
            d.routes.append(event)
            if self.accepted is not None:
                self.accepted.routed.append(event)
                self.links[event.seq] = self.accepted.anchor
        elif isinstance(event, GateOpened):
            self._opened(event)
        elif isinstance(event, SignedAction | ReviewRefused | GateExpired):
            self._at_gate(event, raw)
        elif isinstance(event, Escalated):
            self._escalated(event)
        elif isinstance(event, ChainHeadSigned):
            gate = self.open_gates.get(event.reason.partition(":")[2])
            if gate is not None:
                gate.heads.append(event)
        elif isinstance(event, RolledBack):
            self.rollbacks.append(event)
        elif event.type in EFFECT_TYPES:
            d.effects.append(Row.of(event, describe(event)))
        elif event.type in PLAN_TYPES:
            d.plans.append(Row.of(event, describe(event)))

    def _decided(self, event: AgentDecided) -> None:
        if event.input is not None or event.node not in self.inputs:
            self.inputs[event.node] = event.input  # a node run's first attempt records it
        facts = DecisionFacts(
            event, Text.of(event.raw_response), event.input or self.inputs.get(event.node)
        )
        for earlier in self.pending.pop(event.node, []):
            self.links[earlier.seq] = facts.anchor
            if isinstance(earlier, PolicyApplied):
                facts.guardrails.append(earlier)
            elif isinstance(earlier, ProviderFallback):
                facts.fallbacks.append(earlier)
            elif isinstance(earlier, AgentCallFailed):
                facts.call_failures.append(earlier)
        self.latest[event.node] = facts
        self.dossier.decisions.append(facts)
        self.links[event.seq] = facts.anchor
        if event.output is not None:
            self.accepted = facts  # until a check fails it

    def _checked(self, event: ValidationFailed | AgentRetried | DefaultApplied) -> None:
        facts = self.latest.get(event.node)
        if facts is None:
            return
        self.links[event.seq] = facts.anchor
        if isinstance(event, ValidationFailed):
            facts.validation.append(event)
            if self.accepted is facts:
                self.accepted = None
        elif isinstance(event, AgentRetried):
            facts.retried = event
        else:
            facts.default = event

    def _opened(self, event: GateOpened) -> None:
        gate = GateFacts(event, None, None)
        self.open_gates[event.gate] = gate
        self.dossier.gates.append(gate)
        self.links[event.seq] = gate.anchor

    def _at_gate(self, event: SignedAction | ReviewRefused | GateExpired, raw: Any) -> None:
        gate = self.open_gates.get(getattr(event, "gate", None) or "")
        if gate is None:
            return
        self.links[event.seq] = gate.anchor
        if isinstance(event, ReviewRefused):
            gate.refused.append(event)
        elif isinstance(event, GateExpired):
            gate.expired = event
        else:
            gate.actions.append(action(event, raw, self.checks, gate))
            if isinstance(event, GateDecided):
                gate.decided = event

    def _escalated(self, event: Escalated) -> None:
        gate = self.open_gates.get(event.subject.removeprefix("gate:"))
        if gate is not None:
            gate.escalations.append(event)
            self.links[event.seq] = gate.anchor
        elif (facts := self.latest.get(event.subject.removeprefix("node:"))) is not None:
            facts.escalated = event
            self.links[event.seq] = facts.anchor

    def pair(self) -> None:
        """Link each decision to the gates that reviewed it, as ``decision_outcomes`` pairs
        them (the export and the trust report read the same pairing), and each rollback
        to the rejected decision it discarded."""
        try:
            outcomes = decision_outcomes(self.events)
        except Exception as exc:  # a forged ledger the pairing cannot follow
            self.dossier.pairing_problem = f"{type(exc).__name__}: {str(exc)[:200]}"
            outcomes = []
        decisions = {facts.event.seq: facts for facts in self.dossier.decisions}
        gates = {gate.opened.seq: gate for gate in self.dossier.gates}
        for outcome in outcomes:
            facts = decisions.get(outcome.seq)
            if facts is None:
                continue
            facts.record = outcome
            facts.node_input = outcome.input if outcome.input is not None else facts.node_input
            for review in outcome.gates:
                gate = gates.get(review.opened_seq)
                if gate is not None and gate.reviews is None:
                    gate.reviews, gate.agent_output = outcome.seq, facts.event.output
                    facts.gate = facts.gate or gate
        for rollback in self.rollbacks:
            rejected = [
                facts
                for facts in self.dossier.decisions
                if facts.event.seq < rollback.seq
                and facts.gate is not None
                and facts.gate.verdict == "rejected"
                and facts.rolled_back is None
            ]
            if rejected:
                rejected[-1].rolled_back = rollback
                self.links[rollback.seq] = rejected[-1].anchor
