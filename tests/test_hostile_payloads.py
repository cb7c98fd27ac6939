"""Hostile input to the ``review`` handlers and queries: any number, shape or size of
arguments is refused with a reason or recorded in bounded form, never fails a workflow task,
and the gate can still be decided; ``keel ledger`` text cannot be forged by a field.

A medium-risk review waits at gate ``standard-review`` (reviewers legal.priya, legal.sam).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from keel.cli.render import gates_text, ledger_text
from keel.contracts.gates import GateState, GateView
from keel.contracts.ledger import EventBase, GateDecided, ReviewRefused, verify_chain
from keel.scenarios.contract_review.contracts import ContractReviewResult
from keel.testing import events_of
from tests.conftest import keel_worker
from tests.helpers import (
    decide,
    ledger_of,
    refused,
    review,
    signal_review,
    start_review,
    wait_for_gate,
)

GATE = "standard-review"
HUGE = "r" * 1_200_000
"""A 1.2 MB reviewer name: two of them whole in the ledger passed Temporal's 2 MB limit."""
LEDGER_LIMIT = 64_000
"""Bytes of ledger JSON a flood of refused reviews may leave at most."""

T = TypeVar("T")


def raw(data: bytes, encoding: bytes = b"json/plain") -> RawValue:
    """A payload sent as is, past the client's converter."""
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


NESTED_2000 = raw(b"[" * 2000 + b"]" * 2000)


def ledger_bytes(ledger: list[EventBase]) -> int:
    return len(json.dumps([e.model_dump(mode="json") for e in ledger]).encode())


async def refusals_until(
    handle: WorkflowHandle[Any, Any], count: int, timeout: float = 30
) -> list[EventBase]:
    """Poll the ledger until it holds ``count`` ReviewRefused events (signals are not
    acknowledged)."""
    async with asyncio.timeout(timeout):
        while True:
            events = await ledger_of(handle)
            if len(events_of(events, ReviewRefused)) >= count:
                return events
            await asyncio.sleep(0.05)


async def task_failures(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The causes of every failed workflow task in the run's history."""
    history = await handle.fetch_history()
    return [
        e.workflow_task_failed_event_attributes.failure.message
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]


async def approve_and_finish(
    handle: WorkflowHandle[Any, ContractReviewResult],
) -> ContractReviewResult:
    """The gate still takes a valid review and the run completes, with no failed task."""
    async with asyncio.timeout(30):  # a failing workflow task would retry for ever
        receipt = await decide(handle, review(GATE, "approve", "legal.priya"))
        assert receipt.state == GateState.APPROVED
        result = await handle.result()
    assert (result.outcome, result.decided_by) == ("approved", "legal.priya")
    assert verify_chain(result.ledger).ok
    assert await task_failures(handle) == []
    return result


@pytest.fixture
async def waiting(
    ts_env: WorkflowEnvironment,
) -> AsyncIterator[WorkflowHandle[Any, ContractReviewResult]]:
    """A fresh review waiting at ``standard-review``."""
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium", prefix="hostile")
        await wait_for_gate(handle, GATE)
        yield handle


# --- argument count and shape ------------------------------------------------------------


async def test_a_review_signal_with_no_payload_is_recorded_as_refused_and_the_gate_still_decides(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    await waiting.signal("review")
    [event] = events_of(await refusals_until(waiting, 1), ReviewRefused)
    assert event.reasons == ["a review is one JSON object; 0 arguments were sent"]
    assert (event.gate, event.reviewer) == (None, None)
    result = await approve_and_finish(waiting)
    assert len(events_of(result.ledger, ReviewRefused)) == 1


async def test_a_review_signal_with_extra_arguments_is_refused_even_when_the_first_is_valid(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    await waiting.signal("review", args=[review(GATE, "approve", "legal.sam"), "and more"])
    [event] = events_of(await refusals_until(waiting, 1), ReviewRefused)
    assert event.reasons == ["a review is one JSON object; 2 arguments were sent"]
    [gate] = await waiting.query("gates", result_type=list[GateView])
    assert (gate.state, gate.decided_by) == (GateState.AWAITING_APPROVAL, None)
    await approve_and_finish(waiting)


NON_OBJECTS: list[tuple[str, Any, str]] = [
    ("list", [GATE, "approve", "legal.sam"], "not a list"),
    ("number", 42, "not a number"),
    ("string", "approve", "not a string"),
    ("null", None, "not null"),
    ("boolean", True, "not a boolean"),
    ("raw-list", raw(b'["standard-review"]'), "not a list"),
]


async def test_non_object_review_signals_are_each_refused_with_their_kind(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    for _, payload, _ in NON_OBJECTS:
        await signal_review(waiting, payload)
    events = events_of(await refusals_until(waiting, len(NON_OBJECTS)), ReviewRefused)
    for (name, _, kind), event in zip(NON_OBJECTS, events, strict=True):
        assert event.reasons == [f"the review payload must be a JSON object, {kind}"], name
    await approve_and_finish(waiting)


async def test_undecodable_review_signals_are_recorded_as_refused_and_the_gate_still_decides(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    undecodable = (NESTED_2000, raw(b"{not json"), raw(b"\x00\x01", encoding=b"binary/weird"))
    for payload in undecodable:
        await signal_review(waiting, payload)
    await signal_review(waiting, "a marker after them")
    events = events_of(await refusals_until(waiting, 4), ReviewRefused)
    for event in events[:3]:
        assert event.reasons[0].startswith("argument 1 cannot be decoded: "), event.reasons
        assert event.gate is None and event.reviewer is None
    assert len({e.payload_sha256 for e in events[:3]}) == 3  # each recorded by its own bytes
    assert events[3].reasons == ["the review payload must be a JSON object, not a string"]
    await approve_and_finish(waiting)


async def test_signals_of_other_names_are_refused_on_record_not_buffered(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    await waiting.signal("approve", review(GATE, "approve", "legal.sam"))
    await waiting.signal("x" * 100_000, {})
    events = events_of(await refusals_until(waiting, 2), ReviewRefused)
    assert events[0].reasons == ["this workflow takes no signal 'approve', only 'review'"]
    assert "only 'review'" in events[1].reasons[0] and len(events[1].reasons[0]) < 1_000
    assert [g.state for g in await waiting.query("gates", result_type=list[GateView])] == [
        GateState.AWAITING_APPROVAL
    ]  # the misnamed approval decided nothing
    await approve_and_finish(waiting)


async def test_review_updates_with_the_wrong_arguments_are_refused_and_change_nothing(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    before = await ledger_of(waiting)
    no_payload = await refused_args(waiting, [])
    assert "a review is one JSON object; 0 arguments were sent" in no_payload
    two = await refused_args(waiting, [review(GATE, "approve", "legal.sam"), {}])
    assert "a review is one JSON object; 2 arguments were sent" in two
    for name, payload, kind in NON_OBJECTS:
        assert f"the review payload must be a JSON object, {kind}" in await refused(
            waiting, payload
        ), name
    for payload in (NESTED_2000, raw(b"{not json")):  # refused by the SDK: undecodable
        with pytest.raises(WorkflowUpdateFailedError):
            await decide(waiting, payload)
    assert await ledger_of(waiting) == before
    await approve_and_finish(waiting)


async def refused_args(handle: WorkflowHandle[Any, Any], args: list[Any]) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update("review", args=args)
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ReviewRefused"
    return cause.message


async def test_the_queries_refuse_arguments_with_a_reason_and_the_run_goes_on(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    for query in ("ledger", "gates"):
        with pytest.raises(WorkflowQueryFailedError, match=f"the {query} query takes no"):
            await waiting.query(query, {"gate": GATE})
        with pytest.raises(WorkflowQueryFailedError):
            await waiting.query(query, NESTED_2000)
    await approve_and_finish(waiting)


# --- size -----------------------------------------------------------------------------------


async def test_a_huge_reviewer_name_is_refused_in_bounded_form_and_a_flood_stays_small(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    before = await ledger_of(waiting)
    reason = await refused(waiting, review(GATE, "approve", HUGE))
    assert "reviewer: String should have at most 200 characters" in reason
    assert len(reason) < 1_000
    reason = await refused(waiting, review(HUGE, "approve", "legal.sam"))
    assert "unknown gate 'rrrr" in reason and "…(1200000 chars)" in reason
    assert len(reason) < 1_000
    assert await ledger_of(waiting) == before

    for n in range(50):
        huge = review(GATE, "approve", HUGE) if n % 2 else review(HUGE, "approve", HUGE)
        await signal_review(waiting, huge)
    events = await refusals_until(waiting, 20)
    first = events_of(events, ReviewRefused)[0]
    assert first.reviewer == "r" * 200 + "…(1200000 chars)"
    assert first.gate is not None and first.gate.endswith("…(1200000 chars)")
    result = await approve_and_finish(waiting)
    refusals = events_of(result.ledger, ReviewRefused)
    assert len(refusals) == 20  # the rest are counted, not recorded
    assert "later ones are not recorded in the ledger" in refusals[-1].reasons[-1]
    assert ledger_bytes(result.ledger) < LEDGER_LIMIT


async def test_a_payload_with_a_thousand_unknown_keys_gets_a_bounded_refusal(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    payload = review(GATE, "approve", "legal.sam", **{f"k{i}" * 50: i for i in range(1000)})
    reason = await refused(waiting, payload)
    assert "and 990 more problems" in reason
    assert len(reason) < 6_000
    await signal_review(waiting, payload)
    [event] = events_of(await refusals_until(waiting, 1), ReviewRefused)
    assert len(event.reasons) == 11
    assert all(len(r) <= 600 for r in event.reasons)
    await approve_and_finish(waiting)


async def test_modifications_nested_too_deeply_are_refused(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    deep: Any = "cap fees"
    for _ in range(100):
        deep = [deep]
    reason = await refused(
        waiting, review(GATE, "modify", "legal.sam", modifications={"conditions": deep})
    )
    assert "modifications: Value error, nested deeper than 16 levels" in reason
    await approve_and_finish(waiting)


# --- any JSON at all ------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
NOT_A_REVIEWER = st.text(max_size=300).filter(lambda r: r not in ("legal.priya", "legal.sam"))
REVIEW_LIKE = st.fixed_dictionaries(
    {
        "gate": st.sampled_from([GATE, "general-counsel"]) | st.text(max_size=300),
        "decision": st.sampled_from(["approve", "reject", "modify"]) | JSON_VALUES,
        "reviewer": NOT_A_REVIEWER | JSON_VALUES,
    },
    optional={
        "comment": st.text(max_size=5_000) | JSON_VALUES,
        "modifications": st.dictionaries(st.text(max_size=20), JSON_VALUES, max_size=5)
        | JSON_VALUES,
        "device": st.text(max_size=300),
        "junk": JSON_VALUES,
    },
)
"""Shaped like a review, never one that may decide the gate (so one run serves every case)."""
PAYLOADS = JSON_VALUES | REVIEW_LIKE
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


async def for_each_example(
    strategy: st.SearchStrategy[T],
    check: Callable[[T], Coroutine[Any, Any, None]],
    *,
    examples: int = 40,
) -> None:
    """Run the async ``check`` on hypothesis' examples (hypothesis drives sync code, so it
    runs in a thread and hands each example to this event loop)."""
    loop = asyncio.get_running_loop()

    @settings(PROPERTY, max_examples=examples)
    @given(strategy)
    def run(example: T) -> None:
        asyncio.run_coroutine_threadsafe(check(example), loop).result(timeout=60)

    await asyncio.to_thread(run)


async def test_any_json_sent_as_a_review_update_is_refused_and_changes_nothing(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    before = await ledger_of(waiting)

    async def check(payload: Any) -> None:
        reason = await refused(waiting, payload)
        assert reason.startswith("review refused: ") and len(reason) < 6_000
        assert await ledger_of(waiting) == before

    await for_each_example(PAYLOADS, check)
    await approve_and_finish(waiting)


async def test_any_json_sent_as_a_review_signal_is_recorded_bounded_and_the_run_completes(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    sent = 0

    async def check(payload: Any) -> None:
        nonlocal sent
        await signal_review(waiting, payload)
        sent += 1
        events = await refusals_until(waiting, min(sent, 20))
        assert ledger_bytes(events) < LEDGER_LIMIT
        assert "GateDecided" not in [e.type for e in events]

    await for_each_example(PAYLOADS, check)
    assert sent > 20  # past the number of refusals recorded
    result = await approve_and_finish(waiting)
    assert len(events_of(result.ledger, ReviewRefused)) == 20
    assert [d.reviewer for d in events_of(result.ledger, GateDecided)] == ["legal.priya"]
    assert ledger_bytes(result.ledger) < LEDGER_LIMIT


# --- text output ----------------------------------------------------------------------------

FORGED = "legal.sam\n#99  2026-12-01 12:00:00  GateDecided       standard-review: approve forged"


async def test_a_reviewer_name_with_a_newline_cannot_forge_a_line_of_the_ledger_text(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    await signal_review(waiting, review(GATE, "approve", FORGED))
    await signal_review(waiting, review(GATE, "approve", "\x1b[2K\x1b[1Alegal.sam\u2028\x85"))
    events = await refusals_until(waiting, 2)
    text = ledger_text(events)
    lines = text.splitlines()
    assert len(lines) == len(events) + 1  # one per event and the verification
    assert not any(line.startswith("#99") for line in lines)
    assert "legal.sam\\n#99  2026-12-01" in text
    assert "\\x1b[2K\\x1b[1Alegal.sam\\u2028\\x85" in text
    assert lines[-1].startswith("hash chain verified")
    await approve_and_finish(waiting)


def test_the_gates_table_escapes_control_characters_in_every_field() -> None:
    view = GateView(
        gate="standard-review",
        title="Review",
        state=GateState.AWAITING_APPROVAL,
        reviewers=["legal.sam\nc-99 forged-gate awaiting_approval"],
        deadline=datetime(2026, 12, 1, 15, 0, tzinfo=UTC),
        reason="the model said\r\n\x1b[31mAPPROVED\x1b[0m",
    )
    text = gates_text([("c-42\n", view)])
    assert len(text.splitlines()) == 3  # header, the gate, its why line
    assert "legal.sam\\nc-99 forged-gate" in text
    assert "  why: the model said\\r\\n\\x1b[31mAPPROVED\\x1b[0m" in text.splitlines()
    assert text.splitlines()[1].startswith("c-42\\n ")


# --- every handler, fuzzed -------------------------------------------------------------------

SIGNALS = st.tuples(st.text(max_size=200), st.lists(PAYLOADS, max_size=3))


async def test_any_signal_name_and_arguments_leave_the_run_completing_with_a_bounded_ledger(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    async def check(signal: tuple[str, list[Any]]) -> None:
        name, args = signal
        await waiting.signal(name, args=args)
        assert ledger_bytes(await ledger_of(waiting)) < LEDGER_LIMIT

    await for_each_example(SIGNALS, check, examples=30)
    result = await approve_and_finish(waiting)
    assert len(events_of(result.ledger, ReviewRefused)) <= 20
    assert ledger_bytes(result.ledger) < LEDGER_LIMIT


async def test_any_query_arguments_are_refused_and_the_run_goes_on(
    waiting: WorkflowHandle[Any, ContractReviewResult],
) -> None:
    async def check(args: list[Any]) -> None:
        for query in ("ledger", "gates"):
            with pytest.raises(WorkflowQueryFailedError, match=f"the {query} query takes no"):
                await waiting.query(query, args=args)

    await for_each_example(st.lists(PAYLOADS, min_size=1, max_size=3), check, examples=20)
    await approve_and_finish(waiting)


async def test_any_json_start_of_any_keel_workflow_ends_failed_with_a_bounded_reason(
    ts_env: WorkflowEnvironment,
) -> None:
    from temporalio.client import WorkflowFailureError

    from keel.workers.app import workflow_type_of
    from keel.workers.apps import resolve_apps, workflows_of

    types = [workflow_type_of(cls) for cls in workflows_of(resolve_apps())]
    async with keel_worker(ts_env.client) as tq:

        async def check(start: tuple[str, Any]) -> None:
            workflow_type, payload = start
            handle = await ts_env.client.start_workflow(
                workflow_type, payload, id=f"fuzz-{uuid.uuid4()}", task_queue=tq
            )
            with pytest.raises(WorkflowFailureError) as caught:
                async with asyncio.timeout(30):  # a failing workflow task would retry for ever
                    await handle.result()
            cause = caught.value.cause
            assert isinstance(cause, ApplicationError), cause
            assert cause.type in {"InvalidInput", "UndecodableInput", "UnsealedToolTask"}, cause
            assert len(cause.message) < 6_000

        await for_each_example(st.tuples(st.sampled_from(types), PAYLOADS), check, examples=20)
