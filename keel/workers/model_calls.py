"""Where a worker's model calls run, and how many at once.

An agent-node attempt is one activity (DESIGN.md, cost model). On the workflow's own task
queue the server hands that activity back in the workflow-task completion (eager dispatch):
no trip through matching, which costs 2-3 ms on a cluster and up to 50 ms on the one-shard
dev server. So model calls (and the prompt-injection classifier, I/O like them) run on the
workflow's own queue, unless ``KEEL_MODEL_CALLS_PER_SECOND`` is set: a server-side rate limit
holds only on a queue of its own, so then they go to ``model_queue(queue)``.

Replay: the queue of each call is recorded in its ``ActivityTaskScheduled`` event; a replay
does not compare it with the queue the code asks for now (``tests/test_model_queue.py``
replays across the switch), and a retry runs on the queue recorded. So the choice can change
between deploys; what must not happen is a call left on a queue nobody polls. Every worker
therefore registers the model activities on both queues: the model queue with the rate limit
when one is set, else with one poller that drains what a rate-limited deploy left there.

The per-process bound (``KEEL_MAX_CONCURRENT_MODEL_CALLS``) was the model queue's activity
slots; on a shared queue it is a semaphore every model call of the worker takes, both
queues together. A call waiting for it heartbeats, so its heartbeat timeout does not end it;
the wait counts towards the call's start-to-close timeout (the contract's time budget).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from keel.contracts.agent_node import AGENT_NODE_ACTIVITY
from keel.contracts.guardrails import CLASSIFIER_ACTIVITY
from keel.contracts.names import MODEL_QUEUE_ROUTE, model_queue
from keel.settings import KeelSettings

MODEL_ACTIVITIES = frozenset({AGENT_NODE_ACTIVITY, CLASSIFIER_ACTIVITY})
"""Activities bound by ``KEEL_MAX_CONCURRENT_MODEL_CALLS`` and routed as model calls."""

WAIT_HEARTBEAT_SECONDS = 2.0
"""How often a call waiting for the concurrency bound heartbeats (after the first wait)."""


def separate_model_queue(settings: KeelSettings) -> bool:
    """Model calls go to their own queue: only under a server-side rate limit."""
    return settings.model_calls_per_second is not None


class ModelCalls(Interceptor):
    """A worker's routing of model calls (to workflow code) and bound on them (activities).

    Register one instance on every Temporal worker of one Keel worker: they share the bound.
    """

    def __init__(
        self,
        *,
        separate_queue: bool,
        max_concurrent: int,
        names: Collection[str] = MODEL_ACTIVITIES,
    ) -> None:
        self.separate_queue = separate_queue
        self.max_concurrent = max_concurrent
        self.names = frozenset(names)
        self._slots: asyncio.Semaphore | None = None  # made in the worker's event loop
        self.in_flight = 0
        """Model calls running now (past the bound), for tests and metrics."""

    def __repr__(self) -> str:
        where = "own queue" if self.separate_queue else "workflow's queue"
        return f"ModelCalls({where}, at most {self.max_concurrent} at once)"

    def route(self, task_queue: str) -> str:
        """The queue of the model calls of workflows on ``task_queue``."""
        return model_queue(task_queue) if self.separate_queue else task_queue

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        """Expose ``route`` to workflow code (no workflow interceptor is added)."""
        input.unsafe_extern_functions[MODEL_QUEUE_ROUTE] = self.route
        return None

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Bound the model activities."""
        return _BoundedModelCall(next, self)

    def slots(self) -> asyncio.Semaphore:
        """The semaphore of the bound (created on first use, in the running loop)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent)
        return self._slots


class _BoundedModelCall(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, calls: ModelCalls) -> None:
        super().__init__(next)
        self.calls = calls

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if activity.info().activity_type not in self.calls.names:
            return await super().execute_activity(input)
        slots = self.calls.slots()
        await acquire_heartbeating(slots, activity.heartbeat)
        self.calls.in_flight += 1
        try:
            return await super().execute_activity(input)
        finally:
            self.calls.in_flight -= 1
            slots.release()


async def acquire_heartbeating(
    slots: asyncio.Semaphore,
    heartbeat: Callable[[], None],
    every: float = WAIT_HEARTBEAT_SECONDS,
) -> None:
    """Take a slot of ``slots``, heartbeating every ``every`` seconds while waiting (an
    uncontended slot is taken at once, with no heartbeat). Cancelled, it holds no slot."""
    if not slots.locked():
        await slots.acquire()  # free: returns without yielding
        return
    waiter = asyncio.ensure_future(slots.acquire())
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=every)
            if done:
                waiter.result()
                return
            heartbeat()
    except BaseException:
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            slots.release()  # acquired just as the wait was cancelled
        else:
            waiter.cancel()
        raise
