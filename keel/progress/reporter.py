"""The workflow side of the progress stream: number events, show them, append them.

Workflow code (deterministic): events get their seq and time (``workflow.now()``) here, so
a replay builds the same events and a retried append carries the same ones. The count and
the last event are also shown as the execution's current details in the Temporal UI and
answered by the ``progress`` query (``view``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from keel.progress.events import (
        APPEND_ACTIVITY,
        MAX_EVENTS_PER_APPEND,
        AppendProgress,
        EventKind,
        ProgressEvent,
        ProgressView,
        event_id,
    )

APPEND_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
"""Unlimited: an append is idempotent, and progress must not be dropped while Redis is down."""


class ProgressReporter:
    """One workflow's progress: a counter, the events not yet appended, the last message."""

    def __init__(self) -> None:
        self.seq = 0
        self.done = 0
        self.total = 0
        self.run = 1
        self.message = "starting"
        self.finished = False
        self.pending: list[ProgressEvent] = []

    def restore(self, *, seq: int, done: int, total: int, run: int) -> None:
        """Continue where the previous run (continue-as-new) left off."""
        self.seq, self.done, self.total, self.run = seq, done, total, run

    def add(
        self,
        kind: EventKind,
        message: str,
        data: dict[str, Any] | None = None,
        *,
        final: bool = False,
    ) -> ProgressEvent:
        """Number a new event, queue it for the next ``flush``, show it in the UI."""
        self.seq += 1
        workflow_id = workflow.info().workflow_id
        event = ProgressEvent(
            id=event_id(workflow_id, self.seq),
            seq=self.seq,
            workflow_id=workflow_id,
            kind=kind,
            done=self.done,
            total=self.total,
            message=message[:500],
            at=workflow.now(),
            run=self.run,
            data=data or {},
            final=final,
        )
        self.pending.append(event)
        self.message = event.message
        self.finished = self.finished or final
        workflow.set_current_details(self.details())
        return event

    async def flush(self) -> None:
        """Append the queued events to the workflow's stream (an activity, retried until it
        succeeds; a retry adds nothing twice)."""
        while self.pending:
            chunk = self.pending[:MAX_EVENTS_PER_APPEND]
            await workflow.execute_activity(
                APPEND_ACTIVITY,
                AppendProgress(workflow_id=chunk[0].workflow_id, events=chunk),
                # An append takes milliseconds: a worker that died mid-append is retried soon.
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=APPEND_RETRIES,
                summary=f"progress {chunk[0].seq}-{chunk[-1].seq}",
            )
            del self.pending[: len(chunk)]

    def details(self) -> str:
        """The execution's current details (Markdown) for the Temporal UI."""
        share = f" ({100 * self.done // self.total}%)" if self.total else ""
        state = "finished" if self.finished else f"run {self.run}"
        return f"**{self.done} of {self.total}** records{share}, {state}: {self.message}"

    def view(self) -> ProgressView:
        """What the ``progress`` query answers."""
        workflow_id = workflow.info().workflow_id
        return ProgressView(
            workflow_id=workflow_id,
            done=self.done,
            total=self.total,
            run=self.run,
            last_event_id=event_id(workflow_id, self.seq) if self.seq else None,
            message=self.message,
            finished=self.finished,
        )
