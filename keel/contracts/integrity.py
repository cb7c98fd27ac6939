"""Verifying a ledger as stored: its raw JSON objects, not a re-serialisation of parsed models.

``verify_ledger`` checks, event by event: the sequence numbers, each ``prev_hash`` link, each
``hash`` under the scheme the chain's first event names (over the object exactly as stored,
so an injected key breaks it), that an event of a type this process knows has no field its
type does not declare and fits its type, the continue-as-new links (a run ends with a signed
head; the next run's ``LedgerContinued`` names that head and run), and every
``ChainHeadSigned`` against the trusted keyring. A closed run, and any ledger holding
``WorkflowCompleted``, must end with a signed head covering its last event; an open run's
events after its last signed head are reported as unsigned.

Pure: no I/O. ``verifier/keel_verify.py`` is the same check for auditors, without Keel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from keel.contracts.ledger import (
    COMPLETION,
    GENESIS_HASH,
    HEAD_PURPOSE,
    LEDGER_SCHEME,
    LEGACY_SCHEME,
    SCHEMES,
    event_hash,
    event_types,
    head_message,
)
from keel.contracts.signing import Keyring, Signature

_SIGNED = "ChainHeadSigned"
_CONTINUED = "LedgerContinued"


class SignedHead(BaseModel):
    """One verified chain-head signature."""

    seq: int
    """The ``ChainHeadSigned`` event's own number."""
    covers_seq: int
    key_id: str
    reason: str


class LedgerReport(BaseModel):
    """What ``verify_ledger`` found."""

    ok: bool
    scheme: str
    events: int
    head_hash: str
    broken_at: int | None = None
    """The number of the first event that failed (its position when it has no number)."""
    reason: str | None = None
    signed: list[SignedHead] = []
    unsigned: int = 0
    """Events after the last signed head (signature events not counted)."""
    completed: bool = False
    signatures_checked: bool = True
    """False when no keyring was given: signed heads were checked against the chain only."""
    decisions_checked: int | None = None
    """Reviewer actions whose signatures held against a reviewer trust file (None: no trust
    file was given, so decisions were checked by the chain only)."""

    @property
    def legacy(self) -> bool:
        """A ``keel-ledger/1`` ledger: hash-chained, never signed."""
        return self.scheme == LEGACY_SCHEME

    @property
    def last_signed(self) -> SignedHead | None:
        """The signature covering the latest head, if any."""
        return max(self.signed, key=lambda s: s.covers_seq, default=None)


class LedgerBroken(Exception):
    """An event failed verification."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


@dataclass
class _Walk:
    keyring: Keyring | None
    prev: str
    first_seq: int
    scheme: str = LEDGER_SCHEME
    hashes: dict[int, str] = field(default_factory=dict)
    types: dict[int, str] = field(default_factory=dict)
    workflow_id: str | None = None
    run_id: str | None = None
    last_run_id: str | None = None
    covered: int = 0
    signed: list[SignedHead] = field(default_factory=list)
    completed: bool = False


def verify_ledger(
    raw_events: Sequence[Any],
    *,
    keyring: Keyring | None,
    closed: bool = False,
    genesis: str = GENESIS_HASH,
    first_seq: int = 1,
) -> LedgerReport:
    """Verify ``raw_events`` (the JSON objects as stored, oldest first) from ``genesis``.

    ``closed``: the run is known to have ended (completed, failed, continued as new), so
    every event must be covered by a signed head. ``keyring`` None: no key is trusted, so
    signatures are checked against the chain but not cryptographically (``keel ledger`` on a
    machine without keys says so; ``keel verify`` refuses). A run after continue-as-new can
    be checked alone with the previous run's head and next sequence number as ``genesis`` and
    ``first_seq``.
    """
    walk = _Walk(keyring=keyring, prev=genesis, first_seq=first_seq, covered=first_seq - 1)
    try:
        for index, raw in enumerate(raw_events):
            _check_event(walk, index, raw)
        if walk.scheme != LEGACY_SCHEME and (closed or walk.completed):
            _check_end(walk, raw_events)
    except LedgerBroken as broken:
        return _report(walk, raw_events, ok=False, broken_at=broken.seq, reason=broken.reason)
    return _report(walk, raw_events, ok=True)


def _report(walk: _Walk, raw_events: Sequence[Any], **fields: Any) -> LedgerReport:
    return LedgerReport(
        scheme=walk.scheme,
        events=len(raw_events),
        head_hash=walk.prev,
        signed=walk.signed,
        unsigned=_unsigned(walk),
        completed=walk.completed,
        signatures_checked=walk.keyring is not None,
        **fields,
    )


def _check_end(walk: _Walk, raw_events: Sequence[Any]) -> None:
    """A closed or completed run ends with a completion signature over its last event."""
    why = "the ledger holds WorkflowCompleted" if walk.completed else "the run is closed"
    unsigned = _unsigned(walk)
    if unsigned:
        first = min(s for s, t in walk.types.items() if s > walk.covered and t != _SIGNED)
        last = f"#{walk.covered}" if walk.signed else "none"
        raise LedgerBroken(
            first,
            f"{unsigned} events after the last signed head ({last}) are unsigned, and {why}: "
            "events were added after the last signature, or it was removed",
        )
    end = walk.signed[-1] if walk.signed else None
    if end is None or end.seq != walk.first_seq + len(raw_events) - 1 or end.reason != COMPLETION:
        raise LedgerBroken(
            walk.first_seq + len(raw_events) - 1,
            f"{why}, but the ledger does not end with its completion signature: "
            "events after a signed head were removed",
        )


def _unsigned(walk: _Walk) -> int:
    return sum(1 for s, t in walk.types.items() if s > walk.covered and t != _SIGNED)


def _check_event(walk: _Walk, index: int, raw: Any) -> None:
    expected = walk.first_seq + index
    if not isinstance(raw, Mapping):
        raise LedgerBroken(expected, f"event {index + 1} is not a JSON object")
    kind = raw.get("type")
    if raw.get("seq") != expected:
        raise LedgerBroken(
            expected, f"sequence number {_quote(raw.get('seq'))} where {expected} was expected"
        )
    _check_scheme(walk, index, raw)
    if raw.get("prev_hash") != walk.prev:
        raise LedgerBroken(expected, "prev_hash does not match the previous event's hash")
    try:
        digest = event_hash(raw, walk.scheme)
    except ValueError as err:
        raise LedgerBroken(expected, str(err)) from None
    if raw.get("hash") != digest:
        raise LedgerBroken(expected, "hash does not match the event's content as stored")
    _check_type(expected, raw)
    if kind == "WorkflowStarted":
        _started(walk, expected, raw)
    elif kind == _CONTINUED:
        _continued(walk, expected, raw)
    elif kind == _SIGNED:
        _signed(walk, expected, raw)
    elif kind == "WorkflowCompleted":
        walk.completed = True
    walk.hashes[expected] = digest
    walk.types[expected] = str(kind)
    walk.prev = digest


def _check_scheme(walk: _Walk, index: int, raw: Mapping[str, Any]) -> None:
    seq = walk.first_seq + index
    if index == 0:
        named = raw.get("scheme", LEGACY_SCHEME)
        if named not in SCHEMES:
            raise LedgerBroken(seq, f"unknown hash scheme {_quote(named)}")
        walk.scheme = str(named)
    elif "scheme" in raw and (raw["scheme"] != walk.scheme or raw.get("type") != _CONTINUED):
        raise LedgerBroken(seq, f"the hash scheme changes to {_quote(raw['scheme'])} mid-chain")
    elif walk.scheme == LEDGER_SCHEME and raw.get("type") == _CONTINUED and "scheme" not in raw:
        raise LedgerBroken(seq, "a continued run names no hash scheme")


def _check_type(seq: int, raw: Mapping[str, Any]) -> None:
    """An event of a type this process knows holds only that type's fields, and fits it."""
    cls = event_types().get(str(raw.get("type")))
    if cls is None:
        return  # another app's type: its hash covers it as stored
    unknown = sorted(set(raw) - set(cls.model_fields))
    if unknown:
        names = ", ".join(_quote(name) for name in unknown[:5])
        raise LedgerBroken(seq, f"unknown field(s) {names} in a {cls.__name__} event")
    try:
        cls.model_validate(dict(raw))
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise LedgerBroken(
            seq, f"a {cls.__name__} event that does not fit its type ({where}: {problem['msg']})"
        ) from None


def _started(walk: _Walk, seq: int, raw: Mapping[str, Any]) -> None:
    if walk.workflow_id is not None and raw.get("workflow_id") != walk.workflow_id:
        raise LedgerBroken(seq, "a run of another workflow in this chain")
    walk.workflow_id = str(raw.get("workflow_id"))
    walk.run_id = str(raw.get("run_id"))


def _continued(walk: _Walk, seq: int, raw: Mapping[str, Any]) -> None:
    """A continued run links to the previous run's signed last head and to that run."""
    if raw.get("previous_head") != walk.prev:
        raise LedgerBroken(seq, "the continue-as-new link names another previous head")
    if seq > walk.first_seq:
        before = walk.types.get(seq - 1)
        if before != _SIGNED or walk.covered != seq - 2:
            raise LedgerBroken(seq, "the previous run ended without a signed head")
        if walk.run_id is not None and raw.get("previous_run_id") != walk.run_id:
            raise LedgerBroken(seq, "the continue-as-new link names another previous run")
    walk.last_run_id, walk.run_id = walk.run_id, None


def _signed(walk: _Walk, seq: int, raw: Mapping[str, Any]) -> None:
    if walk.scheme == LEGACY_SCHEME:
        raise LedgerBroken(seq, "a signed head in a keel-ledger/1 chain")
    covers = raw.get("covers_seq")
    if not isinstance(covers, int) or walk.hashes.get(covers) != raw.get("covers_hash"):
        raise LedgerBroken(seq, "the signature covers a head that is not in this chain")
    if (raw.get("workflow_id"), raw.get("run_id")) != (walk.workflow_id, walk.run_id):
        raise LedgerBroken(seq, "the signature names another workflow run")
    message = head_message(
        walk.scheme,
        str(raw["workflow_id"]),
        str(raw["run_id"]),
        covers,
        str(raw["covers_hash"]),
        str(raw.get("reason")),
    )
    signature = Signature(key_id=str(raw.get("key_id")), signature=str(raw.get("signature")))
    problem = walk.keyring and walk.keyring.problem(HEAD_PURPOSE, message, signature)
    if problem:
        raise LedgerBroken(seq, problem)
    walk.covered = max(walk.covered, covers)
    walk.signed.append(
        SignedHead(seq=seq, covers_seq=covers, key_id=signature.key_id, reason=message["reason"])
    )


def _quote(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
