"""The worker's signatures, as (local) activities: ``keel.sign``, ``keel.verify_signature``
and ``keel.reviewer_trust`` (the keys trusted for review decisions, read when a gate opens).

Signing and checking are activities, not workflow code, so their results are recorded in
history: a replay on a worker that has since rotated its key reaches the same ledger and the
same decisions.
"""

from __future__ import annotations

from temporalio import activity

from keel.contracts.reviews import REVIEWER_TRUST_ACTIVITY, ReviewerTrust
from keel.contracts.signing import (
    SIGN_ACTIVITY,
    VERIFY_ACTIVITY,
    Signature,
    SignRequest,
    VerifyRequest,
    VerifyResult,
    WorkerKeys,
)


class SigningActivities:
    """The sign and verify activities over one worker's keys."""

    def __init__(self, keys: WorkerKeys) -> None:
        self.keys = keys

    def __repr__(self) -> str:
        return f"SigningActivities({self.keys!r})"

    @activity.defn(name=SIGN_ACTIVITY)
    async def sign(self, request: SignRequest) -> Signature:
        """Sign ``request.message`` for ``request.purpose`` with the worker's key."""
        return self.keys.signing.sign(request.purpose, request.message)

    @activity.defn(name=VERIFY_ACTIVITY)
    async def verify_signature(self, request: VerifyRequest) -> VerifyResult:
        """Check a signature against the worker's trusted keys."""
        problem = self.keys.keyring.problem(request.purpose, request.message, request.signature)
        return VerifyResult(valid=problem is None, problem=problem)

    @activity.defn(name=REVIEWER_TRUST_ACTIVITY)
    async def reviewer_trust(self) -> ReviewerTrust:
        """The keys trusted to sign review decisions, read now (a gate keeps what it got)."""
        return self.keys.reviewers() if self.keys.reviewers else ReviewerTrust()
