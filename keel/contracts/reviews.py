"""Signed review decisions: the ``review`` payload, who may sign one, and how it is signed.

A decision counts only if it is signed (Ed25519) by a key the workers trust: the review
service's key (the inbox and its HTTP API, which authenticate the reviewer and sign for
them) or a reviewer's own key (the CLI), bound in the trust file to one subject and its
roles. The signature covers every field of the payload but ``signature`` itself, as sent
(RFC 8785 canonical JSON, purpose ``keel/review-decision/1``): gate, execution (workflow
and run id), decision, modifications, comment, reviewer, roles, delegation, time, nonce and
the device the service saw. A decision signed for one gate of one run cannot be replayed
into another, and a repeat of the same nonce is the same decision (idempotent).

Pure: no I/O. The trust file is read by ``keel.workers.keys``; workflows check payloads in
``keel.workflows.reviews``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from keel.contracts.gates import MAX_COMMENT_CHARS, MAX_NAME_CHARS, modification_depth_problem
from keel.contracts.signing import Signature, SigningKey, b64decode

REVIEW_PURPOSE = "keel/review-decision/1"
"""What a decision's signature is made for (a signature for anything else never counts)."""
REVIEWER_TRUST_ACTIVITY = "keel.reviewer_trust"
"""Local activity: the worker's trusted reviewer keys, snapshotted into history per gate."""
MAX_ROLES = 20
MIN_NONCE_CHARS = 16
MAX_NONCE_CHARS = 128


class Action(StrEnum):
    """What a reviewer does at a gate: decide it, or pass it on without deciding."""

    APPROVE = "approve"
    REJECT = "reject"
    MODIFY = "modify"
    REASSIGN = "reassign"
    """Hand the gate to other reviewers or roles (comment required); the gate stays open."""
    DEFER = "defer"
    """"Not now": the reviewer steps aside without deciding; the gate stays open."""

    @property
    def decides(self) -> bool:
        """Whether the action is a verdict (approve, reject, modify)."""
        return self in (Action.APPROVE, Action.REJECT, Action.MODIFY)


Name = Field(min_length=1, max_length=MAX_NAME_CHARS)


class Device(BaseModel):
    """The device a decision came from, as the signing service saw it (not as claimed)."""

    model_config = ConfigDict(extra="forbid")

    user_agent: str | None = Field(None, max_length=MAX_NAME_CHARS * 2)
    address: str | None = Field(None, max_length=MAX_NAME_CHARS)


class Authentication(BaseModel):
    """How the signer established who the reviewer is."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["password", "oidc", "reviewer-key", "test-kit"]
    issuer: str | None = Field(None, max_length=MAX_NAME_CHARS)
    """For ``oidc``: the token's issuer; for ``password``: the directory."""
    device: Device | None = None


class Assignment(BaseModel):
    """Who a ``reassign`` hands the gate to: named reviewers and/or roles."""

    model_config = ConfigDict(extra="forbid")

    reviewers: list[str] = Field(default_factory=list, max_length=MAX_ROLES)
    roles: list[str] = Field(default_factory=list, max_length=MAX_ROLES)

    @field_validator("reviewers", "roles")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or len(name) > MAX_NAME_CHARS:
                raise ValueError(f"names are 1 to {MAX_NAME_CHARS} characters")
        return value


class SignedReview(BaseModel):
    """The JSON payload of the ``review`` update and signal."""

    model_config = ConfigDict(extra="forbid")

    gate: str = Name
    decision: Action
    reviewer: str = Name
    """The authenticated subject who acts (a delegate, when ``on_behalf_of`` is set)."""
    roles: list[str] = Field(default_factory=list, max_length=MAX_ROLES)
    """The reviewer's roles as the directory holds them (for a reviewer's own key, the roles
    its trust entry grants are used instead, and these must be among them)."""
    on_behalf_of: str | None = Field(None, min_length=1, max_length=MAX_NAME_CHARS)
    """The principal who delegated to ``reviewer`` while away (asserted by the service); the
    gate is decided as them, ``roles`` are theirs, and both names are recorded."""
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)
    modifications: dict[str, Any] | None = None
    reassign_to: Assignment | None = None
    workflow_id: str = Field(min_length=1, max_length=1000)
    run_id: str = Field(min_length=1, max_length=100)
    issued_at: AwareDatetime
    nonce: str = Field(min_length=MIN_NONCE_CHARS, max_length=MAX_NONCE_CHARS)
    auth: Authentication
    signature: Signature

    @field_validator("modifications")
    @classmethod
    def _shallow(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = modification_depth_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def acting_as(self) -> str:
        """Whose decision this is: the delegator's when delegated, else the reviewer's."""
        return self.on_behalf_of or self.reviewer


class TrustedReviewerKey(BaseModel):
    """One entry of the reviewer trust file.

    A ``service`` key (the inbox, the HTTP API) may sign for any reviewer it authenticated,
    with the roles its directory gives them. A ``reviewer`` key signs only for ``subject``,
    with at most ``roles``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str
    public_key: str
    """URL-safe base64 (no padding) of the 32 raw Ed25519 public-key bytes."""
    kind: Literal["service", "reviewer"]
    name: str | None = None
    """What the key is, for people (``keel inbox on host-1``)."""
    subject: str | None = None
    roles: tuple[str, ...] = ()
    not_after: AwareDatetime | None = None
    """Decisions issued after this instant are refused (a retired key)."""

    @field_validator("public_key")
    @classmethod
    def _raw_key(cls, value: str) -> str:
        if len(b64decode(value)) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return value


class ReviewerTrust(BaseModel):
    """The keys a worker trusts for decisions; a gate keeps the snapshot taken as it opened."""

    model_config = ConfigDict(extra="forbid")

    keys: list[TrustedReviewerKey] = Field(default_factory=list)

    def get(self, key_id: str) -> TrustedReviewerKey | None:
        """The entry for ``key_id``, if trusted."""
        return next((key for key in self.keys if key.key_id == key_id), None)

    def merged(self, other: ReviewerTrust) -> ReviewerTrust:
        """Both sets of keys; an entry of ``other`` replaces one of the same key id."""
        keys = {key.key_id: key for key in self.keys}
        keys.update({key.key_id: key for key in other.keys})
        return ReviewerTrust(keys=[keys[k] for k in sorted(keys)])


def trusted_key_entry(
    key: SigningKey,
    kind: Literal["service", "reviewer"],
    *,
    name: str | None = None,
    subject: str | None = None,
    roles: Sequence[str] = (),
) -> TrustedReviewerKey:
    """The trust-file entry for ``key`` (its public half)."""
    from keel.contracts.signing import b64encode, raw_public_key

    if kind == "reviewer" and not subject:
        raise ValueError("a reviewer key is bound to a subject")
    return TrustedReviewerKey(
        key_id=key.key_id,
        public_key=b64encode(raw_public_key(key.public_key)),
        kind=kind,
        name=name,
        subject=subject,
        roles=tuple(roles),
    )


def new_nonce() -> str:
    """A fresh random nonce (a form render, an API request without an idempotency key)."""
    return secrets.token_urlsafe(18)


def sign_review(
    key: SigningKey,
    *,
    gate: str,
    decision: Action | str,
    reviewer: str,
    workflow_id: str,
    run_id: str,
    auth: Authentication | Mapping[str, Any],
    roles: Sequence[str] = (),
    on_behalf_of: str | None = None,
    comment: str | None = None,
    modifications: Mapping[str, Any] | None = None,
    reassign_to: Assignment | Mapping[str, Any] | None = None,
    nonce: str | None = None,
    issued_at: datetime | None = None,
) -> dict[str, Any]:
    """A signed ``review`` payload, ready to send by update or signal.

    ``nonce`` makes a retried request the same decision: pass the same one (an idempotency
    key) to repeat it safely; a new one is generated when omitted.
    """
    fields: dict[str, Any] = {
        "gate": gate,
        "decision": Action(decision).value,
        "reviewer": reviewer,
        "roles": list(roles),
        "workflow_id": workflow_id,
        "run_id": run_id,
        "issued_at": (issued_at or datetime.now(UTC)).isoformat(),
        "nonce": nonce or new_nonce(),
        "auth": Authentication.model_validate(auth).model_dump(mode="json", exclude_none=True),
    }
    optional = {
        "on_behalf_of": on_behalf_of,
        "comment": comment,
        "modifications": dict(modifications) if modifications is not None else None,
        "reassign_to": (
            Assignment.model_validate(reassign_to).model_dump(mode="json")
            if reassign_to is not None
            else None
        ),
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    return sign_fields(key, fields)


def sign_fields(key: SigningKey, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with a ``signature`` over them (for tests of odd payloads, and re-signing)."""
    unsigned = {k: v for k, v in fields.items() if k != "signature"}
    signature = key.sign(REVIEW_PURPOSE, unsigned)
    return {**unsigned, "signature": signature.model_dump()}


def signed_content(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a review's signature covers: the payload as sent, without ``signature``."""
    return {k: v for k, v in payload.items() if k != "signature"}


def signature_holds(public_key: str, content: Mapping[str, Any], signature: str) -> bool:
    """Whether ``signature`` (base64url) by ``public_key`` (base64url, raw) covers
    ``content`` as a review decision."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from keel.contracts.signing import signing_bytes

    try:
        key = Ed25519PublicKey.from_public_bytes(b64decode(public_key))
        key.verify(b64decode(signature), signing_bytes(REVIEW_PURPOSE, dict(content)))
    except (InvalidSignature, ValueError, TypeError):  # bad key or base64, odd JSON
        return False
    return True


DECISION_EVENTS = frozenset({"GateDecided", "GateApproved", "GateReassigned", "GateDeferred"})
"""Ledger event types that record a reviewer's signed action."""


def decision_problems(raw_events: Sequence[Any], trust: ReviewerTrust) -> tuple[int, list[str]]:
    """Check every reviewer action in a ledger (events as stored) against ``trust``: how
    many signed ones hold, and what is wrong with the others (an unsigned one included).

    A signature holds only for what was signed: the event must record that decision, on
    that gate, with that comment and those modifications, in the run the reviewer signed
    for. Whoever could rewrite the ledger and re-sign its heads (the worker's key) still
    cannot turn a reviewer's rejection into an approval.
    """
    checked, problems = 0, []
    run: tuple[Any, Any] | None = None
    for raw in raw_events:
        if not isinstance(raw, dict):
            continue
        if raw.get("type") == "WorkflowStarted":
            run = (raw.get("workflow_id"), raw.get("run_id"))
        elif raw.get("type") == "LedgerContinued":
            run = None  # a new run: its ids come with its WorkflowStarted, if it records one
        if raw.get("type") not in DECISION_EVENTS:
            continue
        problem = _decision_problem(raw, trust) or _recorded_otherwise(raw, run)
        if problem:
            problems.append(f"event {raw.get('seq')} ({raw.get('type')}): {problem}")
        else:
            checked += 1
    return checked, problems


def _decision_problem(raw: Mapping[str, Any], trust: ReviewerTrust) -> str | None:
    signed, signature, key_id = raw.get("signed"), raw.get("signature"), raw.get("key_id")
    if not (isinstance(signed, dict) and isinstance(signature, str) and isinstance(key_id, str)):
        method = (
            (raw.get("auth") or {}).get("method") if isinstance(raw.get("auth"), dict) else None
        )
        return f"not signed ({method or 'a decision recorded before signatures'})"
    key = trust.get(key_id)
    if key is None:
        return f"signed by {key_id}, which the reviewer trust file does not hold"
    if not signature_holds(key.public_key, signed, signature):
        return f"the signature by {key_id} does not match the recorded decision"
    if signed.get("reviewer") != raw.get("reviewer"):
        return "the event's reviewer is not the one who signed"
    if key.kind == "reviewer" and signed.get("reviewer") != key.subject:
        return f"key {key_id} signs for {key.subject!r} only"
    listed = signed.get("roles")
    extra = sorted({str(r) for r in listed} - set(key.roles)) if isinstance(listed, list) else []
    if key.kind == "reviewer" and extra:
        return f"key {key_id} does not grant the roles {extra}"
    if key.not_after is not None and _issued_after(signed.get("issued_at"), key.not_after):
        return f"signed after key {key_id} was retired ({key.not_after.isoformat()})"
    return None


def _issued_after(issued_at: Any, instant: datetime) -> bool:
    """Whether a signed ``issued_at`` (ISO 8601 text) is after ``instant``, or unreadable."""
    try:
        return datetime.fromisoformat(str(issued_at).replace("Z", "+00:00")) > instant
    except ValueError:
        return True


_APPROVING = frozenset({Action.APPROVE.value, Action.MODIFY.value})


def _recorded_otherwise(raw: Mapping[str, Any], run: tuple[Any, Any] | None) -> str | None:
    """What the event records differently from the decision its signature covers (None when
    it records that decision); ``raw`` has a ``signed`` dict (``_decision_problem`` held)."""
    signed: Mapping[str, Any] = raw["signed"]
    kind, said = raw.get("type"), signed.get("decision")
    allowed = {
        "GateDecided": {Action.REJECT.value}
        if raw.get("decision") == Action.REJECT.value
        else _APPROVING,
        "GateApproved": _APPROVING,
        "GateReassigned": {Action.REASSIGN.value},
        "GateDeferred": {Action.DEFER.value},
    }[str(kind)]
    if said not in allowed:
        return f"records {raw.get('decision', kind)!r}, but the reviewer signed {said!r}"
    if signed.get("gate") != raw.get("gate"):
        return (
            f"records gate {raw.get('gate')!r}, but the reviewer signed for {signed.get('gate')!r}"
        )
    if run is not None and (signed.get("workflow_id"), signed.get("run_id")) != run:
        return "the reviewer signed for another execution or run"
    if signed.get("on_behalf_of") != raw.get("on_behalf_of"):
        return "records another delegation than the reviewer signed"
    if (signed.get("comment") or None) != (raw.get("comment") or None):
        return "records another comment than the reviewer signed"
    # A decision's modifications are the signer's; a final approval of a version someone
    # else modified records that version (its own signature covers no modifications).
    if (kind == "GateApproved" or said == Action.MODIFY.value) and signed.get(
        "modifications"
    ) != raw.get("modifications"):
        return "records other modifications than the reviewer signed"
    if kind == "GateReassigned":
        target = signed.get("reassign_to")
        target = target if isinstance(target, dict) else {}
        if (target.get("reviewers", []), target.get("roles", [])) != (
            raw.get("to_reviewers"),
            raw.get("to_roles"),
        ):
            return "records another reassignment than the reviewer signed"
    return None
