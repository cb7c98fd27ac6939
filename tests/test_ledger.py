"""The hash-chained ledger: a real run verifies, and any edit, drop or reorder is caught."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
import rfc8785
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from keel.activities.providers.base import ModelReply, ModelRequest
from keel.contracts.ledger import (
    GENESIS_HASH,
    AgentDecided,
    BuiltinEvent,
    ForeignEvent,
    GateDecided,
    LedgerEvent,
    Routed,
    WorkflowCompleted,
    WorkflowStarted,
    parse_ledger,
    verify_chain,
)
from keel.errors import ProviderPermanentError
from keel.offline import OfflineFault
from keel.scenarios.contract_review.contracts import ContractReviewResult
from tests.conftest import keel_worker
from tests.helpers import (
    decide,
    ledger_of,
    review,
    signal_review,
    start_review,
    types_of,
    wait_for_gate,
)
from tests.samples import load_sample

ALL_TYPES = {member.model_fields["type"].default for member in get_args(get_args(BuiltinEvent)[0])}


@dataclass
class Run:
    result: ContractReviewResult
    queried: list[LedgerEvent]

    @property
    def ledger(self) -> list[LedgerEvent]:
        return self.result.ledger


class RefusingProvider:
    name = "stand-in"
    model = "stand-in-1"

    async def complete(self, request: ModelRequest) -> ModelReply:
        raise ProviderPermanentError("invalid api key", provider=self.name, status=401)


@pytest.fixture(scope="module")
async def eventful(ts_env: WorkflowEnvironment) -> Run:
    """A medium review that goes through most of what a review can go through."""
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1])]
    async with keel_worker(ts_env.client, faults=faults) as tq:
        handle = await start_review(ts_env.client, tq, "medium", prefix="ledger")
        await wait_for_gate(handle, "standard-review")
        await signal_review(handle, review("standard-review", "approve", "legal.lead.jordan"))
        await ts_env.sleep(timedelta(hours=4, minutes=1))  # SLA passes: escalation
        await decide(
            handle,
            review("standard-review", "reject", "legal.lead.jordan", comment="not acceptable"),
        )
        await wait_for_gate(handle, "standard-review-2")
        result = await handle.result()  # time skips until standard-review-2 expires
        queried = await ledger_of(handle)
    return Run(result, queried)


@pytest.fixture(scope="module")
async def other_ledgers(ts_env: WorkflowEnvironment) -> list[list[LedgerEvent]]:
    """Ledgers of a refused input and of a provider that fails for good."""
    ledgers = []
    bad = load_sample("contract-low-risk")
    bad["term_months"] = 0
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, bad, prefix="ledger-bad-input")
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        ledgers.append(await ledger_of(handle))
    async with keel_worker(ts_env.client, provider=RefusingProvider()) as tq:
        handle = await start_review(ts_env.client, tq, "low", prefix="ledger-outage")
        await wait_for_gate(handle, "risk-classification")
        await decide(
            handle,
            review("risk-classification", "reject", "legal.sam", comment="no model, no deal"),
        )
        ledgers.append((await handle.result()).ledger)
    return ledgers


# --- a real ledger --------------------------------------------------------------------------


def test_the_run_went_where_it_should(eventful: Run) -> None:
    types = types_of(eventful.ledger)
    for expected in ("ValidationFailed", "ReviewRefused", "Escalated", "RolledBack", "GateExpired"):
        assert expected in types
    assert (eventful.result.outcome, eventful.result.decided_by) == (
        "rejected",
        "default:standard-review-2",
    )


def test_a_real_ledger_verifies(eventful: Run) -> None:
    report = verify_chain(eventful.ledger)
    assert report.ok, report
    assert (report.broken_at, report.reason) == (None, None)
    assert report.events == len(eventful.ledger)
    assert report.head_hash == eventful.ledger[-1].hash == eventful.result.ledger_head
    assert [e.seq for e in eventful.ledger] == list(range(1, len(eventful.ledger) + 1))
    assert eventful.ledger[0].prev_hash == GENESIS_HASH
    times = [e.at for e in eventful.ledger]
    assert times == sorted(times)
    assert times[-1] - times[0] >= timedelta(hours=28)  # stamped with workflow time


def test_the_ledger_query_answers_the_same_ledger_as_the_result(eventful: Run) -> None:
    assert eventful.queried == eventful.ledger
    assert [e.hash for e in eventful.queried] == [e.hash for e in eventful.ledger]


def test_every_event_round_trips_through_its_json_form(
    eventful: Run, other_ledgers: list[list[LedgerEvent]]
) -> None:
    ledgers = [eventful.ledger, *other_ledgers]
    seen: set[str] = set()
    for ledger in ledgers:
        text = json.dumps([e.model_dump(mode="json") for e in ledger])
        parsed = parse_ledger(json.loads(text))
        assert parsed == ledger
        assert [type(p) for p in parsed] == [type(e) for e in ledger]
        assert [p.compute_hash() for p in parsed] == [e.hash for e in ledger]
        assert verify_chain(parsed).ok
        seen |= set(types_of(ledger))
    # DefaultApplied needs a UseDefault contract: tests/test_agent_node_default.py has it.
    # DefaultApplied: tests/test_agent_node_default.py; plan events: the incident tests;
    # ProviderFallback: tests/test_fallback_and_guardrails.py; NodeFailed (a run an agent node
    # failed for a reason not the agent's): tests/test_not_the_agents_fault.py.
    plan_events = {
        "NodeFailed",
        "PlanProposed",
        "PlanRejected",
        "PlanMaterialized",
        "TaskCompleted",
        "TaskFailed",
        "TaskSkipped",
        "Compensated",
        "LedgerContinued",
        "ContinuedAsNew",
        "ProviderFallback",
    }
    # Effect outcomes: tests/test_effects.py; governance (n-of-m, reassign, "not now"):
    # tests/test_signed_reviews.py.
    plan_events |= {"EffectOutcomeUnknown", "EffectResolved"}
    plan_events |= {"GateApproved", "GateReassigned", "GateDeferred"}
    assert ALL_TYPES - seen == {"DefaultApplied"} | plan_events


def test_an_event_of_an_unknown_app_type_is_kept_whole_and_still_verifies() -> None:
    # An app's own event type, in a ledger read by a process that never imported the app.
    events = seal(
        [
            WorkflowCompleted(outcome="started"),
            ForeignEvent(type="ThirdPartyThingHappened", amount_usd=120.5, ref="p-1"),
        ]
    )
    sealed = events[1]
    raw = [e.model_dump(mode="json") for e in events]
    parsed = parse_ledger(raw)
    assert isinstance(parsed[1], ForeignEvent)
    assert parsed[1].model_dump(mode="json") == sealed.model_dump(mode="json")
    assert verify_chain(parsed).ok
    assert "amount_usd=120.5" in parsed[1].describe()
    raw[1]["amount_usd"] = 1200.5
    assert not verify_chain(parse_ledger(raw)).ok


def test_a_ledger_event_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        parse_ledger(["WorkflowStarted"])  # type: ignore[list-item]


# --- tampering ------------------------------------------------------------------------------


def replaced(events: list[LedgerEvent], index: int, **changes: Any) -> list[LedgerEvent]:
    copy = list(events)
    copy[index] = events[index].model_copy(update=changes)
    return copy


def index_of(events: list[LedgerEvent], kind: type[Any], **match: Any) -> int:
    return next(
        i
        for i, e in enumerate(events)
        if isinstance(e, kind) and all(getattr(e, k) == v for k, v in match.items())
    )


def test_a_changed_agent_output_is_caught_at_its_event(eventful: Run) -> None:
    events = eventful.ledger
    i = index_of(events, AgentDecided, attempt=2)
    decided = events[i]
    assert isinstance(decided, AgentDecided)
    output = decided.output
    assert output is not None and output["risk_level"] == "medium"
    tampered = replaced(events, i, output={**output, "risk_level": "low"})
    report = verify_chain(tampered)
    assert not report.ok
    assert report.broken_at == events[i].seq
    assert report.reason is not None and "hash" in report.reason
    assert report.head_hash == events[i - 1].hash  # the chain is good up to the event before


def test_a_changed_reviewer_is_caught_at_its_event(eventful: Run) -> None:
    events = eventful.ledger
    i = index_of(events, GateDecided)
    decided = events[i]
    assert isinstance(decided, GateDecided) and decided.reviewer == "legal.lead.jordan"
    report = verify_chain(replaced(events, i, reviewer="legal.priya"))
    assert (report.ok, report.broken_at) == (False, events[i].seq)
    assert report.reason == "hash does not match the event's content"


def test_a_changed_timestamp_is_caught(eventful: Run) -> None:
    events = eventful.ledger
    i = index_of(events, Routed)
    report = verify_chain(replaced(events, i, at=events[i].at - timedelta(hours=1)))
    assert (report.ok, report.broken_at) == (False, events[i].seq)


@pytest.mark.parametrize("dropped", [0, 4, -2])
def test_a_dropped_event_is_caught(eventful: Run, dropped: int) -> None:
    events = list(eventful.ledger)
    gone = events.pop(dropped)
    report = verify_chain(events)
    assert not report.ok
    assert report.broken_at == gone.seq + 1  # the event that now sits in its place
    assert report.reason is not None and "sequence number" in report.reason


def test_a_dropped_event_is_caught_even_when_the_rest_is_renumbered(eventful: Run) -> None:
    events = list(eventful.ledger)
    gone = events.pop(4)
    renumbered = [e.model_copy(update={"seq": n}) for n, e in enumerate(events, start=1)]
    report = verify_chain(renumbered)
    assert (report.ok, report.broken_at) == (False, gone.seq)
    assert report.reason == "prev_hash does not match the previous event's hash"


def test_reordered_events_are_caught(eventful: Run) -> None:
    events = list(eventful.ledger)
    events[5], events[6] = events[6], events[5]
    report = verify_chain(events)
    assert (report.ok, report.broken_at) == (False, eventful.ledger[6].seq)

    # Renumbering after the swap does not help: the links point the old way.
    renumbered = [e.model_copy(update={"seq": n}) for n, e in enumerate(events, start=1)]
    report = verify_chain(renumbered)
    assert (report.ok, report.broken_at) == (False, 6)
    assert report.reason is not None and "prev_hash" in report.reason


def test_resealing_a_tampered_event_breaks_the_next_link(eventful: Run) -> None:
    events = eventful.ledger
    i = index_of(events, GateDecided)
    forged = events[i].model_copy(update={"reviewer": "legal.priya"})
    forged = forged.model_copy(update={"hash": forged.compute_hash()})
    tampered = [*events[:i], forged, *events[i + 1 :]]
    report = verify_chain(tampered)
    assert not report.ok
    assert report.broken_at == events[i + 1].seq
    assert report.reason == "prev_hash does not match the previous event's hash"
    assert report.head_hash == forged.hash


def test_resealing_the_whole_tail_only_shows_against_the_recorded_head(eventful: Run) -> None:
    """An edit with every later hash recomputed is internally consistent: what catches it is
    the head hash recorded elsewhere (the result's ``ledger_head``)."""
    events = eventful.ledger
    i = index_of(events, GateDecided)
    forged = list(events[:i])
    prev = events[i - 1].hash
    for n, event in enumerate(events[i:]):
        changes: dict[str, Any] = {"prev_hash": prev}
        if n == 0:
            changes["reviewer"] = "legal.priya"
        copy = event.model_copy(update=changes)
        copy = copy.model_copy(update={"hash": copy.compute_hash()})
        forged.append(copy)
        prev = copy.hash
    report = verify_chain(forged)
    assert report.ok
    assert report.head_hash != eventful.result.ledger_head


def test_a_truncated_ledger_only_shows_against_the_recorded_head(eventful: Run) -> None:
    truncated = eventful.ledger[:-3]
    report = verify_chain(truncated)
    assert report.ok and report.events == len(eventful.ledger) - 3
    assert report.head_hash != eventful.result.ledger_head


# --- hand-built ledgers ---------------------------------------------------------------------


def seal(events: list[Any], *, genesis: str = GENESIS_HASH) -> list[Any]:
    sealed, prev = [], genesis
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    for n, event in enumerate(events, start=1):
        stamped = event.model_copy(
            update={"seq": n, "at": start + timedelta(minutes=n), "prev_hash": prev}
        )
        stamped = stamped.model_copy(update={"hash": stamped.compute_hash()})
        sealed.append(stamped)
        prev = stamped.hash
    return sealed


def hand_built(**kwargs: Any) -> list[Any]:
    return seal(
        [
            WorkflowStarted(
                workflow="ContractReview",
                workflow_id=f"review-{uuid.uuid4()}",
                run_id="run-1",
                input_sha256="1" * 64,
            ),
            Routed(rule="r@1", inputs={"risk_level": "low"}, route="auto-approve"),
            WorkflowCompleted(outcome="approved", summary={"decided_by": "rule:r@1"}),
        ],
        **kwargs,
    )


def test_compute_hash_is_sha256_of_the_rfc8785_form_of_the_event_without_its_hash() -> None:
    event = hand_built()[1]
    body = rfc8785.dumps(event.model_dump(mode="json", exclude={"hash"}))
    assert event.hash == hashlib.sha256(body).hexdigest()
    assert b'"hash"' not in body and event.prev_hash.encode() in body


def test_a_hand_built_ledger_verifies_and_checks_its_genesis() -> None:
    events = hand_built()
    assert verify_chain(events).ok
    other = "f" * 64
    report = verify_chain(events, genesis=other)
    assert (report.ok, report.broken_at, report.head_hash) == (False, 1, other)
    assert verify_chain(hand_built(genesis=other), genesis=other).ok


def test_an_empty_ledger_is_a_valid_chain_at_genesis() -> None:
    report = verify_chain([])
    assert (report.ok, report.events, report.head_hash) == (True, 0, GENESIS_HASH)


def test_a_forged_hash_field_is_caught() -> None:
    events = hand_built()
    events[2] = events[2].model_copy(update={"hash": "0" * 64})
    report = verify_chain(events)
    assert (report.ok, report.broken_at) == (False, 3)
