"""Driving a running workflow from a test: wait for a gate, decide it, read the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, overload

from temporalio.client import WorkflowHandle

from keel.contracts.gates import GateView, ReviewReceipt
from keel.contracts.ledger import EventBase, LedgerEvent
from keel.testing._reviews import signed_review

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
    """The decision part of a ``review`` payload, unsigned (``signed_review`` signs it;
    ``extra`` is kept as is, to test refusals)."""
    payload: dict[str, Any] = {"gate": gate, "decision": decision, "reviewer": reviewer}
    if comment is not None:
        payload["comment"] = comment
    if modifications is not None:
        payload["modifications"] = modifications
    return {**payload, **extra}


async def approve(
    handle: WorkflowHandle[Any, Any],
    gate: str,
    reviewer: str,
    *,
    comment: str | None = None,
    roles: Sequence[str] = (),
) -> ReviewReceipt:
    """Approve ``gate`` as ``reviewer`` (with ``roles``) through the ``review`` update,
    signed by the test kit's review key.

    Raises:
        temporalio.client.WorkflowUpdateFailedError: the workflow refused the review.
    """
    payload = review_payload(gate, "approve", reviewer, comment=comment)
    return await decide(handle, payload, roles=roles)


async def reject(
    handle: WorkflowHandle[Any, Any],
    gate: str,
    reviewer: str,
    *,
    comment: str | None = None,
    roles: Sequence[str] = (),
) -> ReviewReceipt:
    """Reject ``gate`` as ``reviewer`` through the ``review`` update (signed).

    Raises:
        temporalio.client.WorkflowUpdateFailedError: the workflow refused the review.
    """
    payload = review_payload(gate, "reject", reviewer, comment=comment)
    return await decide(handle, payload, roles=roles)


async def modify(
    handle: WorkflowHandle[Any, Any],
    gate: str,
    reviewer: str,
    modifications: dict[str, Any],
    *,
    comment: str | None = None,
    roles: Sequence[str] = (),
) -> ReviewReceipt:
    """Approve ``gate`` with ``modifications`` (fields the gate lets reviewers change),
    signed.

    Raises:
        temporalio.client.WorkflowUpdateFailedError: the workflow refused the review.
    """
    payload = review_payload(gate, "modify", reviewer, comment=comment, modifications=modifications)
    return await decide(handle, payload, roles=roles)


async def decide(
    handle: WorkflowHandle[Any, Any], payload: dict[str, Any], *, roles: Sequence[str] = ()
) -> ReviewReceipt:
    """Sign ``payload`` (``review_payload``) with the test kit's key and send it by update.

    Raises:
        temporalio.client.WorkflowUpdateFailedError: the workflow refused the review.
    """
    signed = await signed_review(handle, payload, roles=roles)
    receipt: ReviewReceipt = await handle.execute_update(
        "review", signed, result_type=ReviewReceipt
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
