"""Refused reviews: the update says why and changes nothing; the signal records why.

A medium-risk review waits at gate ``standard-review`` (reviewers legal.priya, legal.sam).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from keel.contracts.gates import GateState, GateView
from keel.contracts.ledger import GateDecided, LedgerEvent, ReviewRefused, verify_chain
from keel.offline import OfflineFault
from tests.conftest import keel_worker
from tests.helpers import (
    decide,
    ledger_of,
    refused,
    review,
    signable,
    signal_review,
    start_review,
    types_of,
    wait_for_gate,
)

GATE = "standard-review"


@dataclass(frozen=True)
class Case:
    id: str
    payload: Any
    reason: str
    """Text the refusal reason must contain."""


CASES = [
    Case(
        "unknown-gate",
        review("general-counsel", "approve", "legal.priya"),
        "unknown gate 'general-counsel' (open gates: ['standard-review'])",
    ),
    Case(
        "missing-reviewer",
        {"gate": GATE, "decision": "approve"},
        "reviewer: Field required",
    ),
    Case(
        "empty-reviewer",
        review(GATE, "approve", ""),
        "reviewer: String should have at least 1 character",
    ),
    Case(
        "unknown-decision",
        review(GATE, "maybe", "legal.priya"),
        "decision: Input should be 'approve', 'reject', 'modify', 'reassign' or 'defer'",
    ),
    Case(
        "string-payload",
        "approve standard-review",
        "the review payload must be a JSON object",
    ),
    Case(
        "list-payload",
        [GATE, "approve", "legal.priya"],
        "the review payload must be a JSON object",
    ),
    Case(
        "unknown-field",
        review(GATE, "approve", "legal.priya", priority="urgent"),
        "priority: Extra inputs are not permitted",
    ),
    Case(
        "unauthorised-reviewer",
        review(GATE, "approve", "legal.lead.jordan"),
        "'legal.lead.jordan' may not review gate 'standard-review' "
        "(allowed: legal.priya, legal.sam, role legal)",
    ),
    Case(
        "reject-without-comment",
        review(GATE, "reject", "legal.sam"),
        "a rejection needs a comment saying why",
    ),
    Case(
        "reject-with-blank-comment",
        review(GATE, "reject", "legal.sam", comment="   "),
        "a rejection needs a comment saying why",
    ),
    Case(
        "modify-without-modifications",
        review(GATE, "modify", "legal.sam"),
        "decision 'modify' needs modifications",
    ),
    Case(
        "modify-with-empty-modifications",
        review(GATE, "modify", "legal.sam", modifications={}),
        "decision 'modify' needs modifications",
    ),
    Case(
        "modify-unmodifiable-field",
        review(GATE, "modify", "legal.sam", modifications={"risk_level": "low"}),
        "gate 'standard-review' does not allow modifying ['risk_level'] (modifiable: conditions)",
    ),
    Case(
        # The field's type is the gate's (a number would fail the workflow's own code).
        "modify-field-of-the-wrong-type",
        review(GATE, "modify", "legal.sam", modifications={"conditions": 3}),
        "modifications.conditions: Input should be a valid list",
    ),
    Case(
        "modify-field-item-of-the-wrong-type",
        review(GATE, "modify", "legal.sam", modifications={"conditions": ["ok", 7]}),
        "modifications.conditions.1: Input should be a valid string",
    ),
    Case(
        "modifications-with-approve",
        review(GATE, "approve", "legal.priya", modifications={"conditions": ["cap fees"]}),
        "modifications are only accepted with decision 'modify'",
    ),
    Case(
        "comment-too-long",
        review(GATE, "approve", "legal.priya", comment="x" * 4_001),
        "comment: String should have at most 4000 characters",
    ),
]


async def gates_of(handle: WorkflowHandle[Any, Any]) -> list[GateView]:
    views: list[GateView] = await handle.query("gates", result_type=list[GateView])
    return views


async def snapshot(handle: WorkflowHandle[Any, Any]) -> tuple[list[LedgerEvent], list[GateView]]:
    return await ledger_of(handle), await gates_of(handle)


async def ledger_until(
    handle: WorkflowHandle[Any, Any],
    done: Callable[[list[LedgerEvent]], bool],
    timeout: float = 30,
) -> list[LedgerEvent]:
    """Poll the ``ledger`` query until ``done`` holds (signals are not acknowledged)."""
    async with asyncio.timeout(timeout):
        while True:
            events = await ledger_of(handle)
            if done(events):
                return events
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def waiting(ts_env: WorkflowEnvironment) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    """One review waiting at ``standard-review``; refused updates leave it as it is."""
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium", prefix="refusals")
        await wait_for_gate(handle, GATE)
        yield handle
        await handle.terminate("refusal tests done")


# --- update -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_refused_update_says_why_and_changes_nothing(
    waiting: WorkflowHandle[Any, Any], case: Case
) -> None:
    ledger_before, gates_before = await snapshot(waiting)
    reason = await refused(waiting, case.payload)
    assert reason.startswith("review refused: ")
    assert case.reason in reason
    ledger_after, gates_after = await snapshot(waiting)
    assert len(ledger_after) == len(ledger_before)
    assert ledger_after == ledger_before
    assert gates_after == gates_before
    [gate] = gates_after
    assert (gate.gate, gate.state, gate.decided_by) == (GATE, GateState.AWAITING_APPROVAL, None)


async def test_several_problems_are_all_reported(waiting: WorkflowHandle[Any, Any]) -> None:
    before = await snapshot(waiting)
    reason = await refused(waiting, review(GATE, "reject", "legal.lead.jordan"))
    assert "'legal.lead.jordan' may not review" in reason
    assert "a rejection needs a comment saying why" in reason
    assert await snapshot(waiting) == before


async def test_a_decided_gate_takes_no_further_review(ts_env: WorkflowEnvironment) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium", prefix="refusals-decided")
        await wait_for_gate(handle, GATE)
        await decide(
            handle, review(GATE, "reject", "legal.sam", comment="not acceptable as drafted")
        )
        await wait_for_gate(handle, "standard-review-2")
        before = await snapshot(handle)
        # Neither the other reviewer nor the one who decided can reopen the verdict.
        for reviewer in ("legal.priya", "legal.sam"):
            reason = await refused(handle, review(GATE, "approve", reviewer))
            assert "gate 'standard-review' is rejected, not awaiting approval" in reason
        assert await snapshot(handle) == before
        await decide(handle, review("standard-review-2", "approve", "legal.priya"))
        result = await handle.result()
    decided = [e for e in result.ledger if isinstance(e, GateDecided)]
    assert [(d.gate, d.decision, d.reviewer) for d in decided] == [
        (GATE, "reject", "legal.sam"),
        ("standard-review-2", "approve", "legal.priya"),
    ]
    assert (result.outcome, result.decided_by) == ("approved", "legal.priya")


async def test_escalation_gate_wants_the_agents_output_not_an_approval(
    ts_env: WorkflowEnvironment,
) -> None:
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1, 2, 3])]
    async with keel_worker(ts_env.client, faults=faults) as tq:
        handle = await start_review(ts_env.client, tq, "medium", prefix="refusals-escalation")
        await wait_for_gate(handle, "risk-classification")
        before = await snapshot(handle)
        reason = await refused(handle, review("risk-classification", "approve", "legal.sam"))
        assert "answer with decision 'modify' and the risk-classifier@1 output" in reason
        reason = await refused(
            handle,
            review(
                "risk-classification",
                "modify",
                "legal.sam",
                modifications={
                    "risk_level": "catastrophic",
                    "clause_refs": [],
                    "rationale": "x" * 20,
                },
            ),
        )
        assert "modifications.risk_level" in reason
        assert await snapshot(handle) == before
        await handle.terminate("escalation refusal test done")


# --- signal -------------------------------------------------------------------------------


def digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


async def test_refused_signals_are_recorded_and_a_valid_one_decides(
    ts_env: WorkflowEnvironment,
) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium", prefix="refusals-signal")
        await wait_for_gate(handle, GATE)
        sent = [await signable(handle, case.payload, ()) for case in CASES]
        for payload in sent:
            await handle.signal("review", payload)
        events = await ledger_until(
            handle, lambda ev: types_of(ev).count("ReviewRefused") == len(CASES)
        )
        refusals = [e for e in events if isinstance(e, ReviewRefused)]
        for case, payload, event in zip(CASES, sent, refusals, strict=True):
            raw = case.payload if isinstance(case.payload, dict) else {}
            assert any(case.reason in r for r in event.reasons), (case.id, event.reasons)
            assert event.via == "signal"
            assert event.payload_sha256 == digest(payload), case.id
            assert event.gate == raw.get("gate"), case.id
            assert event.reviewer == raw.get("reviewer"), case.id
        assert "GateDecided" not in types_of(events)
        # The workflow keeps waiting at the gate.
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        [gate] = await gates_of(handle)
        assert (gate.state, gate.decided_by) == (GateState.AWAITING_APPROVAL, None)

        await signal_review(handle, review(GATE, "approve", "legal.sam", comment="ok from chat"))
        # No time skipping: the module's waiting review must not reach its SLA meanwhile.
        with ts_env.auto_time_skipping_disabled():
            result = await handle.result()
    assert (result.outcome, result.decided_by, result.reason) == (
        "approved",
        "legal.sam",
        "ok from chat",
    )
    decided = [e for e in result.ledger if isinstance(e, GateDecided)]
    assert [(d.gate, d.decision, d.state, d.reviewer, d.via) for d in decided] == [
        (GATE, "approve", "approved", "legal.sam", "signal")
    ]
    assert decided[0].auth == {"method": "test-kit", "issuer": "keel.testing"}
    assert decided[0].key_id and decided[0].signature and decided[0].signed
    assert types_of(result.ledger).count("ReviewRefused") == len(CASES)
    assert verify_chain(result.ledger).ok
