"""Who may see and decide a gate: the same rules the workflow enforces, checked first so
the inbox shows only what a reviewer can act on and explains a refusal before signing.

The workflow has the last word (it verifies the signed decision in workflow code); these
checks make the page honest, not the system safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from keel.contracts.gates import GateView
from keel.inbox.directory import Principal


@dataclass(frozen=True)
class Reviewer:
    """An authenticated caller: who they are, their roles, and how they proved it."""

    subject: str
    display_name: str
    roles: tuple[str, ...]
    method: str
    """``password`` (a local account) or ``oidc`` (a bearer token)."""
    issuer: str | None
    delegators: tuple[Principal, ...] = field(default=())
    """Who delegated to this reviewer, with delegations holding now."""

    def delegator(self, subject: str) -> Principal | None:
        """The principal ``subject`` if they delegated to this reviewer."""
        return next((p for p in self.delegators if p.subject == subject), None)


def may_decide(subject: str, roles: tuple[str, ...] | list[str], gate: GateView) -> bool:
    """Whether ``subject`` with ``roles`` is among the gate's deciders (named, or by role;
    anyone when the gate names nobody), and not one of its requesters."""
    if subject in gate.requesters:
        return False
    if not gate.reviewers and not gate.roles:
        return True
    return subject in gate.reviewers or bool(set(roles) & set(gate.roles))


def acting_choices(reviewer: Reviewer, gate: GateView) -> list[str | None]:
    """Whom ``reviewer`` may decide ``gate`` as: None for themselves, else a delegator's
    subject (decided ``on_behalf_of`` them)."""
    choices: list[str | None] = []
    if may_decide(reviewer.subject, reviewer.roles, gate):
        choices.append(None)
    choices += [
        p.subject
        for p in reviewer.delegators
        if p.subject != reviewer.subject and may_decide(p.subject, p.roles, gate)
    ]
    return choices


def may_see(reviewer: Reviewer, gate: GateView) -> bool:
    """Whether the gate is shown to ``reviewer``: one they (or a delegator) may decide, or one
    they took part in."""
    took_part = reviewer.subject in (gate.decided_by, gate.on_behalf_of, *gate.approved_by)
    return took_part or bool(acting_choices(reviewer, gate))


def time_left(gate: GateView, now: datetime) -> float | None:
    """Seconds until the gate's current SLA passes (negative once it has), or None."""
    return (gate.deadline - now).total_seconds() if gate.deadline else None
