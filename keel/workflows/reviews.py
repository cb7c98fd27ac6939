"""Checking a signed review in workflow code: whose key signed it, for which run, as whom.

Workflow code, not an activity: an update's validator must decide synchronously whether a
review changes anything, and a signal's handler must decide the same way on every replay.
What it checks against is deterministic: the reviewer trust a gate took into history as it
opened (``keel.reviewer_trust``), the run's own ids and the workflow clock.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    # Signatures are checked here, in workflow code: cryptography's native extension is
    # loaded once, outside any sandbox (Temporal's default one too), and shared.
    import cryptography.exceptions
    import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401
    from pydantic import ValidationError

    from keel.contracts.reviews import (
        ReviewerTrust,
        SignedReview,
        signature_holds,
        signed_content,
    )

MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of the workflow's clock a decision's ``issued_at`` may be."""


def signed_review(
    payload: dict[str, Any], trust: ReviewerTrust
) -> tuple[SignedReview | None, list[str], list[str]]:
    """Parse ``payload`` and check its signature against ``trust``.

    Returns the review, the reasons it is refused (empty: the signature holds and the key
    may sign for this reviewer), and the roles it acts with: those the review service
    asserts for a service key, those the trust entry grants for a reviewer's own key.
    """
    if "signature" not in payload:
        return None, [_UNSIGNED], []
    try:
        review = SignedReview.model_validate(payload)
    except ValidationError as err:
        return None, [_pydantic_reason(e) for e in err.errors()], []
    key = trust.get(review.signature.key_id)
    if key is None:
        trusted = ", ".join(k.key_id for k in trust.keys) or "none"
        return (
            review,
            [
                f"signed by {review.signature.key_id}, which is not trusted for "
                f"reviews (trusted when the gate opened: {trusted})"
            ],
            [],
        )
    if not signature_holds(key.public_key, signed_content(payload), review.signature.signature):
        return review, [f"the signature by {key.key_id} does not match the decision"], []
    if key.not_after is not None and review.issued_at > key.not_after:
        return review, [f"key {key.key_id} was retired at {key.not_after.isoformat()}"], []
    if key.kind == "service":
        return review, [], list(review.roles)
    reasons = []
    if review.reviewer != key.subject:
        reasons.append(f"key {key.key_id} signs for {key.subject!r} only")
    if review.on_behalf_of is not None:
        reasons.append("a reviewer's own key cannot decide on behalf of someone else")
    extra = sorted(set(review.roles) - set(key.roles))
    if extra:
        reasons.append(f"key {key.key_id} does not grant the roles {extra}")
    return review, reasons, list(key.roles)


_UNSIGNED = (
    "the review is not signed: decide through the inbox (keel inbox), its HTTP API, or "
    "`keel approve` with a reviewer key (KEEL_REVIEWER_KEY_FILE); see docs/reviews.md"
)


def _pydantic_reason(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "payload"
    return f"{where}: {error['msg']}"
