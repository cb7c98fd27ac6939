"""What became of each agent decision: ``decision_outcomes(events)`` pairs every
``AgentDecided`` of a ledger with what happened downstream. Pure (no I/O): the training
export (``keel export --dataset``), the trust report (``keel trust``) and the audit dossier
read it.

Each decision gets one ``kind``:

- ``failed_validation``: the answer did not parse, failed the schema, a rule or the
  confidence threshold (``ValidationFailed``), or the plan built from it failed the policy
  (``PlanRejected``); ``retried`` says whether the node tried again. When the node then
  escalated and a person wrote the answer, ``person_output`` holds it.
- ``default_applied``: the last failed attempt of a node whose budget was spent; the
  contract's deterministic default (``default_output``) overrode it.
- ``accepted``: it passed validation and nothing reviewed it (no gate, no rule).
- ``accepted_by_rule``: it passed validation and a named rule (``Routed``) routed the run on
  without a person.
- ``approved``, ``modified``, ``rejected``: a gate that reviewed it was decided so. A
  ``modify`` counts as ``modified`` only when it changed a field of the agent's answer
  (``person_output`` is then the answer with the person's changes); one that set other
  fields (a contract's conditions) approved the answer as it was (``approved``, the
  modifications kept on the gate).
- ``expired``: nobody decided the gate before its SLAs passed; it took its default.
- ``pending``: the gate is still open.

Which gate reviews which decision (the ledger names no link, so these rules decide, in
this order, for each ``GateOpened``):

1. An escalation: the gate opened right after ``Escalated`` for ``node:N`` and its context
   names node N: it reviews the last attempt of N's current run (one that failed).
2. A planned task's gate: its context names a ``round`` and a ``task``: it reviews the
   planner decision whose ``PlanProposed`` is of that round and holds that task (several
   gates may review one plan; one rejection rejects it).
3. Otherwise: the latest decision before the gate that passed validation, that no gate
   reviewed yet, and whose answer the gate shows: a top-level key of the gate's context
   holds the same value as that key of the answer (compared as recorded: the context's
   PII redacted). A gate that shows no answer (a "was the mail sent?" gate) reviews none.

A rejected decision is *superseded* (``superseded_by``) by the accepted decision of the
node's next run when the rejection rolled the context back (``RolledBack``) before that
run (the re-invocation with the reviewer's comment); a plan rejected by the policy, by the
next run of the planner node; a failed attempt, by the attempt its node run accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from keel.contracts.guardrails import redact_pii
from keel.contracts.ledger import (
    AgentDecided,
    AgentRetried,
    CheckpointTaken,
    DefaultApplied,
    Escalated,
    EventBase,
    GateApproved,
    GateDecided,
    GateExpired,
    GateOpened,
    PlanProposed,
    PlanRejected,
    RolledBack,
    Routed,
    ValidationFailed,
)

OutcomeKind = Literal[
    "accepted",
    "accepted_by_rule",
    "approved",
    "modified",
    "rejected",
    "expired",
    "pending",
    "default_applied",
    "failed_validation",
]
OUTCOME_KINDS: tuple[OutcomeKind, ...] = get_args(OutcomeKind)
MAX_LOOKBACK = 1_000
"""How many decisions back a gate's reviewed decision is looked for (a gate reviews a recent
one; the bound keeps a ledger of a million events linear)."""
REVIEWED_KINDS: frozenset[OutcomeKind] = frozenset({"approved", "modified", "rejected"})
"""Kinds a person decided."""


class GateReview(BaseModel):
    """A gate that reviewed a decision, and how it ended."""

    gate: str
    link: Literal["escalation", "plan-task", "shown"]
    """Which rule linked the gate to the decision (see the module's docstring)."""
    state: Literal["approved", "modified", "rejected", "expired", "pending"]
    reviewers: list[str] = Field(default_factory=list)
    """Who approved (every approver of an n-of-m gate) or rejected it."""
    comments: list[str] = Field(default_factory=list)
    modifications: dict[str, Any] | None = None
    default_decision: str | None = None
    """The default an expired gate took (``approve``/``reject``)."""
    task: str | None = None
    """The planned task the gate was for (``plan-task`` gates)."""
    opened_seq: int
    decided_at: datetime | None = None


class DecisionOutcome(BaseModel):
    """One ``AgentDecided`` and what became of it."""

    seq: int
    at: datetime
    node: str
    node_run: int
    """Which run of the node (1, 2, ...: a node re-entered after a rollback runs again)."""
    contract: str
    contract_fingerprint: str
    provider: str
    model: str
    attempt: int
    confidence: float | None
    prompt_sha256: str
    input: dict[str, Any] | None
    """The node run's recorded input (from its first decision); None for runs recorded
    before inputs were."""
    feedback: list[str]
    output: dict[str, Any] | None
    raw_response: str
    kind: OutcomeKind
    validation: str | None = None
    """For a failed answer: ``parse``, ``schema``, ``rule``, ``confidence`` or ``plan``."""
    reasons: list[str] = Field(default_factory=list)
    """Why it failed validation (or the plan policy), and the default's reason."""
    retried: bool = False
    rule: str | None = None
    route: str | None = None
    gates: list[GateReview] = Field(default_factory=list)
    comment: str | None = None
    """The reviewers' comments (for ``rejected``: the rejection's)."""
    person_output: dict[str, Any] | None = None
    """The person's version: a ``modified`` answer, or the answer a person wrote at the
    escalation gate of a node whose attempts all failed."""
    default_output: dict[str, Any] | None = None
    superseded_by: int | None = None
    """``seq`` of the decision that replaced this one (see the module's docstring)."""

    @property
    def reviewed(self) -> bool:
        """Whether a person approved, modified or rejected it."""
        return self.kind in REVIEWED_KINDS


@dataclass
class _Decision:
    event: AgentDecided
    node_run: int
    run_key: tuple[str, int]
    failed: ValidationFailed | None = None
    plan_rejected: PlanRejected | None = None
    plan: PlanProposed | None = None
    retried: bool = False
    default: DefaultApplied | None = None
    routed: Routed | None = None
    gates: list[_Gate] = field(default_factory=list)
    escalation: _Gate | None = None

    @property
    def accepted(self) -> bool:
        return self.failed is None and self.plan_rejected is None


@dataclass
class _Gate:
    opened: GateOpened
    link: Literal["escalation", "plan-task", "shown"]
    decision: _Decision
    task: str | None = None
    approvals: list[GateApproved] = field(default_factory=list)
    decided: GateDecided | None = None
    expired: GateExpired | None = None


@dataclass
class _NodeRun:
    key: tuple[str, int]
    decisions: list[_Decision] = field(default_factory=list)
    replaces: _Decision | None = None

    @cached_property
    def input(self) -> dict[str, Any] | None:
        """The run's recorded input (its first decision's)."""
        return next((d.event.input for d in self.decisions if d.event.input is not None), None)

    @cached_property
    def accepted(self) -> _Decision | None:
        """The decision the run accepted, if any (computed once the walk is over)."""
        return next((d for d in self.decisions if d.accepted), None)


@dataclass
class _Pairing:
    """The walk's state: node runs, decisions, open gates."""

    runs: dict[tuple[str, int], _NodeRun] = field(default_factory=dict)
    current: dict[str, _NodeRun] = field(default_factory=dict)
    decisions: list[_Decision] = field(default_factory=list)
    gates: dict[str, _Gate] = field(default_factory=dict)
    escalating: str | None = None
    """The node whose ``Escalated`` was the event before (rule 1)."""
    rolled_back: set[int] = field(default_factory=set)
    """``seq`` of rejected decisions whose rejection rolled the context back."""
    rejected: list[_Decision] = field(default_factory=list)
    """Decisions a gate rejected since the last ``RolledBack``."""

    def run_of(self, node: str) -> _NodeRun:
        run = self.current.get(node)
        if run is None:
            run = self.new_run(node)
        return run

    def new_run(self, node: str) -> _NodeRun:
        previous = self.current.get(node)
        number = previous.key[1] + 1 if previous else 1
        run = _NodeRun((node, number))
        self.runs[run.key] = run
        self.current[node] = run
        if previous is not None and previous.decisions:
            last = previous.decisions[-1]
            if last.plan_rejected is not None or last.event.seq in self.rolled_back:
                run.replaces = last
        return run

    def last_of(self, node: str) -> _Decision | None:
        run = self.current.get(node)
        return run.decisions[-1] if run and run.decisions else None


def decision_outcomes(events: list[EventBase]) -> list[DecisionOutcome]:
    """Each ``AgentDecided`` of ``events`` (one execution's ledger, every run in order)
    with what became of it, in ledger order."""
    state = _Pairing()
    for event in events:
        escalating, state.escalating = state.escalating, None
        _step(state, event, escalating)
    return [_outcome(state, decision) for decision in state.decisions]


def _step(state: _Pairing, event: EventBase, escalating: str | None) -> None:
    if isinstance(event, CheckpointTaken):
        state.new_run(event.node)
    elif isinstance(event, AgentDecided):
        run = state.run_of(event.node)
        decision = _Decision(event, run.key[1], run.key)
        run.decisions.append(decision)
        state.decisions.append(decision)
    elif isinstance(event, ValidationFailed):
        for decision in reversed(state.run_of(event.node).decisions):
            if decision.event.attempt == event.attempt and decision.failed is None:
                decision.failed = event
                break
    elif isinstance(event, AgentRetried):
        last = state.last_of(event.node)
        if last is not None and not last.accepted:
            last.retried = True
    elif isinstance(event, DefaultApplied):
        last = state.last_of(event.node)
        if last is not None and not last.accepted:
            last.default = event
    elif isinstance(event, Escalated) and event.subject.startswith("node:"):
        state.escalating = event.subject.removeprefix("node:")
    elif isinstance(event, Routed | PlanProposed | PlanRejected):
        _after_answer(state, event)
    elif isinstance(event, GateOpened):
        _link_gate(state, event, escalating)
    elif isinstance(event, GateApproved | GateDecided | GateExpired):
        gate = state.gates.get(event.gate)
        if gate is None:
            return
        if isinstance(event, GateApproved):
            gate.approvals.append(event)
        elif isinstance(event, GateDecided):
            gate.decided = event
            if event.decision == "reject":
                state.rejected.append(gate.decision)
        else:
            gate.expired = event
    elif isinstance(event, RolledBack):
        state.rolled_back.update(decision.event.seq for decision in state.rejected)
        state.rejected.clear()


def _after_answer(state: _Pairing, event: Routed | PlanProposed | PlanRejected) -> None:
    """A rule or plan check that follows an answer belongs to the latest decision, when
    that one passed validation and has none yet."""
    last = state.decisions[-1] if state.decisions else None
    if last is None or not last.accepted:
        return
    if isinstance(event, Routed):
        if last.routed is None:
            last.routed = event
    elif last.plan is None:
        if isinstance(event, PlanProposed):
            last.plan = event
        else:
            last.plan_rejected = event


def _link_gate(state: _Pairing, opened: GateOpened, escalating: str | None) -> None:
    context = opened.context
    if escalating is not None and context.get("node") == escalating:
        last = state.last_of(escalating)
        if last is not None and not last.accepted:
            gate = _Gate(opened, "escalation", last)
            last.escalation = gate
            state.gates[opened.gate] = gate
        return
    recent = state.decisions[-MAX_LOOKBACK:]
    if "task" in context and "round" in context:
        for decision in reversed(recent):
            plan = decision.plan
            if plan is not None and plan.round == context["round"]:
                refs = {task.get("ref") for task in plan.tasks}
                if context["task"] in refs:
                    gate = _Gate(opened, "plan-task", decision, task=str(context["task"]))
                    decision.gates.append(gate)
                    state.gates[opened.gate] = gate
                    return
        return
    for decision in reversed(recent):
        if decision.accepted and not decision.gates and _shows(context, decision.event.output):
            gate = _Gate(opened, "shown", decision)
            decision.gates.append(gate)
            state.gates[opened.gate] = gate
            return


def _shows(context: dict[str, Any], output: dict[str, Any] | None) -> bool:
    """Whether a gate's context holds a value of the answer under the answer's key."""
    if not output:
        return False
    for key, value in context.items():
        if key in output and key != "confidence":
            shown = output[key]
            if value == shown or value == redact_pii(shown):
                return True
    return False


def _state(gate: _Gate) -> Literal["approved", "modified", "rejected", "expired", "pending"]:
    if gate.decided is not None:
        if gate.decided.decision == "reject":
            return "rejected"
        return "modified" if gate.decided.modifications else "approved"
    if gate.expired is not None:
        return "expired"
    return "pending"


def _review(gate: _Gate) -> GateReview:
    decided = gate.decided
    comments = [a.comment for a in gate.approvals if a.comment]
    reviewers = [a.on_behalf_of or a.reviewer for a in gate.approvals]
    if decided is not None:
        if decided.comment:
            comments.append(decided.comment)
        if decided.decision == "reject":
            reviewers = [decided.on_behalf_of or decided.reviewer]
        else:
            reviewers = decided.approvers or [*reviewers, decided.on_behalf_of or decided.reviewer]
            reviewers = list(dict.fromkeys(reviewers))
    return GateReview(
        gate=gate.opened.gate,
        link=gate.link,
        state=_state(gate),
        reviewers=reviewers,
        comments=comments,
        modifications=decided.modifications if decided else None,
        default_decision=gate.expired.default_decision if gate.expired else None,
        task=gate.task,
        opened_seq=gate.opened.seq,
        decided_at=decided.at if decided else (gate.expired.at if gate.expired else None),
    )


def _outcome(state: _Pairing, decision: _Decision) -> DecisionOutcome:
    event = decision.event
    run = state.runs[decision.run_key]
    recorded = run.input
    outcome = DecisionOutcome(
        seq=event.seq,
        at=event.at,
        node=event.node,
        node_run=decision.node_run,
        contract=event.contract,
        contract_fingerprint=event.contract_fingerprint,
        provider=event.provider,
        model=event.model,
        attempt=event.attempt,
        confidence=event.confidence,
        prompt_sha256=event.prompt_sha256,
        input=recorded,
        feedback=list(event.feedback),
        output=event.output,
        raw_response=event.raw_response,
        kind="accepted",
        superseded_by=_superseded_by(state, decision),
    )
    if not decision.accepted:
        return _failed(outcome, decision)
    if decision.gates:
        return _gated(outcome, decision)
    if decision.routed is not None:
        outcome.kind = "accepted_by_rule"
        outcome.rule, outcome.route = decision.routed.rule, decision.routed.route
    return outcome


def _failed(outcome: DecisionOutcome, decision: _Decision) -> DecisionOutcome:
    outcome.kind = "failed_validation"
    outcome.retried = decision.retried
    if decision.failed is not None:
        outcome.validation, outcome.reasons = decision.failed.kind, list(decision.failed.reasons)
    elif decision.plan_rejected is not None:
        outcome.validation, outcome.reasons = "plan", list(decision.plan_rejected.reasons)
    if decision.default is not None:
        outcome.kind = "default_applied"
        outcome.reasons.append(decision.default.reason)
        outcome.default_output = decision.default.output
    if decision.escalation is not None:
        review = _review(decision.escalation)
        outcome.gates = [review]
        outcome.comment = "\n".join(review.comments) or None
        if review.state == "modified" and review.modifications:
            # What the workflow takes from the person (``AgentNodes._escalate``).
            outcome.person_output = {"confidence": 1.0, **review.modifications}
    return outcome


def _gated(outcome: DecisionOutcome, decision: _Decision) -> DecisionOutcome:
    reviews = [_review(gate) for gate in decision.gates]
    outcome.gates = reviews
    if decision.routed is not None:
        outcome.rule, outcome.route = decision.routed.rule, decision.routed.route
    states = {review.state for review in reviews}
    rejecting = [r for r in reviews if r.state == "rejected"]
    if rejecting:
        outcome.kind = "rejected"
        outcome.comment = "\n".join(c for r in rejecting for c in r.comments) or None
        return outcome
    outcome.comment = "\n".join(c for r in reviews for c in r.comments) or None
    if "pending" in states:
        outcome.kind = "pending"
    elif "expired" in states:
        outcome.kind = "expired"
    else:
        person = _person_version(outcome.output or {}, reviews)
        changed = person != (outcome.output or {})
        outcome.kind = "modified" if changed else "approved"
        outcome.person_output = person if changed else None
    return outcome


def _person_version(output: dict[str, Any], reviews: list[GateReview]) -> dict[str, Any]:
    """The answer with the reviewers' changes to its own fields (a planned task's gate
    changes that task's input)."""
    person = dict(output)
    for review in reviews:
        mods = review.modifications or {}
        if review.link == "plan-task":
            tasks = [dict(t) if isinstance(t, dict) else t for t in person.get("tasks", [])]
            for task in tasks:
                if isinstance(task, dict) and task.get("ref") == review.task and mods:
                    task["input"] = {**(task.get("input") or {}), **mods}
            if "tasks" in person:
                person["tasks"] = tasks
        else:
            person.update({k: v for k, v in mods.items() if k in output and k != "confidence"})
    return person


def _superseded_by(state: _Pairing, decision: _Decision) -> int | None:
    accepted = state.runs[decision.run_key].accepted
    failed = not decision.accepted and decision.failed is not None
    if failed and accepted is not None and accepted.event.seq > decision.event.seq:
        return accepted.event.seq
    node, number = decision.run_key
    later = state.runs.get((node, number + 1))
    if later is None or later.replaces is not decision or later.accepted is None:
        return None
    return later.accepted.event.seq
