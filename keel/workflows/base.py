"""What every Keel workflow shares: ledger, context, gates, agent nodes and their handlers.

Handlers: query ``ledger``, query ``gates``, update ``review`` (validated, answers the
caller) and signal ``review`` (same payload; refused input is recorded, never fatal).
"""

from __future__ import annotations

import hashlib
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from keel.contracts.agent import canonical_json
    from keel.contracts.gates import GateView, ReviewInput, ReviewReceipt
    from keel.contracts.ledger import InputRejected, LedgerEvent, ReviewRefused, WorkflowStarted

from keel.workflows.agent_node import AgentNodes
from keel.workflows.context import WorkflowContext
from keel.workflows.gates import GateBook, payload_digest, refusal
from keel.workflows.ledger import Ledger

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


class KeelWorkflow:
    """Base class of scenario workflows (not a workflow itself)."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.context = WorkflowContext(self.ledger)
        self.gate_book = GateBook(self.ledger)
        self.agents = AgentNodes(self.ledger, self.context, self.gate_book)

    def start(self, raw_input: Any) -> None:
        """Record ``WorkflowStarted`` with a digest of the input as received."""
        info = workflow.info()
        digest = hashlib.sha256(canonical_json(raw_input).encode()).hexdigest()
        self.ledger.record(
            WorkflowStarted(
                workflow=info.workflow_type,
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                input_sha256=digest,
            )
        )

    async def settle(self, result: R) -> R:
        """Return ``result`` once every update and signal handler has finished, so no
        reviewer's call is cut off by the run completing."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    def ingest(self, model: type[M], raw_input: Any, *, max_bytes: int) -> M:
        """Validate the input; a malformed one is recorded and fails the run, non-retryably."""
        reasons: list[str] = []
        size = len(canonical_json(raw_input).encode())
        if size > max_bytes:
            reasons = [f"input is {size} bytes; the limit is {max_bytes}"]
        else:
            try:
                return model.model_validate(raw_input)
            except ValidationError as err:
                reasons = [
                    f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}"
                    for e in err.errors()
                ]
        self.ledger.record(InputRejected(reasons=reasons))
        raise ApplicationError(
            f"invalid {model.__name__}: " + "; ".join(reasons),
            type="InvalidInput",
            non_retryable=True,
        )

    @workflow.query(name="ledger")
    def ledger_query(self) -> list[LedgerEvent]:
        """Every ledger event so far."""
        return list(self.ledger.events)

    @workflow.query(name="gates")
    def gates_query(self) -> list[GateView]:
        """Every gate opened so far, with its state and verdict."""
        return self.gate_book.views()

    @workflow.update(name="review")
    def review_update(self, payload: Any) -> ReviewReceipt:
        """Decide a gate; refused input is rejected by the validator and changes nothing."""
        review, _ = self.gate_book.check(payload)
        if not isinstance(review, ReviewInput):  # the validator ran first; keep mypy honest
            raise refusal(["malformed review"])
        return self.gate_book.apply(review, via="update")

    @review_update.validator
    def validate_review(self, payload: Any) -> None:
        """Refuse a bad review before it reaches history (nothing changes)."""
        _, reasons = self.gate_book.check(payload)
        if reasons:
            raise refusal(reasons)

    @workflow.signal(name="review")
    def review_signal(self, payload: Any) -> None:
        """Same as the update for tools that can only signal; refusals go to the ledger."""
        review, reasons = self.gate_book.check(payload)
        if reasons or review is None:
            raw = payload if isinstance(payload, dict) else {}
            self.ledger.record(
                ReviewRefused(
                    gate=str(raw["gate"]) if raw.get("gate") is not None else None,
                    reviewer=str(raw["reviewer"]) if raw.get("reviewer") is not None else None,
                    via="signal",
                    reasons=reasons,
                    payload_sha256=payload_digest(payload),
                )
            )
            return
        self.gate_book.apply(review, via="signal")
