"""Driving a running workflow from a test: wait for a gate, decide it, read the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, TypeVar, overload

from temporalio.client import WorkflowHandle

from keel.contracts.gates import GateView, ReviewReceipt
from keel.contracts.ledger import EventBase, LedgerEvent

E = TypeVar("E", bound=EventBase)


async def wait_for_gate(
    handle: WorkflowHandle[Any, Any], name: str, *, timeout: float = 30
) -> GateView:
    """Poll the ``gates`` query until gate ``name`` waits for a reviewer.

    Args:
        handle: the workflow.
        name: the gate's name (a reopened gate is ``NAME-2``, ``NAME-3``...).
        timeout: seconds to wait before failing.

    Raises:
        TimeoutError: the gate did not open in time.
    """
    async with asyncio.timeout(timeout):
        while True:
            gates: list[GateView] = await handle.query("gates", result_type=list[GateView])
            for gate in gates:
                if gate.gate == name and gate.state.open:
                    return gate
            await asyncio.sleep(0.05)


def review_payload(
    gate: str,
    decision: str,
    reviewer: str,
    *,
    comment: str | None = None,
    modifications: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON payload of the ``review`` update and signal (``extra`` is sent as is, to
    test refusals)."""
    payload: dict[str, Any] = {"gate": gate, "decision": decision, "reviewer": reviewer}
    if comment is not None:
        payload["comment"] = comment
    if modifications is not None:
        payload["modifications"] = modifications
    return {**payload, **extra}


async def approve(
    handle: WorkflowHandle[Any, Any], gate: str, reviewer: str, *, comment: str | None = None
) -> ReviewReceipt:
    """Approve ``gate`` as ``reviewer`` through the ``review`` update.

    Raises:
        temporalio.client.WorkflowUpdateFailedError: the workflow refused the review.
    """
    return await _review(handle, review_payload(gate, "approve", reviewer, comment=comment))


async def reject(
    handle: WorkflowHandle[Any, Any], gate: str, reviewer: str, *, comment: str | None = None
) -> ReviewReceipt:
    """Reject ``gate`` as ``reviewer`` through the ``review`` update.

    Raises:
        temporalio.client.WorkflowUpdateFailedError: the workflow refused the review.
    """
    return await _review(handle, review_payload(gate, "reject", reviewer, comment=comment))


async def modify(
    handle: WorkflowHandle[Any, Any],
    gate: str,
    reviewer: str,
    modifications: dict[str, Any],
    *,
    comment: str | None = None,
) -> ReviewReceipt:
    """Approve ``gate`` with ``modifications`` (fields the gate lets reviewers change).

    Raises:
        temporalio.client.WorkflowUpdateFailedError: the workflow refused the review.
    """
    payload = review_payload(gate, "modify", reviewer, comment=comment, modifications=modifications)
    return await _review(handle, payload)


async def _review(handle: WorkflowHandle[Any, Any], payload: dict[str, Any]) -> ReviewReceipt:
    receipt: ReviewReceipt = await handle.execute_update(
        "review", payload, result_type=ReviewReceipt
    )
    return receipt


async def ledger_of(handle: WorkflowHandle[Any, Any]) -> list[EventBase]:
    """The workflow's ledger so far, through the ``ledger`` query."""
    return list(await handle.query("ledger", result_type=list[LedgerEvent]))


@overload
def events_of(ledger: Iterable[EventBase], kind: type[E]) -> list[E]: ...
@overload
def events_of(ledger: Iterable[EventBase], kind: str) -> list[EventBase]: ...
def events_of(ledger: Iterable[EventBase], kind: type[E] | str) -> list[E] | list[EventBase]:
    """The events of one type, in ledger order.

    Args:
        ledger: a result's ``ledger`` or ``ledger_of(handle)``.
        kind: an event class (``Routed``: the list is typed) or a type name (``"Routed"``,
            also for an app's own event types).
    """
    if isinstance(kind, str):
        return [event for event in ledger if getattr(event, "type", None) == kind]
    return [event for event in ledger if isinstance(event, kind)]
