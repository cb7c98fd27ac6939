"""A ledger verified as stored: RFC 8785 hashes over the stored JSON, unknown fields refused,
signed heads checked against trusted keys, continue-as-new links, every forgery caught."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.contrib.pydantic import pydantic_data_converter

from keel.contracts.integrity import LedgerReport, verify_ledger
from keel.contracts.ledger import (
    GENESIS_HASH,
    HEAD_PURPOSE,
    LEDGER_SCHEME,
    LEGACY_SCHEME,
    AgentDecided,
    ChainHeadSigned,
    ContinuedAsNew,
    EventBase,
    ForeignEvent,
    GateDecided,
    GateOpened,
    LedgerContinued,
    Routed,
    WorkflowCompleted,
    WorkflowStarted,
    event_hash,
    head_message,
    json_safe,
    seal_event,
)
from keel.contracts.signing import Keyring, SigningKey
from tests.ledger_forgeries import FORGERIES, Raw, changed, index_of, rehash, reseal

KEY = SigningKey.generate()
TRUSTED = Keyring([KEY.public_key])
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class Chain:
    """Builds a ledger as a worker records it: sealed events, heads signed by ``signer``."""

    def __init__(self, workflow_id: str = "review-1", signer: SigningKey = KEY) -> None:
        self.workflow_id, self.signer = workflow_id, signer
        self.events: list[EventBase] = []
        self.run_id = ""
        self.run_start = 0

    @property
    def head(self) -> tuple[int, str]:
        last = self.events[-1] if self.events else None
        return (last.seq, last.hash) if last else (0, GENESIS_HASH)

    def add(self, event: EventBase) -> EventBase:
        seq, head = self.head
        first = len(self.events) == self.run_start
        sealed = seal_event(
            event,
            seq=seq + 1,
            at=START + timedelta(minutes=seq),
            prev_hash=head,
            scheme=LEDGER_SCHEME if first else None,
        )
        self.events.append(sealed)
        return sealed

    def start(self, run_id: str) -> None:
        self.run_id = run_id
        self.add(
            WorkflowStarted(
                workflow="ContractReview",
                workflow_id=self.workflow_id,
                run_id=run_id,
                input_sha256="1" * 64,
            )
        )

    def sign(self, reason: str) -> None:
        seq, head = self.head
        message = head_message(LEDGER_SCHEME, self.workflow_id, self.run_id, seq, head, reason)
        signature = self.signer.sign(HEAD_PURPOSE, message)
        self.add(
            ChainHeadSigned(
                reason=reason,
                covers_seq=seq,
                covers_hash=head,
                workflow_id=self.workflow_id,
                run_id=self.run_id,
                key_id=signature.key_id,
                signature=signature.signature,
            )
        )

    def continue_as_new(self, next_run_id: str) -> None:
        self.add(ContinuedAsNew(reason="1 rounds per run", rounds_done=1))
        self.sign("continue-as-new")
        previous, (_, head) = self.run_id, self.head
        self.run_start = len(self.events)
        self.add(
            LedgerContinued(previous_run_id=previous, previous_head=head, run=2, rounds_done=1)
        )
        self.start(next_run_id)

    def stored(self) -> Raw:
        """The events as Temporal stores them: through Keel's data converter, as JSON."""
        payloads = pydantic_data_converter.payload_converter.to_payloads([self.events])
        loaded: Raw = json.loads(payloads[0].data)
        return loaded


def reviewed(chain: Chain | None = None) -> Chain:
    """A medium review: routed to a gate, decided by legal.sam, completed; signed heads at
    the gate (opened and decided) and at completion."""
    chain = chain or Chain()
    if not chain.events:
        chain.start("run-1")
    chain.add(
        Routed(
            rule="routing@1",
            inputs={"risk_level": "medium", "confidence": 0.74},
            route="standard-review",
        )
    )
    chain.add(
        GateOpened(
            gate="standard-review",
            title="Standard review",
            reviewers=["legal.sam"],
            sla_seconds=14400.0,
            deadline=START + timedelta(hours=4),
            context={"risk_level": "medium"},
        )
    )
    chain.sign("gate-opened:standard-review")
    chain.add(
        GateDecided(
            gate="standard-review",
            decision="approve",
            state="approved",
            reviewer="legal.sam",
            via="update",
        )
    )
    chain.sign("gate-approved:standard-review")
    chain.add(WorkflowCompleted(outcome="approved", summary={"decided_by": "legal.sam"}))
    chain.sign("completion")
    return chain


def check(events: Raw, *, closed: bool = True, keyring: Keyring = TRUSTED) -> LedgerReport:
    return verify_ledger(events, keyring=keyring, closed=closed)


# --- the scheme -----------------------------------------------------------------------------


def test_a_signed_ledger_verifies_as_stored_with_every_head_signed() -> None:
    report = check(reviewed().stored())
    assert report.ok, report
    assert (report.scheme, report.unsigned, report.completed) == (LEDGER_SCHEME, 0, True)
    assert [(s.covers_seq, s.reason) for s in report.signed] == [
        (3, "gate-opened:standard-review"),
        (5, "gate-approved:standard-review"),
        (7, "completion"),
    ]
    assert {s.key_id for s in report.signed} == {KEY.key_id}


def test_the_hash_is_sha256_of_the_rfc8785_form_of_the_stored_object_without_hash() -> None:
    stored = reviewed().stored()
    for event in stored:
        body = {k: v for k, v in event.items() if k != "hash"}
        assert event["hash"] == hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    # Only each run's first event names the scheme; the others carry no such key.
    assert stored[0]["scheme"] == LEDGER_SCHEME
    assert all("scheme" not in e for e in stored[1:])


def test_the_signature_is_over_the_documented_bytes() -> None:
    stored = reviewed().stored()
    signed = stored[-1]
    message: dict[str, Any] = {
        "purpose": "keel/ledger-head/1",
        "message": {
            "scheme": "keel-ledger/2",
            "workflow_id": signed["workflow_id"],
            "run_id": signed["run_id"],
            "seq": signed["covers_seq"],
            "head": signed["covers_hash"],
            "reason": signed["reason"],
        },
    }
    padded = signed["signature"] + "=" * (-len(signed["signature"]) % 4)
    KEY.public_key.verify(base64.urlsafe_b64decode(padded), rfc8785.dumps(message))


def test_an_open_run_reports_its_unsigned_tail_and_a_closed_one_fails_on_it() -> None:
    chain = Chain()
    chain.start("run-1")
    chain.add(
        GateOpened(gate="g", title="t", reviewers=[], sla_seconds=1.0, deadline=START, context={})
    )
    chain.sign("gate-opened:g")
    chain.add(Routed(rule="r@1", inputs={}, route="x"))
    report = check(chain.stored(), closed=False)
    assert report.ok and report.unsigned == 1 and report.last_signed is not None
    assert report.last_signed.covers_seq == 2
    closed = check(chain.stored(), closed=True)
    assert (closed.ok, closed.broken_at) == (False, 4)
    assert closed.reason is not None and "1 events after the last signed head (#2)" in closed.reason


def test_a_legacy_ledger_verifies_as_unsigned_legacy() -> None:
    """keel-ledger/1: sha256 over prev_hash + sorted-key JSON; its first event names no scheme."""
    started = {"type": "WorkflowStarted", "workflow": "W", "workflow_id": "w", "run_id": "r"}
    bodies: list[dict[str, Any]] = [
        {**started, "input_sha256": "1" * 64},
        {"type": "WorkflowCompleted", "outcome": "approved", "summary": {}},
    ]
    events: Raw = []
    prev = GENESIS_HASH
    for n, body in enumerate(bodies, start=1):
        event = {**body, "seq": n, "at": "2025-01-01T00:00:00Z", "prev_hash": prev}
        text = prev + json.dumps(event, sort_keys=True, separators=(",", ":"))
        event["hash"] = prev = hashlib.sha256(text.encode()).hexdigest()
        events.append(event)
    report = check(events)
    assert report.ok and report.legacy and report.scheme == LEGACY_SCHEME
    assert report.signed == [] and report.unsigned == 2
    assert not check(changed(events, 1, outcome="rejected")).ok


def test_an_unknown_scheme_fails() -> None:
    stored = reviewed().stored()
    stored[0]["scheme"] = "keel-ledger/9"
    report = check(stored)
    assert (report.ok, report.broken_at) == (False, 1)
    assert report.reason is not None and "unknown hash scheme" in report.reason


# --- unknown fields and foreign types ---------------------------------------------------------


def test_an_injected_field_breaks_the_hash_and_resealed_fails_as_unknown() -> None:
    stored = reviewed().stored()
    i = index_of(stored, "GateDecided")
    plain = check(changed(stored, i, approved_by_board=True))
    assert (plain.ok, plain.broken_at) == (False, 5)
    assert plain.reason == "hash does not match the event's content as stored"
    resealed = check(reseal(changed(stored, i, approved_by_board=True), i))
    assert (resealed.ok, resealed.broken_at) == (False, 5)
    assert resealed.reason == "unknown field(s) 'approved_by_board' in a GateDecided event"


def test_a_known_event_that_does_not_fit_its_type_fails() -> None:
    stored = reviewed().stored()
    i = index_of(stored, "GateDecided")
    report = check(reseal(changed(stored, i, via="carrier-pigeon"), i))
    assert (report.ok, report.broken_at) == (False, 5)
    assert report.reason is not None and "does not fit its type (via:" in report.reason


def test_an_event_of_a_type_this_process_does_not_know_verifies_over_its_raw_object() -> None:
    chain = Chain()
    chain.start("run-1")
    chain.add(ForeignEvent(type="ThirdPartyThingHappened", amount_usd=120.5, ref="p-1"))
    chain.add(WorkflowCompleted(outcome="done"))
    chain.sign("completion")
    stored = chain.stored()
    assert check(stored).ok
    tampered = check(changed(stored, 1, amount_usd=1200.5))
    assert (tampered.ok, tampered.broken_at) == (False, 2)


def test_a_repeated_key_cannot_hide_in_a_parsed_object() -> None:
    # JSON parsers keep the last of two equal keys; the export reader refuses them instead
    # (tests/test_verify_cli.py); here: whatever a parser kept is what is hashed.
    stored = reviewed().stored()
    assert check(json.loads(json.dumps(stored))).ok


# --- what the workflow hashes is what is stored ------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    inputs=st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5),
    latency=st.floats(allow_nan=False, allow_infinity=False),
    confidence=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    extra=JSON_VALUES,
    seconds=st.integers(min_value=0, max_value=10**9),
    micros=st.integers(min_value=0, max_value=999_999),
)
def test_the_hash_the_workflow_computes_is_the_hash_of_the_json_stored(
    inputs: dict[str, Any],
    latency: float,
    confidence: float | None,
    extra: Any,
    seconds: int,
    micros: int,
) -> None:
    """Floats (RFC 8785 number form vs pydantic's JSON), NaN and infinities, integers past
    2**53, any Unicode (lone surrogates too), datetimes as stored strings."""
    chain = Chain()
    chain.start("run-1")
    chain.add(Routed(rule="r@1", inputs=inputs, route="x"))
    chain.add(
        AgentDecided(
            node="n",
            contract="c@1",
            contract_fingerprint="f",
            provider="p",
            model="m",
            prompt_sha256="0" * 64,
            raw_response=str(extra)[:50],
            output={"value": extra},
            confidence=confidence,
            latency_ms=latency,
            attempt=1,
            activity_attempt=1,
        )
    )
    chain.add(ForeignEvent(type="AppThing", value=extra, inputs=inputs))
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=micros)
    chain.events[-1] = seal_event(
        chain.events[-1], seq=4, at=at, prev_hash=chain.events[-2].hash, scheme=None
    )
    chain.add(WorkflowCompleted(outcome="done"))
    chain.sign("completion")
    stored = chain.stored()
    assert [e["hash"] for e in stored] == [e.hash for e in chain.events]
    assert [event_hash(e) for e in stored] == [e.hash for e in chain.events]
    report = check(stored)
    assert report.ok, report
    # The events as held in workflow memory hash the same way (the ledger query, the result).
    assert [e.compute_hash() for e in chain.events] == [e.hash for e in chain.events]


@given(value=JSON_VALUES)
@settings(max_examples=200, deadline=None)
def test_json_safe_values_have_an_rfc8785_form_and_keep_what_json_can_hold(value: Any) -> None:
    safe = json_safe(value)
    rfc8785.dumps(safe)  # never raises
    if _exact(value):
        assert safe == value


def _exact(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return abs(value) < 2**53
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(_exact(v) for v in value)
    return all(_exact(k) and _exact(v) for k, v in value.items())


# --- signatures and keys --------------------------------------------------------------------


def test_a_rotated_key_still_verifies_while_it_is_trusted() -> None:
    new_key = SigningKey.generate()
    chain = Chain()
    chain.start("run-1")
    chain.add(Routed(rule="r@1", inputs={}, route="x"))
    chain.sign("gate-opened:g")  # the old key
    chain.signer = new_key  # the worker was given a new key; the old one stays trusted
    chain.add(WorkflowCompleted(outcome="done"))
    chain.sign("completion")
    both = Keyring([KEY.public_key, new_key.public_key])
    report = check(chain.stored(), keyring=both)
    assert report.ok and [s.key_id for s in report.signed] == [KEY.key_id, new_key.key_id]
    retired = check(chain.stored(), keyring=Keyring([new_key.public_key]))
    assert (retired.ok, retired.broken_at) == (False, 3)
    assert retired.reason == f"signed by {KEY.key_id}, which is not a trusted key"


def test_without_a_keyring_signatures_are_checked_against_the_chain_only() -> None:
    stored = reviewed().stored()
    report = verify_ledger(stored, keyring=None, closed=True)
    assert report.ok and not report.signatures_checked
    assert not verify_ledger(FORGERIES["truncated"](stored), keyring=None, closed=True).ok


def test_a_signature_moved_to_another_head_fails() -> None:
    stored = reviewed().stored()
    i = index_of(stored, "ChainHeadSigned", reason="completion")
    moved = changed(stored, i, covers_seq=5, covers_hash=stored[4]["hash"])
    report = check(reseal(moved, i))
    assert (report.ok, report.broken_at) == (False, 8)
    assert report.reason is not None and "does not match the signed content" in report.reason


def test_a_signature_from_another_workflow_fails() -> None:
    other = reviewed(Chain(workflow_id="review-2")).stored()
    stored = reviewed().stored()
    i = index_of(stored, "ChainHeadSigned", reason="completion")
    spliced = changed(stored, i, **{k: other[i][k] for k in ("key_id", "signature")})
    report = check(reseal(spliced, i))
    assert (report.ok, report.broken_at) == (False, 8)


# --- each forgery of the issue ----------------------------------------------------------------

EXPECTED = {
    "changed-field": (5, "hash does not match the event's content as stored"),
    "dropped-event": (2, "sequence number 3 where 2 was expected"),
    "reordered-pair": (4, "sequence number 5 where 4 was expected"),
    "resealed-chain": (6, f"the signature by {KEY.key_id} does not match the signed content"),
    "injected-field": (5, "unknown field(s) 'approved_by_board' in a GateDecided event"),
    "untrusted-key": (6, "which is not a trusted key"),
    "truncated": (7, "1 events after the last signed head (#5) are unsigned"),
    "truncated-to-an-earlier-head": (4, "does not end with its completion signature"),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_each_forgery_is_caught_at_its_event(name: str) -> None:
    stored = reviewed().stored()
    assert check(stored).ok
    report = check(FORGERIES[name](stored))
    seq, reason = EXPECTED[name]
    assert not report.ok
    assert report.broken_at == seq, report
    assert report.reason is not None and reason in report.reason, report.reason


def test_the_expected_failures_cover_every_forgery() -> None:
    assert set(EXPECTED) == set(FORGERIES)


# --- continue-as-new ------------------------------------------------------------------------


def continued() -> Chain:
    chain = Chain()
    chain.start("run-1")
    chain.add(Routed(rule="r@1", inputs={}, route="x"))
    chain.continue_as_new("run-2")
    return reviewed(chain)


def test_a_continued_ledger_verifies_across_runs_and_each_run_alone() -> None:
    stored = continued().stored()
    assert check(stored).ok
    i = index_of(stored, "LedgerContinued")
    assert stored[i]["scheme"] == LEDGER_SCHEME
    first = check(stored[:i])
    assert not first.ok  # run 1 alone ends with continue-as-new, not completion
    alone = verify_ledger(
        stored[i:], keyring=TRUSTED, closed=True, genesis=stored[i - 1]["hash"], first_seq=i + 1
    )
    assert alone.ok, alone


def test_a_forged_continue_as_new_link_is_caught() -> None:
    stored = continued().stored()
    i = index_of(stored, "LedgerContinued")
    other_run = reseal(changed(stored, i, previous_run_id="run-0"), i)
    report = check(other_run)
    assert (report.ok, report.broken_at) == (False, i + 1)
    assert report.reason == "the continue-as-new link names another previous run"

    other_head = changed(stored, i, previous_head="e" * 64)
    other_head[i]["hash"] = rehash(other_head[i])
    report = check(reseal(other_head, i + 1))
    assert (report.ok, report.broken_at) == (False, i + 1)
    assert report.reason == "the continue-as-new link names another previous head"

    # A run spliced in after a run that was never signed off.
    unsigned_end = reseal([e for n, e in enumerate(stored) if n != i - 1], i - 1)
    report = check(unsigned_end)
    assert (report.ok, report.broken_at) == (False, i)
    assert report.reason == "the previous run ended without a signed head"
