"""Telling people of gate events, from workflow code, without holding the gate up.

``GateNotifier.gate_event(kind, view, channels)`` starts the notify activity
(``keel.notify.gate_event``) for each channel the gate's spec names and returns at once: a
receiver that is down delays its notification, never the gate. ``drain()`` waits for the
outstanding ones; ``KeelWorkflow.settle`` calls it before the run completes, since a run
that closes cancels its activities. A delivery that fails for good (an unknown channel, a
refused login) is logged and given up; it never fails the run.

Each activity is retried with backoff (1 s doubling to 10 min) for up to a day
(``NOTIFY_SCHEDULE_TO_CLOSE``), and the side-effect record makes every retry after a
delivery send nothing (``keel.activities.notify``). New behaviour, so behind
``workflow.patched("keel-gate-notifications")``: an execution whose history predates it
replays without the activities.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from keel.workflows.patches import engine_patched

with workflow.unsafe.imports_passed_through():
    from keel.contracts.gates import GateView
    from keel.contracts.notifications import (
        NOTIFY_ACTIVITY,
        NOTIFY_PATCH,
        GateEvent,
        GateEventKind,
        NotificationSent,
    )

NOTIFY_SCHEDULE_TO_CLOSE = timedelta(days=1)
NOTIFY_START_TO_CLOSE = timedelta(minutes=2)
NOTIFY_HEARTBEAT = timedelta(seconds=10)
"""An attempt whose worker died is retried this soon (the activity heartbeats every 2 s)."""
NOTIFY_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=0,  # bounded by NOTIFY_SCHEDULE_TO_CLOSE
)


class GateNotifier:
    """The notifications of one workflow execution."""

    def __init__(self) -> None:
        self._pending: list[asyncio.Task[NotificationSent]] = []
        self.sent: list[NotificationSent] = []
        self.failed: list[str] = []
        """Why deliveries were given up (one line each)."""

    def gate_event(self, kind: GateEventKind, view: GateView, channels: Sequence[str]) -> None:
        """Start telling ``channels`` that ``view``'s gate ``kind`` (opened, escalated,
        expired, decided); returns without waiting."""
        if not channels or not engine_patched(NOTIFY_PATCH):
            return
        info = workflow.info()
        # The event carries the view's fields it shares by name (gate, title, state,
        # reviewers, roles, deadline, decided_by, on_behalf_of, decision).
        shared = view.model_dump(mode="json", include=set(GateEvent.model_fields))
        for channel in dict.fromkeys(channels):
            event = GateEvent.model_validate(
                {
                    **shared,
                    "kind": kind,
                    "channel": channel,
                    "workflow_id": info.workflow_id,
                    "run_id": info.run_id,
                    "workflow_type": info.workflow_type,
                    "occurred_at": workflow.now(),
                }
            )
            self._pending.append(asyncio.ensure_future(self._deliver(event)))

    async def _deliver(self, event: GateEvent) -> NotificationSent:
        sent: NotificationSent = await workflow.execute_activity(
            NOTIFY_ACTIVITY,
            event,
            result_type=NotificationSent,
            schedule_to_close_timeout=NOTIFY_SCHEDULE_TO_CLOSE,
            start_to_close_timeout=NOTIFY_START_TO_CLOSE,
            heartbeat_timeout=NOTIFY_HEARTBEAT,
            retry_policy=NOTIFY_RETRIES,
            summary=f"notify {event.channel}: gate {event.gate} {event.kind}",
        )
        return sent

    @property
    def outstanding(self) -> int:
        """Deliveries started and not finished."""
        return sum(1 for task in self._pending if not task.done())

    async def drain(self) -> None:
        """Wait for every delivery started so far; failures are logged, never raised."""
        while self._pending:
            pending, self._pending = self._pending, []
            for outcome in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(outcome, NotificationSent):
                    self.sent.append(outcome)
                elif isinstance(outcome, ActivityError):
                    reason = str(outcome.cause or outcome)
                    self.failed.append(reason)
                    workflow.logger.warning("a gate notification was given up: %s", reason)
                elif isinstance(outcome, BaseException):
                    raise outcome
