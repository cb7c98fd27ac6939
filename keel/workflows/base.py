"""What every Keel workflow shares: ledger, context, gates, agent nodes and their handlers.

Handlers: query ``ledger``, query ``gates``, update ``review`` (a signed decision,
``keel.contracts.reviews``; validated, answers the caller) and signal ``review`` (same
payload; refused input is recorded, never fatal; a
signal of any other name, or one that cannot be decoded, is a recorded refusal too). Each
takes any number of arguments of any shape and refuses what it cannot use with a reason;
what a refusal records of the caller's input is bounded, and so is the number recorded.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Awaitable, Sequence
from typing import Any, NoReturn, TypeVar

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from keel.contracts.agent import canonical_json
    from keel.contracts.gates import GateView, ReviewReceipt
    from keel.contracts.ledger import (
        COMPLETION,
        InputRejected,
        LedgerEvent,
        ReviewRefused,
        WorkflowStarted,
    )

from keel.workflows.agent_node import AgentNodes
from keel.workflows.context import WorkflowContext
from keel.workflows.gates import (
    GateBook,
    Review,
    bounded_reasons,
    bounded_text,
    payload_digest,
    refusal,
)
from keel.workflows.ledger import Ledger
from keel.workflows.patches import decide_engine_patches, engine_patched
from keel.workflows.sealed import CONTINUED_KEY, continue_as_new_sealed, open_sealed_state

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


class KeelWorkflow:
    """Base class of scenario workflows (not a workflow itself)."""

    def __init__(self) -> None:
        decide_engine_patches(self)  # first, in every run: whichever way its run method goes
        self.ledger = Ledger()
        self.context = WorkflowContext(self.ledger)
        self.gate_book = GateBook(self.ledger)
        self.agents = AgentNodes(self.ledger, self.context, self.gate_book)
        self.refused_signals = 0
        """Review signals refused so far (only the first ``MAX_RECORDED_REFUSALS`` recorded)."""

    def start(self, raw_input: Any) -> None:
        """Record ``WorkflowStarted`` with a digest of the input as received. An input with
        no JSON form (bytes sent as ``binary/plain``, say) is recorded as such and fails the
        run, non-retryably."""
        info = workflow.info()
        try:
            digest = hashlib.sha256(canonical_json(raw_input).encode()).hexdigest()
            problem = None
        except (TypeError, ValueError, RecursionError) as err:
            digest, problem = "none: the input has no JSON form", bounded_text(str(err))
        self.ledger.record(
            WorkflowStarted(
                workflow=info.workflow_type,
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                input_sha256=digest,
            )
        )
        if problem is not None:
            self.reject_input([f"input has no JSON form ({type(raw_input).__name__}): {problem}"])

    async def resume(self, raw_input: Any) -> dict[str, Any] | None:
        """The state the previous run handed over with ``continue_as_new``, checked against
        the worker's signature; None on a first run.

        A run started with a forged or replayed state records ``WorkflowStarted`` and
        ``InputRejected`` and fails, non-retryably, before acting on any of it.
        """
        if not isinstance(raw_input, dict) or CONTINUED_KEY not in raw_input:
            return None
        state, problem = await open_sealed_state(raw_input[CONTINUED_KEY])
        if state is not None and set(raw_input) == {CONTINUED_KEY}:
            return state
        self.start(raw_input)
        self.reject_input([problem or f"a continued run's input holds only {CONTINUED_KEY!r}"])

    async def continue_as_new(self, state: dict[str, Any]) -> NoReturn:
        """Continue as a new run that receives ``state`` from ``resume``, sealed with the
        worker's signature so that no caller can start a run with a state of its own."""
        await continue_as_new_sealed(state)

    async def settle(self, result: R | Awaitable[R]) -> R:
        """Return ``result`` once every update and signal handler has finished, so no
        reviewer's call is cut off by the run completing, with the ledger's head signed (the
        result's ``ledger`` and ``ledger_head`` then include the signature).

        Given the run's body (an awaitable) instead of its result, a failure that ends the
        run (invalid input, an agent node's system failure, a failed child) also ends it
        with the ledger's head signed, so a failed run's ledger is as tamper-evident as a
        completed one's: ``return await self.settle(self._body(raw_input))``.
        """
        if inspect.isawaitable(result):
            try:
                result = await result
            except FailureError as err:
                if not isinstance(err, CancelledError) and engine_patched(SIGNED_FAILURES):
                    await self.ledger.sign_head(COMPLETION, final=True)
                raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self.gate_book.notifier.drain()
        await self.ledger.sign_head(COMPLETION, final=True)
        return self.ledger.refresh(result)

    def ingest(self, model: type[M], raw_input: Any, *, max_bytes: int) -> M:
        """Validate the input; a malformed one is recorded and fails the run, non-retryably.

        The reasons quote the caller's keys and values only in bounded form, and at most
        ``MAX_REASONS`` of them are kept (with a count of the rest), so a hostile start can
        push neither the ledger nor the failure past Temporal's limits."""
        size = len(canonical_json(raw_input).encode())
        if size > max_bytes:
            reasons = [f"input is {size} bytes; the limit is {max_bytes}"]
        else:
            try:
                return model.model_validate(raw_input)
            except ValidationError as err:
                reasons = bounded_reasons([_input_problem(e) for e in err.errors()])
        self.reject_input(reasons, what=model.__name__)

    def reject_input(self, reasons: list[str], *, what: str = "input") -> NoReturn:
        """Record ``InputRejected`` with ``reasons`` and fail the run, non-retryably, with
        ``invalid <what>: <reasons>`` (bounded): a start Keel will not act on."""
        self.ledger.record(InputRejected(reasons=reasons))
        raise ApplicationError(
            bounded_text(f"invalid {what}: " + "; ".join(reasons), MAX_FAILURE_CHARS),
            type="InvalidInput",
            non_retryable=True,
        )

    @workflow.query(name="ledger")
    def ledger_query(self, *args: Any) -> list[LedgerEvent]:
        """Every ledger event so far (the query takes no arguments)."""
        _no_arguments("ledger", args)
        return list(self.ledger.events)

    @workflow.query(name="gates")
    def gates_query(self, *args: Any) -> list[GateView]:
        """Every gate opened so far, with its state and verdict (no arguments)."""
        _no_arguments("gates", args)
        return self.gate_book.views()

    # The review handlers take ``*args``: Temporal calls a handler with however many
    # arguments the caller sent, and a signal handler that raises fails the workflow task.

    def requested_by(self, *subjects: str) -> None:
        """Name who asked for this execution's work (e.g. the input's ``requested_by``):
        they may decide none of its gates (separation of duties). Call before opening
        gates; the ledger's ``GateOpened`` records them."""
        for subject in subjects:
            if subject and subject not in self.gate_book.requesters:
                self.gate_book.requesters.append(subject)

    @workflow.update(name="review")
    def review_update(self, *args: Any) -> ReviewReceipt:
        """Decide a gate with a signed decision; refused input is rejected by the validator
        and changes nothing; a repeat (the same nonce) answers the first receipt."""
        review, reasons, repeat = self._check_review(args)
        if repeat is not None:
            return repeat
        if reasons or review is None:  # the validator ran first (it does not on replay)
            raise refusal(reasons or ["malformed review"])
        return self.gate_book.apply(review, via="update")

    @review_update.validator
    def validate_review(self, *args: Any) -> None:
        """Refuse a bad review before it reaches history (nothing changes)."""
        _, reasons, repeat = self._check_review(args)
        if reasons and repeat is None:
            raise refusal(reasons)

    @workflow.signal(dynamic=True)
    def on_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """Every signal the workflow has no handler of its own for. ``review`` does what the
        update does, for tools that can only signal; any other name, and any payload Keel
        cannot decode, is refused. Refusals go to the ledger, the first
        ``MAX_RECORDED_REFUSALS`` of them (bounded), then they are only counted.

        One dynamic handler, not a named one: the SDK drops a named signal it cannot decode
        without telling workflow code, and buffers a signal of an unknown name, unbounded,
        for a handler that may never come. Here both are refusals on record.
        """
        values, problem = _decoded(args)
        if name != "review":
            reasons = [f"this workflow takes no signal {bounded_text(name)!r}, only 'review'"]
        elif problem is not None:
            reasons = [problem]
        else:
            review, reasons, repeat = self._check_review(tuple(values))
            if repeat is not None:
                return  # the same decision again: already on record
            if review is not None and not reasons:
                self.gate_book.apply(review, via="signal")
                return
        self._refuse_signal(values, reasons, digest=_raw_digest(args) if problem else None)

    def _refuse_signal(
        self, values: list[Any], reasons: list[str], *, digest: str | None = None
    ) -> None:
        self.refused_signals += 1
        if self.refused_signals > MAX_RECORDED_REFUSALS:
            if self.refused_signals == MAX_RECORDED_REFUSALS + 1:
                workflow.logger.warning("refused signals are no longer recorded")
            return
        if self.refused_signals == MAX_RECORDED_REFUSALS:
            reasons = [
                *reasons,
                f"this is the {MAX_RECORDED_REFUSALS}th refused signal: later ones are "
                "not recorded in the ledger (Temporal's history keeps every signal)",
            ]
        payload = values[0] if len(values) == 1 else values
        raw = payload if isinstance(payload, dict) else {}
        self.ledger.record(
            ReviewRefused(
                gate=_quoted(raw.get("gate")),
                reviewer=_quoted(raw.get("reviewer")),
                via="signal",
                reasons=reasons or ["malformed review"],
                payload_sha256=digest or payload_digest(payload),
            )
        )

    def _check_review(
        self, args: tuple[Any, ...]
    ) -> tuple[Review | None, list[str], ReviewReceipt | None]:
        if len(args) != 1:
            return None, [f"a review is one JSON object; {len(args)} arguments were sent"], None
        return self.gate_book.check(args[0])


SIGNED_FAILURES = "keel-ledger-signed-failures"
"""Patch id: runs recorded before failed runs signed their head replay without it."""
MAX_RECORDED_REFUSALS = 20
"""Refused review signals recorded per run; a flood of bad signals cannot grow the ledger."""


MAX_LOCATION_PART_CHARS = 60
"""Longest key or index of an invalid input a refusal quotes whole."""
MAX_FAILURE_CHARS = 4000
"""Longest message of the failure an invalid input ends its run with."""


def _input_problem(error: Any) -> str:
    """One pydantic error as ``where: what``, the caller's keys cut to a bounded length."""
    where = ".".join(bounded_text(str(p), MAX_LOCATION_PART_CHARS) for p in error["loc"])
    return f"{where or 'input'}: {error['msg']}"


def _decoded(args: Sequence[RawValue]) -> tuple[list[Any], str | None]:
    """The signal's arguments as JSON values, or why one cannot be decoded."""
    converter = workflow.payload_converter()
    values = []
    for index, arg in enumerate(args):
        try:
            values.append(converter.from_payload(arg.payload))
        except Exception as err:  # the refusing converter's UndecodableInput, or any other
            text = err.message if isinstance(err, ApplicationError) else str(err)
            return [], f"argument {index + 1} cannot be decoded: {bounded_text(text)}"
    return values, None


def _raw_digest(args: Sequence[RawValue]) -> str:
    """sha256 over the raw bytes of every argument (what an undecodable signal held)."""
    digest = hashlib.sha256()
    for arg in args:
        digest.update(arg.payload.SerializeToString(deterministic=True))
    return digest.hexdigest()


def _quoted(value: Any) -> str | None:
    return None if value is None else bounded_text(value)


def _no_arguments(query: str, args: tuple[Any, ...]) -> None:
    if args:
        raise ApplicationError(
            f"the {query} query takes no arguments; {len(args)} were sent", type="QueryRefused"
        )
