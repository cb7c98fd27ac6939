"""Helpers for driving Keel workflows from tests; the generic ones come from keel.testing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client, WorkflowHandle

from keel.contracts.gates import ReviewReceipt
from keel.contracts.ledger import LedgerEvent
from keel.scenarios.contract_review import ContractReviewWorkflow
from keel.scenarios.contract_review.contracts import ContractReviewResult
from keel.testing import ledger_of, review_payload, signed_review, wait_for_gate
from tests.conftest import BIN
from tests.samples import load_sample

__all__ = [
    "decide",
    "ledger_of",
    "refused",
    "review",
    "signal_review",
    "start_keel_worker",
    "start_review",
    "types_of",
    "wait_for_gate",
]


async def start_review(
    client: Client, task_queue: str, sample: str | dict[str, Any], *, prefix: str = "review"
) -> WorkflowHandle[ContractReviewWorkflow, ContractReviewResult]:
    payload = load_sample(f"contract-{sample}-risk") if isinstance(sample, str) else sample
    return await client.start_workflow(
        ContractReviewWorkflow.run,
        payload,
        id=f"{prefix}-{uuid.uuid4()}",
        task_queue=task_queue,
    )


def types_of(events: list[LedgerEvent]) -> list[str]:
    return [e.type for e in events]


def review(gate: str, decision: str, reviewer: str, **extra: Any) -> dict[str, Any]:
    """A ``review`` payload; ``extra`` is sent as is (comment, modifications, junk)."""
    return review_payload(gate, decision, reviewer, **extra)


async def signable(handle: WorkflowHandle[Any, Any], payload: Any, roles: Sequence[str]) -> Any:
    """``payload`` signed by the test kit when it is a review's decision part (an object with
    a gate and no signature yet); anything else as it is, to test what Keel does with it."""
    if isinstance(payload, dict) and "gate" in payload and "signature" not in payload:
        try:
            return await signed_review(handle, payload, roles=roles)
        except ValueError:  # no canonical JSON form (an integer past 2**53): sent unsigned
            return payload
    return payload


async def decide(
    handle: WorkflowHandle[Any, Any], payload: Any, *, roles: Sequence[str] = ()
) -> ReviewReceipt:
    """Send ``payload`` by the ``review`` update, signed when it is a decision (``signable``)."""
    receipt: ReviewReceipt = await handle.execute_update(
        "review", await signable(handle, payload, roles), result_type=ReviewReceipt
    )
    return receipt


async def signal_review(
    handle: WorkflowHandle[Any, Any], payload: Any, *, roles: Sequence[str] = ()
) -> None:
    """Send ``payload`` by the ``review`` signal, signed when it is a decision."""
    await handle.signal("review", await signable(handle, payload, roles))


async def refused(handle: WorkflowHandle[Any, Any], payload: Any) -> str:
    """Send ``payload`` as a review update that must be refused (signed when it is a
    decision, so that what is refused is its content); return the reason."""
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.exceptions import ApplicationError

    try:
        await decide(handle, payload)
    except WorkflowUpdateFailedError as err:
        assert isinstance(err.cause, ApplicationError)
        assert err.cause.type == "ReviewRefused"
        return err.cause.message
    raise AssertionError(f"review {payload!r} was accepted")


async def start_keel_worker(env: dict[str, str]) -> asyncio.subprocess.Process:
    """``keel worker`` as a separate process with ``env``, once it says it is ready."""
    from tests.conftest import BIN

    proc = await asyncio.create_subprocess_exec(
        str(BIN / "keel"),
        "worker",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while b"keel worker:" not in (line := await proc.stdout.readline()):
            assert line, "keel worker exited before it was ready"
    return proc


async def run_keel(*args: str, env: dict[str, str], expect: int) -> str:
    """``keel ARGS`` in a subprocess with ``env``; asserts its exit code, returns its output
    (stdout and stderr together)."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "keel"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    text = out.decode()
    assert proc.returncode == expect, f"keel {' '.join(args)} -> {proc.returncode}:\n{text}"
    return text


def top_level_imports(source: str) -> set[str]:
    """The top-level package of every module ``source`` imports (for the standalone
    verifiers: they may use only the standard library, rfc8785 and cryptography)."""
    import ast

    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    return imported
