"""One approval gate as the dossier shows it: who could decide, each reviewer action with
its authentication and whether its signature holds, the changes a reviewer made against
the agent's answer, escalations and expiry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keel.cli.dossier.decisions import as_json
from keel.contracts.ledger import (
    ChainHeadSigned,
    Escalated,
    GateDecided,
    GateExpired,
    GateOpened,
    ReviewRefused,
    SignedAction,
)
from keel.contracts.reviews import ReviewerTrust, decision_problems


@dataclass
class Signature:
    """Whether a reviewer action's signature holds against the reviewer trust."""

    state: str
    """``verified``, ``failed`` or ``unchecked`` (no reviewer trust file here)."""
    text: str


@dataclass
class Change:
    """One field a reviewer changed: the agent's value and the reviewer's."""

    field: str
    agent: str
    reviewer: str


@dataclass
class Action:
    """One reviewer action at a gate (an approval, a decision, a hand-over, a "not now")."""

    event: SignedAction
    signature: Signature
    gate: GateFacts

    @property
    def changes(self) -> list[Change]:
        """The fields this action modified, beside the agent's answer."""
        return diff(self.gate, getattr(self.event, "modifications", None))

    @property
    def kind(self) -> str:
        """What the reviewer did."""
        decision = getattr(self.event, "decision", None)
        if decision:
            return str(decision)
        return {"GateApproved": "approve", "GateReassigned": "reassign"}.get(
            self.event.type, "not now"
        )

    @property
    def issued_at(self) -> str:
        """When the signer says the reviewer decided (the signed ``issued_at``)."""
        return str((self.event.signed or {}).get("issued_at") or "")

    @property
    def auth_text(self) -> str:
        """How the signer authenticated the reviewer: method, issuer, the device it saw."""
        auth = self.event.auth or {}
        device = auth.get("device") if isinstance(auth.get("device"), dict) else None
        parts = [str(auth.get("method") or "not recorded")]
        if auth.get("issuer"):
            parts.append(f"issuer {auth['issuer']}")
        if device:
            parts.append("device " + " ".join(str(v) for v in device.values() if v))
        legacy = getattr(self.event, "device", None)
        if legacy:
            parts.append(f"device claimed by the caller: {legacy}")
        return ", ".join(parts)


@dataclass
class GateFacts:
    """A ``GateOpened`` event and what followed it at that gate."""

    opened: GateOpened
    reviews: int | None
    """The number of the ``AgentDecided`` event the gate reviews, if one."""
    agent_output: dict[str, Any] | None
    actions: list[Action] = field(default_factory=list)
    refused: list[ReviewRefused] = field(default_factory=list)
    heads: list[ChainHeadSigned] = field(default_factory=list)
    escalations: list[Escalated] = field(default_factory=list)
    expired: GateExpired | None = None
    decided: GateDecided | None = None

    unverified: bool = False
    """Whether any of its events lies at or after where the ledger broke."""

    def seqs(self) -> list[int]:
        """The numbers of its events."""
        events: list[Any] = [self.opened, *self.escalations, *(a.event for a in self.actions)]
        return [e.seq for e in events] + ([self.expired.seq] if self.expired else [])

    @property
    def name(self) -> str:
        """The gate's name."""
        return self.opened.gate

    @property
    def anchor(self) -> str:
        """The page's id for this gate."""
        return f"gate-{self.opened.seq}"

    @property
    def verdict(self) -> str:
        """How the gate ended (``approved``, ``modified``, ``rejected``, ``expired: ...``)."""
        if self.decided is not None:
            return self.decided.state
        if self.expired is not None:
            return f"expired: {self.expired.default_decision} by default"
        return "still open"

    @property
    def closed_at(self) -> datetime | None:
        """When the gate was decided or expired."""
        end = self.decided or self.expired
        return end.at if end is not None else None

    @property
    def deciders(self) -> list[str]:
        """Who approved, modified or rejected it (every approver of an n-of-m gate)."""
        if self.decided is None:
            return []
        return self.decided.approvers or [self.decided.reviewer]

    @property
    def changes(self) -> list[Change]:
        """The changes of the decision that closed the gate."""
        return [c for a in self.actions if a.event is self.decided for c in a.changes]


def action(event: SignedAction, raw: Any, checks: ReviewerChecks, gate: GateFacts) -> Action:
    """``event`` (stored as ``raw``) at ``gate``, with its signature's verdict."""
    return Action(event, checks.signature(raw), gate)


@dataclass
class ReviewerChecks:
    """What ``keel verify --reviewer-keys`` says of each reviewer action of a ledger (the
    same check, over the whole ledger: a signature holds for the run it was made for)."""

    trusted: bool
    """Whether a reviewer trust file was given (else nothing was checked)."""
    problems: dict[str, str]
    """What is wrong with each action that fails, by its event number (as stored)."""

    @classmethod
    def of(cls, raw_events: Sequence[Any], trust: ReviewerTrust) -> ReviewerChecks:
        """Every reviewer action of ``raw_events`` checked against ``trust``."""
        if not trust.keys:
            return cls(False, {})
        _, problems = decision_problems(raw_events, trust)
        found: dict[str, str] = {}
        for problem in problems:  # "event 12 (GateDecided): what is wrong"
            seq, _, rest = problem.removeprefix("event ").partition(" ")
            found.setdefault(seq, rest.split(": ", 1)[-1])
        return cls(True, found)

    def signature(self, raw: Any) -> Signature:
        """The verdict on the reviewer action ``raw`` (as stored)."""
        key = raw.get("key_id") if isinstance(raw, dict) else None
        if not self.trusted:
            signed = f"signed by {key}" if key else "not signed"
            return Signature("unchecked", f"{signed}; not checked: no reviewer trust file here")
        seq = str(raw.get("seq")) if isinstance(raw, dict) else ""
        if seq in self.problems:
            return Signature("failed", self.problems[seq])
        return Signature("verified", "a trusted key for this reviewer signed this decision")


def diff(gate: GateFacts, modifications: dict[str, Any] | None) -> list[Change]:
    """Each field a reviewer changed, beside the agent's value (or, for a field the agent did
    not answer, the value the gate showed the reviewer); fields sent unchanged are left out."""
    if not modifications:
        return []
    before = {**gate.opened.context, **(gate.agent_output or {})}
    return [
        Change(name, _shown(before[name]) if name in before else "(not set)", _shown(value))
        for name, value in sorted(modifications.items())
        if name not in before or before[name] != value
    ]


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else as_json(value)
