"""Reading gates for a reviewer: the waiting list across executions, and one gate's page.

The waiting list comes from Temporal visibility (executions whose ``KeelPendingGates``
search attribute is set) and each one's ``gates`` query, so it spans every app and task
queue on the namespace. A gate page adds the run's ledger (``ledger`` query, or the result
of a completed run), verified as stored, and what the agent proposed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from keel.contracts.gates import GateView
from keel.contracts.integrity import LedgerReport, verify_ledger
from keel.contracts.ledger import AgentDecided, EventBase, parse_ledger
from keel.contracts.signing import Keyring
from keel.inbox.access import Reviewer, acting_choices, may_see
from keel.inbox.errors import GateNotFound, TemporalUnavailable

QUERY_TIMEOUT = timedelta(seconds=10)
PENDING_QUERY = "KeelPendingGates IS NOT NULL AND ExecutionStatus = 'Running'"
MAX_EXECUTIONS = 500
"""Executions the waiting list looks at, at most (newest first)."""
QUERIES_AT_ONCE = 16
MAX_TIMELINE_TEXT = 300


@dataclass(frozen=True)
class WaitingGate:
    """One open gate in a reviewer's list."""

    workflow_id: str
    run_id: str
    workflow_type: str
    gate: GateView
    acting_as: list[str | None]


@dataclass(frozen=True)
class Proposal:
    """What an agent node answered (the latest answer of each node)."""

    node: str
    contract: str
    model: str
    output: dict[str, Any] | None
    confidence: float | None
    rationale: str | None
    at: datetime


@dataclass(frozen=True)
class TimelineEntry:
    """One ledger event, as a line of the gate page."""

    seq: int
    at: datetime
    type: str
    text: str


@dataclass
class GatePage:
    """Everything a gate page shows."""

    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    gate: GateView
    acting_as: list[str | None]
    proposals: list[Proposal] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    verification: LedgerReport | None = None


async def waiting_gates(client: Client, reviewer: Reviewer) -> list[WaitingGate]:
    """The open gates ``reviewer`` (or someone who delegated to them) may decide, oldest
    deadline first."""
    executions = []
    try:
        async for execution in client.list_workflows(PENDING_QUERY, limit=MAX_EXECUTIONS):
            executions.append(execution)
    except RPCError as exc:
        raise TemporalUnavailable(f"Temporal visibility did not answer: {exc.message}") from exc
    limit = asyncio.Semaphore(QUERIES_AT_ONCE)

    async def gates_of(workflow_id: str, run_id: str) -> list[GateView]:
        async with limit:
            try:
                return await _gates(client, workflow_id, run_id)
            except TemporalUnavailable:
                return []  # one execution whose worker is down hides only its own gates

    found = await asyncio.gather(*(gates_of(e.id, e.run_id) for e in executions))
    rows = [
        WaitingGate(e.id, e.run_id, e.workflow_type, gate, acting_choices(reviewer, gate))
        for e, gates in zip(executions, found, strict=True)
        for gate in gates
        if gate.state.open and acting_choices(reviewer, gate)
    ]
    return sorted(rows, key=lambda r: r.gate.deadline.timestamp() if r.gate.deadline else 1e18)


async def gate_page(
    client: Client, reviewer: Reviewer, workflow_id: str, gate_name: str, keyring: Keyring | None
) -> GatePage:
    """The page of one gate, if ``reviewer`` may see it.

    Raises:
        GateNotFound: no such execution or gate, or one the reviewer may not see.
        TemporalUnavailable: Temporal or the execution's worker did not answer.
    """
    run_id, workflow_type, status = await describe(client, workflow_id)
    gate = await find_gate(client, reviewer, workflow_id, run_id, gate_name)
    raw = await read_ledger(client, workflow_id, run_id, status)
    events = parse_ledger(raw)
    report = verify_ledger(
        raw,
        keyring=keyring or None,
        closed=status == WorkflowExecutionStatus.COMPLETED.name,
        first_seq=events[0].seq if events else 1,
    )
    return GatePage(
        workflow_id=workflow_id,
        run_id=run_id,
        workflow_type=workflow_type,
        status=status,
        gate=gate,
        acting_as=acting_choices(reviewer, gate) if gate.state.open else [],
        proposals=_proposals(events),
        timeline=[_entry(e) for e in events],
        verification=report,
    )


async def describe(client: Client, workflow_id: str) -> tuple[str, str, str]:
    """The latest run's id, workflow type and status of ``workflow_id``."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise GateNotFound("no such gate") from exc
        raise TemporalUnavailable(f"Temporal did not answer: {exc.message}") from exc
    status = description.status.name if description.status else "RUNNING"
    return description.run_id, description.workflow_type, status


async def find_gate(
    client: Client, reviewer: Reviewer, workflow_id: str, run_id: str, gate_name: str
) -> GateView:
    """The gate ``gate_name`` of the run, if ``reviewer`` may see it (else GateNotFound)."""
    gates = await _gates(client, workflow_id, run_id)
    gate = next((g for g in gates if g.gate == gate_name), None)
    if gate is None or not may_see(reviewer, gate):
        raise GateNotFound("no such gate")
    return gate


async def _gates(client: Client, workflow_id: str, run_id: str) -> list[GateView]:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        gates: list[GateView] = await handle.query(
            "gates", result_type=list[GateView], rpc_timeout=QUERY_TIMEOUT
        )
        return gates
    except WorkflowQueryFailedError as exc:
        raise GateNotFound("no such gate") from exc  # not a Keel workflow
    except RPCError as exc:
        raise TemporalUnavailable(
            f"the worker of {workflow_id} did not answer the gates query: {exc.message}"
        ) from exc


async def read_ledger(client: Client, workflow_id: str, run_id: str, status: str) -> list[Any]:
    """The run's ledger as stored: from a completed run's result, else by query."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        if status == WorkflowExecutionStatus.COMPLETED.name:
            result = await handle.result()
            stored = result.get("ledger") if isinstance(result, dict) else None
            return stored if isinstance(stored, list) else []
        events: list[Any] = await handle.query(
            "ledger", result_type=list[Any], rpc_timeout=QUERY_TIMEOUT
        )
        return events
    except (RPCError, WorkflowQueryFailedError) as exc:
        raise TemporalUnavailable(f"the ledger of {workflow_id} could not be read: {exc}") from exc


def _proposals(events: list[Any]) -> list[Proposal]:
    latest: dict[str, AgentDecided] = {}
    for event in events:
        if isinstance(event, AgentDecided) and event.output is not None:
            latest[event.node] = event
    return [
        Proposal(
            node=e.node,
            contract=e.contract,
            model=e.model,
            output=e.output,
            confidence=e.confidence,
            rationale=_rationale(e.output),
            at=e.at,
        )
        for e in latest.values()
    ]


def _rationale(output: dict[str, Any] | None) -> str | None:
    for name in ("rationale", "reasoning", "reason", "summary"):
        value = (output or {}).get(name)
        if isinstance(value, str):
            return value
    return None


def _entry(event: EventBase) -> TimelineEntry:
    text = event.describe()
    if len(text) > MAX_TIMELINE_TEXT:
        text = text[: MAX_TIMELINE_TEXT - 3] + "..."
    return TimelineEntry(seq=event.seq, at=event.at, type=event.type, text=text)
