"""Where model calls run: on the workflow's own task queue, dispatched eagerly in the
workflow-task completion, unless a server-side rate limit is configured; then on their own
queue, where the limit holds across a burst. The choice can change between deploys without
breaking a replay or stranding a call; the per-process bound on concurrent model calls holds
either way; a short call sends no heartbeat."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer

from keel.activities import AgentNodeActivities
from keel.activities import agent_node as agent_node_activity
from keel.activities.providers.base import ModelReply, ModelRequest
from keel.contracts.agent_node import AGENT_NODE_ACTIVITY, AgentNodeRequest
from keel.contracts.names import model_queue
from keel.offline import OfflineFault, OfflineProvider
from keel.scenarios.contract_review.contracts import RISK_CLASSIFIER
from keel.workers.apps import resolve_apps, workflows_of
from keel.workers.model_calls import ModelCalls, acquire_heartbeating
from keel.workers.runtime import WORKER_DATA_CONVERTER, build_worker, workflow_runner
from tests.conftest import offline_settings
from tests.helpers import start_review


def scheduled_queues(history: WorkflowHistory) -> list[str]:
    """The task queue of every activity the run scheduled, in order."""
    return [
        e.activity_task_scheduled_event_attributes.task_queue.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == AGENT_NODE_ACTIVITY
    ]


async def replay(history: WorkflowHistory, *, separate_queue: bool) -> None:
    """Replay ``history`` as a worker routing model calls one way or the other would."""
    calls = ModelCalls(separate_queue=separate_queue, max_concurrent=4)
    await Replayer(
        workflows=workflows_of(resolve_apps()),
        workflow_runner=workflow_runner(),
        data_converter=WORKER_DATA_CONVERTER,
        interceptors=[calls],
    ).replay_workflow(history)


async def test_without_a_rate_limit_model_calls_run_eagerly_on_the_workflow_queue(
    dev_env: WorkflowEnvironment,
) -> None:
    # A client of its own, whose runtime buffers the SDK's metrics: the worker counts each
    # activity task it received, labelled with whether the server handed it over eagerly.
    metrics = MetricBuffer(10_000)
    config = dev_env.client.config()
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=config["namespace"],
        data_converter=config["data_converter"],
        runtime=Runtime(telemetry=TelemetryConfig(metrics=metrics)),
    )
    task_queue = f"eager-{uuid.uuid4()}"
    async with build_worker(
        client, offline_settings(), apps=resolve_apps(), task_queue=task_queue
    ) as worker:
        assert not worker.calls.separate_queue
        handle = await start_review(client, task_queue, "low", prefix="eager")
        assert (await handle.result()).outcome == "approved"
    assert scheduled_queues(await handle.fetch_history()) == [task_queue]
    received = [
        dict(update.attributes)
        for update in metrics.retrieve_updates()
        if update.metric.name == "temporal_activity_task_received"
        and update.attributes.get("activity_type") == AGENT_NODE_ACTIVITY
    ]
    assert received and all(r["eager"] is True for r in received), received


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
        assert scheduled_queues(history) == [model_queue(task_queue)]
        started = next(
            e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        )
        starts.append(started.event_time.ToDatetime())
    # Six calls at two per second cannot all start within the first second and a half.
    span = (max(starts) - min(starts)).total_seconds()
    assert span >= 1.5, f"model calls started within {span:.2f} s despite a 2/s limit"


async def pending_attempt(handle: WorkflowHandle[Any, Any]) -> int:
    described = await handle.describe()
    pending = described.raw_description.pending_activities
    return pending[0].attempt if pending else 0


async def test_a_call_left_on_the_model_queue_by_a_rate_limited_deploy_completes_and_replays(
    dev_env: WorkflowEnvironment,
) -> None:
    client = dev_env.client
    task_queue = f"switch-{uuid.uuid4()}"
    # The rate-limited deploy: its first call is rate-limited by the provider (Retry-After
    # 1 s), so the retry waits on the model queue when this deploy goes away.
    limited = offline_settings(model_calls_per_second=50.0)
    fault = OfflineFault(kind="rate_limit", activity_attempts=[1], retry_after_seconds=1.0)
    async with build_worker(
        client,
        limited,
        apps=resolve_apps(),
        task_queue=task_queue,
        provider=OfflineProvider([fault]),
    ):
        handle = await start_review(client, task_queue, "low", prefix="switch")
        for _ in range(200):
            if await pending_attempt(handle) >= 2:
                break
            await asyncio.sleep(0.05)
        assert await pending_attempt(handle) >= 2, "the first model call did not fail"
    # The next deploy: no rate limit. It drains the model queue and runs new calls eagerly.
    async with build_worker(
        client, offline_settings(), apps=resolve_apps(), task_queue=task_queue
    ) as worker:
        assert not worker.calls.separate_queue
        assert (await handle.result()).outcome == "approved"
        after = await start_review(client, task_queue, "low", prefix="switch-after")
        assert (await after.result()).outcome == "approved"
    history = await handle.fetch_history()
    assert scheduled_queues(history) == [model_queue(task_queue)]
    assert scheduled_queues(await after.fetch_history()) == [task_queue]
    # Whichever way the replaying worker routes, the recorded runs replay.
    for recorded in (history, await after.fetch_history()):
        for separate_queue in (False, True):
            await replay(recorded, separate_queue=separate_queue)


class CountingProvider:
    """Answers like the offline model after ``delay`` seconds, counting calls in flight."""

    name = "counting"
    model = "offline-after-a-delay"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.offline = OfflineProvider()
        self.in_flight = 0
        self.most = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return await self.offline.complete(request)
        finally:
            self.in_flight -= 1


async def test_the_bound_on_concurrent_model_calls_holds_on_the_shared_queue(
    dev_env: WorkflowEnvironment,
) -> None:
    client = dev_env.client
    task_queue = f"bound-{uuid.uuid4()}"
    provider = CountingProvider(delay=0.3)
    settings = offline_settings(max_concurrent_model_calls=2)
    async with build_worker(
        client, settings, apps=resolve_apps(), task_queue=task_queue, provider=provider
    ):
        handles = [await start_review(client, task_queue, "low", prefix="bound") for _ in range(6)]
        results = await asyncio.gather(*(h.result() for h in handles))
    assert [r.outcome for r in results] == ["approved"] * 6
    assert provider.most == 2


def node_request() -> AgentNodeRequest:
    return AgentNodeRequest(
        contract=RISK_CLASSIFIER.key,
        contract_fingerprint=RISK_CLASSIFIER.fingerprint,
        node="classify-risk",
        input={
            "vendor": "Acme",
            "title": "Hosting",
            "annual_value_usd": 1000,
            "term_months": 12,
            "jurisdiction": "US-DE",
            "clauses": [],
        },
        attempt=1,
    )


async def heartbeats_of_a_call(delay: float) -> list[Any]:
    """The heartbeats the agent-node activity sends around a model call of ``delay`` s."""
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    decision = await env.run(
        AgentNodeActivities(CountingProvider(delay)).run_agent_node, node_request()
    )
    assert decision.output is not None
    return beats


async def test_a_short_model_call_sends_no_heartbeat_and_a_long_one_does(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(agent_node_activity, "HEARTBEAT_EVERY_SECONDS", 0.05)
    assert await heartbeats_of_a_call(0.0) == []
    assert len(await heartbeats_of_a_call(0.4)) >= 2


async def test_a_call_waiting_for_the_bound_heartbeats_and_a_cancelled_wait_takes_none() -> None:
    slots = asyncio.Semaphore(1)
    await acquire_heartbeating(slots, lambda: None)  # free: taken at once
    beats: list[int] = []
    waiter = asyncio.create_task(acquire_heartbeating(slots, lambda: beats.append(1), every=0.02))
    while len(beats) < 2:
        await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    slots.release()
    assert not slots.locked()  # the cancelled waiter took nothing
    second = asyncio.create_task(acquire_heartbeating(slots, lambda: None, every=0.02))
    await second
    assert slots.locked()
