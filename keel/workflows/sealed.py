"""Keel's internal work, sealed: continue-as-new state and planned tool tasks carry the
worker's signature, so what a caller starts by hand with a forged state or task is refused.

A signature binds the workflow ids Temporal itself reports (the run a state was continued
from, the parent that started a tool task), so a sealed value cannot be replayed into
another execution either. Signing and checking are local activities
(``keel.workflows.signing``).
"""

from __future__ import annotations

from typing import Any, NoReturn

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from keel.contracts.signing import Signature

from keel.workflows.signing import sign, signature_problem

CONTINUED_KEY = "keel_continued"
"""The one key of a continued run's input: ``{"state", "previous_run_id", "signature"}``."""
STATE_PURPOSE = "keel/continue-as-new/1"
TASK_PURPOSE = "keel/tool-task/1"


async def continue_as_new_sealed(state: dict[str, Any]) -> NoReturn:
    """Continue as new with ``state``, signed for the next run of this workflow."""
    info = workflow.info()
    signature = await sign(STATE_PURPOSE, _state_message(info.workflow_id, info.run_id, state))
    workflow.continue_as_new(
        {
            CONTINUED_KEY: {
                "state": state,
                "previous_run_id": info.run_id,
                "signature": signature.model_dump(mode="json"),
            }
        }
    )


async def open_sealed_state(envelope: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The state a previous run of this workflow sealed, and None; or None and why not."""
    info = workflow.info()
    if not isinstance(envelope, dict) or set(envelope) != {"state", "previous_run_id", "signature"}:
        return None, "continue-as-new state must be {state, previous_run_id, signature}"
    state, previous = envelope["state"], envelope["previous_run_id"]
    if not isinstance(state, dict) or not isinstance(previous, str):
        return None, "continue-as-new state must be a JSON object with a previous_run_id"
    if info.continued_run_id is None:
        return None, "continue-as-new state was sent to a run that was not continued from another"
    if previous != info.continued_run_id:
        return None, "continue-as-new state was sealed by another run than this one continues"
    try:
        signature = Signature.model_validate(envelope["signature"])
    except ValidationError:
        return None, "continue-as-new state carries no valid signature"
    problem = await signature_problem(
        STATE_PURPOSE, _state_message(info.workflow_id, previous, state), signature
    )
    if problem is not None:
        return None, f"continue-as-new state is not Keel's: {problem}"
    return state, None


def _state_message(workflow_id: str, previous_run_id: str, state: dict[str, Any]) -> dict[str, Any]:
    return {"workflow_id": workflow_id, "previous_run_id": previous_run_id, "state": state}


async def seal_task(child_id: str, task: dict[str, Any]) -> Signature:
    """The parent's signature that lets child workflow ``child_id`` run ``task``."""
    info = workflow.info()
    return await sign(TASK_PURPOSE, _task_message(info.workflow_id, info.run_id, child_id, task))


async def task_seal_problem(task: dict[str, Any], signature: Signature | None) -> str | None:
    """Why this (child) workflow may not run ``task``; None if its parent sealed it."""
    info = workflow.info()
    if info.parent is None:
        return "a tool task runs only as a child of the workflow whose plan holds it"
    if signature is None:
        return "the tool task carries no seal from its parent"
    if task.get("parent_workflow_id") != info.parent.workflow_id:
        return "the tool task names another parent than the one that started it"
    message = _task_message(info.parent.workflow_id, info.parent.run_id, info.workflow_id, task)
    problem = await signature_problem(TASK_PURPOSE, message, signature)
    return None if problem is None else f"the tool task's seal does not hold: {problem}"


def _task_message(
    parent_id: str, parent_run_id: str, child_id: str, task: dict[str, Any]
) -> dict[str, Any]:
    return {
        "parent_workflow_id": parent_id,
        "parent_run_id": parent_run_id,
        "child_workflow_id": child_id,
        "task": task,
    }
