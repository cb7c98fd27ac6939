"""Model calls run on their own task queue, where a rate limit set by the workers holds
across a burst: calls queue instead of overwhelming the provider."""

from __future__ import annotations

import asyncio
import uuid

from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from keel.contracts.names import model_queue
from keel.offline import OfflineProvider
from keel.workers.apps import resolve_apps
from keel.workers.runtime import build_worker
from tests.conftest import offline_settings
from tests.helpers import start_review


async def test_a_burst_of_model_calls_respects_the_rate_limit(dev_env: WorkflowEnvironment) -> None:
    client = dev_env.client
    task_queue = f"rate-{uuid.uuid4()}"
    settings = offline_settings(model_calls_per_second=2.0)
    async with build_worker(
        client, settings, apps=resolve_apps(), task_queue=task_queue, provider=OfflineProvider()
    ):
        handles = [await start_review(client, task_queue, "low", prefix="rate") for _ in range(6)]
        results = await asyncio.gather(*(h.result() for h in handles))
    assert [r.outcome for r in results] == ["approved"] * 6
    starts = []
    for handle in handles:
        history = await handle.fetch_history()
        scheduled = [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ]
        assert scheduled[0].activity_task_scheduled_event_attributes.task_queue.name == (
            model_queue(task_queue)
        )
        started = next(
            e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        )
        starts.append(started.event_time.ToDatetime())
    # Six calls at two per second cannot all start within the first second and a half.
    span = (max(starts) - min(starts)).total_seconds()
    assert span >= 1.5, f"model calls started within {span:.2f} s despite a 2/s limit"
