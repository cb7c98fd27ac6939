"""Deciding a gate: authenticate (done by the caller), authorize, sign, send, explain.

The page and the API both come here, so a decision is checked and signed one way whatever
sent it. The inbox refuses what it can see is wrong (a gate the reviewer may not decide, a
reject without a comment, modifications outside the gate's schema) before signing anything;
the workflow then verifies the signed decision itself and may still refuse it, and its
reasons are passed back as given.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from keel.contracts.gates import MAX_COMMENT_CHARS, MAX_NAME_CHARS, GateView, ReviewReceipt
from keel.contracts.ledger import parse_ledger
from keel.contracts.reviews import (
    MAX_ROLES,
    Action,
    Assignment,
    Authentication,
    Device,
    sign_review,
)
from keel.contracts.signing import SigningKey
from keel.inbox.access import Reviewer, acting_choices
from keel.inbox.errors import (
    DecisionRefused,
    Forbidden,
    GateClosed,
    InvalidDecision,
    TemporalUnavailable,
)
from keel.inbox.reading import describe, find_gate, read_ledger

MAX_SCHEMA_ERRORS = 10


ReviewerName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]


class Reassignment(BaseModel):
    """Who a ``reassign`` hands the gate to (named reviewers and/or roles)."""

    model_config = ConfigDict(extra="forbid")

    reviewers: list[ReviewerName] = Field(default_factory=list, max_length=MAX_ROLES)
    roles: list[ReviewerName] = Field(default_factory=list, max_length=MAX_ROLES)


class DecisionRequest(BaseModel):
    """What a reviewer asks the inbox to do at a gate (the API's request body)."""

    model_config = ConfigDict(extra="forbid")

    action: Action
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)
    """Required to reject or reassign."""
    modifications: dict[str, Any] | None = None
    """For ``modify``: the changed fields, checked against the gate's ``modify_schema``."""
    reassign_to: Reassignment | None = None
    """For ``reassign``: who gets the gate."""
    on_behalf_of: str | None = Field(None, min_length=1, max_length=MAX_NAME_CHARS)
    """Decide as someone who delegated to you while away."""


def nonce_for(subject: str, key: str) -> str:
    """The review nonce for a client's idempotency key, bound to the caller, so the same key
    from two reviewers is two decisions and any key length fits the contract's bounds."""
    return hashlib.sha256(f"keel-inbox/{subject}/{key}".encode()).hexdigest()[:40]


def problems(request: DecisionRequest, gate: GateView) -> list[str]:
    """What is wrong with ``request`` for ``gate`` (empty: it may be signed)."""
    found: list[str] = []
    comment = (request.comment or "").strip()
    if request.action in (Action.REJECT, Action.REASSIGN) and not comment:
        found.append(f"a comment is required to {request.action.value}")
    if request.action is Action.MODIFY:
        found += _modification_problems(request.modifications, gate.modify_schema)
    elif request.modifications is not None:
        found.append("modifications are only sent with action 'modify'")
    if request.action is Action.REASSIGN:
        target = request.reassign_to
        if target is None or not (target.reviewers or target.roles):
            found.append("reassign names at least one reviewer or role to hand the gate to")
    elif request.reassign_to is not None:
        found.append("reassign_to is only sent with action 'reassign'")
    return found


def _modification_problems(
    modifications: dict[str, Any] | None, schema: dict[str, Any] | None
) -> list[str]:
    if schema is None:
        return ["this gate takes no modifications: approve or reject it"]
    if not modifications:
        return ["modify needs the changed fields (a JSON object)"]
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(modifications), key=lambda e: list(e.absolute_path))
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}"
        for e in errors[:MAX_SCHEMA_ERRORS]
    ]


async def decide(
    client: Client,
    key: SigningKey,
    reviewer: Reviewer,
    workflow_id: str,
    gate_name: str,
    request: DecisionRequest,
    *,
    nonce: str,
    device: Device,
) -> ReviewReceipt:
    """Check, sign and send ``request``; the workflow's receipt.

    Raises:
        GateNotFound: no such gate, or one the reviewer may not see.
        GateClosed: the gate is already decided or expired.
        Forbidden: the reviewer may not decide it (or not on behalf of whom they named).
        InvalidDecision: the request is incomplete or its modifications do not fit.
        DecisionRefused: the workflow refused the signed decision.
        TemporalUnavailable: Temporal or the worker did not answer.
    """
    run_id, _, status = await describe(client, workflow_id)
    gate = await find_gate(client, reviewer, workflow_id, run_id, gate_name)
    if not gate.state.open:
        earlier = await earlier_receipt(client, workflow_id, run_id, status, gate, nonce)
        if earlier is not None:
            return earlier
        raise GateClosed(f"the gate is {gate.state.value}; nothing more can be decided")
    roles = _acting_roles(reviewer, gate, request.on_behalf_of)
    if found := problems(request, gate):
        raise InvalidDecision("the decision is not complete", found)
    payload = sign_review(
        key,
        gate=gate_name,
        decision=request.action,
        reviewer=reviewer.subject,
        workflow_id=workflow_id,
        run_id=run_id,
        auth=Authentication(method=reviewer.method, issuer=reviewer.issuer, device=device),
        roles=roles,
        on_behalf_of=request.on_behalf_of,
        comment=(request.comment or "").strip() or None,
        modifications=request.modifications if request.action is Action.MODIFY else None,
        reassign_to=(
            Assignment(**request.reassign_to.model_dump())
            if request.reassign_to is not None and request.action is Action.REASSIGN
            else None
        ),
        nonce=nonce,
    )
    return await _send(client, workflow_id, payload)


async def earlier_receipt(
    client: Client, workflow_id: str, run_id: str, status: str, gate: GateView, nonce: str
) -> ReviewReceipt | None:
    """The receipt of the decision already recorded with ``nonce`` at this gate, if any: a
    retry after the gate closed (or the run completed) is the same decision, not an error."""
    for event in reversed(parse_ledger(await read_ledger(client, workflow_id, run_id, status))):
        signed = getattr(event, "signed", None) or {}
        if getattr(event, "gate", None) == gate.gate and signed.get("nonce") == nonce:
            return ReviewReceipt(
                gate=gate.gate,
                state=gate.state,
                ledger_seq=event.seq,
                approvals=len(gate.approved_by),
                approvals_needed=gate.approvals_needed,
                repeated=True,
            )
    return None


def _acting_roles(reviewer: Reviewer, gate: GateView, on_behalf_of: str | None) -> tuple[str, ...]:
    choices = acting_choices(reviewer, gate)
    if on_behalf_of is None or on_behalf_of == reviewer.subject:
        if None not in choices:
            others = ", ".join(c for c in choices if c)
            raise Forbidden(
                f"you may not decide this gate yourself; decide it on behalf of {others}"
                if others
                else "you may not decide this gate"
            )
        return reviewer.roles
    delegator = reviewer.delegator(on_behalf_of)
    if delegator is None:
        raise Forbidden(f"{on_behalf_of} has not delegated to you (or the delegation ended)")
    if on_behalf_of not in choices:
        raise Forbidden(f"{on_behalf_of} may not decide this gate either")
    return delegator.roles


async def _send(client: Client, workflow_id: str, payload: dict[str, Any]) -> ReviewReceipt:
    handle = client.get_workflow_handle(workflow_id)
    try:
        receipt: ReviewReceipt = await handle.execute_update(
            "review", payload, result_type=ReviewReceipt
        )
    except WorkflowUpdateFailedError as exc:
        reason = getattr(exc.cause, "message", None) or str(exc.cause or exc)
        raise DecisionRefused("the workflow refused the decision", [reason]) from exc
    except RPCError as exc:
        raise TemporalUnavailable(f"the decision could not be delivered: {exc.message}") from exc
    return receipt
