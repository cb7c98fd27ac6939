"""Supplier ingestion on the time-skipping server: a thousand records in bounded batches,
continuing as new every 100, each record looked up and enriched once, every progress event in
the Redis Stream once and in order, each run's history under the documented bound.

The helpers here read what a user could check: every run's history (through the history API,
following the continue-as-new links back from the latest run) and the whole Redis stream.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer

from keel.cli.commands import full_chain
from keel.contracts.agent_node import AGENT_NODE_ACTIVITY
from keel.contracts.ledger import verify_chain
from keel.progress.activities import ProgressActivities
from keel.progress.events import ProgressEvent
from keel.progress.stream import ProgressStream
from keel.scenarios.ingestion import APP, SupplierIngestionWorkflow
from keel.scenarios.ingestion.contracts import Lookup
from keel.scenarios.ingestion.fixtures import PAGES, job
from keel.scenarios.ingestion.tools import LOOKUP_PAGE, SupplierPages
from keel.settings import KeelSettings
from keel.testing import keel_worker, offline_settings
from keel.workers.apps import workflows_of
from keel.workers.runtime import WORKER_DATA_CONVERTER

REDIS_URL = "redis://127.0.0.1:6379/0"
HISTORY_BOUND_PER_RECORD = 12
HISTORY_BOUND_PER_RUN = 100
"""docs/ingestion.md: a run of R records has at most 12 R + 100 history events."""


def fresh_prefix() -> str:
    """A stream key prefix of this test alone."""
    return f"keel-test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def stream() -> AsyncIterator[ProgressStream]:
    """A progress stream store under a fresh key prefix (removed after the test)."""
    store = ProgressStream.open(REDIS_URL, prefix=fresh_prefix())
    yield store
    keys = [key async for key in store.redis.scan_iter(f"{store.prefix}:*")]
    if keys:
        await store.redis.delete(*keys)
    await store.aclose()


def settings_for(stream: ProgressStream) -> KeelSettings:
    return offline_settings(progress_stream_prefix=stream.prefix, redis_url=REDIS_URL)


async def run_histories(client: Client, workflow_id: str) -> list[History]:
    """Every run's history, oldest first, following each run's link to the one before."""
    histories: list[History] = []
    run_id: str | None = None
    while True:
        fetched = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.insert(0, History(events=list(fetched.events)))
        started = fetched.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id or None
        if run_id is None:
            return histories


def completions(histories: list[History], activity_type: str, key: str) -> Counter[str]:
    """How many times an activity of ``activity_type`` completed, per ``input[key]``."""
    counts: Counter[str] = Counter()
    for history in histories:
        scheduled: dict[int, str] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                if attrs.activity_type.name == activity_type:
                    payload = json.loads(attrs.input.payloads[0].data)
                    scheduled[event.event_id] = payload[key]
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                attrs_done = event.activity_task_completed_event_attributes
                if attrs_done.scheduled_event_id in scheduled:
                    counts[scheduled[attrs_done.scheduled_event_id]] += 1
    return counts


def assert_complete_stream(events: list[ProgressEvent], workflow_id: str, count: int) -> None:
    """Seq 1..N with ids ``<workflow id>:<seq>``, one record event per record in order,
    exactly one final event, last."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(e.id == f"{workflow_id}:{e.seq}" for e in events)
    records = [e.data["record_id"] for e in events if e.kind == "record"]
    assert records == [f"SUP-{n:05d}" for n in range(1, count + 1)]
    assert [e.final for e in events].count(True) == 1 and events[-1].final
    assert events[-1].kind == "finished" and events[-1].done == count
    assert [e.done for e in events] == sorted(e.done for e in events)


def assert_once_each(counts: Counter[str], expected: set[str]) -> None:
    """Each of ``expected`` counted exactly once, and nothing else."""
    assert set(counts) == expected, sorted(set(counts) ^ expected)[:10]
    twice = sorted(key for key, count in counts.items() if count != 1)
    assert not twice, f"completed more than once: {twice[:10]}"


def assert_history_bounded(histories: list[History], records_per_run: int) -> None:
    """Every run's history is under the bound docs/ingestion.md states."""
    bound = HISTORY_BOUND_PER_RECORD * records_per_run + HISTORY_BOUND_PER_RUN
    sizes = [len(h.events) for h in histories]
    assert max(sizes) <= bound, f"history events per run {sizes}, bound {bound}"


def fast_pages(folder: Path) -> list[Any]:
    """The lookup over a copy of the fixture pages without their slow sites (real seconds
    the time-skipping server cannot skip), and the progress append over ``stream``."""
    folder.mkdir()
    for page in PAGES.glob("*.json"):
        raw = json.loads(page.read_text())
        raw.pop("fetch_seconds", None)
        (folder / page.name).write_text(json.dumps(raw))
    return SupplierPages(folder).activities()


async def test_a_thousand_records_are_each_enriched_once_in_bounded_runs(
    keel_env: WorkflowEnvironment, stream: ProgressStream, tmp_path: Path
) -> None:
    client = keel_env.client
    workflow_id = f"ingest-{uuid.uuid4().hex[:8]}"
    tools = [*fast_pages(tmp_path / "pages"), *ProgressActivities(stream).activities()]
    async with keel_worker(client, apps=[APP], activities=tools) as task_queue:
        handle = await client.start_workflow(
            SupplierIngestionWorkflow.run,
            job("big", "A thousand suppliers", 1000, batch_size=20, records_per_run=100),
            id=workflow_id,
            task_queue=task_queue,
        )
        result = await handle.result()
        histories = await run_histories(client, workflow_id)
        chain = await full_chain(client, workflow_id)
        progress = await handle.query("progress")
        metadata = await handle.query("__temporal_workflow_metadata")
        replayer = Replayer(workflows=workflows_of([APP]), data_converter=WORKER_DATA_CONVERTER)
        for history in histories:  # every run replays: continue-as-new, the sealed state
            replayed = await replayer.replay_workflow(
                WorkflowHistory(workflow_id, list(history.events)), raise_on_replay_failure=False
            )
            assert replayed.replay_failure is None, replayed.replay_failure

    assert (result.total, result.runs, result.batches) == (1000, 10, 50)
    assert result.enriched + result.defaulted + result.denied == 1000
    assert result.denied == 3  # SUP-00137, -00437, -00737: a page that instructs the model
    assert len(histories) == 10
    assert_history_bounded(histories, 100)
    ids = {f"SUP-{n:05d}" for n in range(1, 1001)}
    agent_calls = completions(histories, AGENT_NODE_ACTIVITY, "node")
    assert_once_each(agent_calls, ids - set(_denied(chain)))
    lookups = completions(histories, LOOKUP_PAGE, "record_id")
    assert_once_each(lookups, ids)

    events = await stream.all(workflow_id)
    assert_complete_stream(events, workflow_id, 1000)
    assert [e.kind for e in events].count("continued") == 9
    assert result.last_event_id == events[-1].id and result.progress_events == len(events)
    assert progress["done"] == 1000 and progress["last_event_id"] == events[-1].id
    assert metadata.current_details.startswith("**1000 of 1000** records (100%), finished")

    assert verify_chain(chain).ok  # one hash chain from the genesis across the ten runs
    decided = Counter(e.node for e in chain if e.type == "AgentDecided")  # type: ignore[attr-defined]
    assert set(decided.values()) == {1} and len(decided) == len(agent_calls)


def _denied(chain: list[Any]) -> list[str]:
    return [e.node for e in chain if e.type == "PolicyApplied" and e.action == "deny"]


async def test_a_job_with_a_record_twice_is_refused_before_anything_runs(
    keel_env: WorkflowEnvironment, stream: ProgressStream
) -> None:
    payload = job("dup", "Twice", 3)
    payload["records"].append(dict(payload["records"][0]))
    async with keel_worker(keel_env.client, apps=[APP], settings=settings_for(stream)) as queue:
        handle = await keel_env.client.start_workflow(
            SupplierIngestionWorkflow.run,
            payload,
            id=f"dup-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidInput"
    assert "repeated: SUP-00001" in cause.message
    assert await stream.all(handle.id) == []


async def test_a_slow_site_is_waited_for_with_heartbeats_and_no_page_is_read_outside(
    tmp_path: Path,
) -> None:
    page = {
        "domain": "slow.example",
        "title": "Slow",
        "description": "A slow site.",
        "keywords": ["freight"],
        "fetch_seconds": 2.2,
    }
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "slow.example.json").write_text(json.dumps(page))
    (tmp_path / "outside.json").write_text(json.dumps(page))
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    tool = SupplierPages(pages)
    found = await env.run(tool.lookup_page, Lookup(record_id="SUP-00001", domain="slow.example"))
    assert found is not None and found.keywords == ["freight"]
    assert len(beats) >= 3 and "waiting for slow.example" in beats[0][0]
    assert (
        await env.run(tool.lookup_page, Lookup(record_id="SUP-00002", domain="../outside")) is None
    )
    assert (
        await env.run(tool.lookup_page, Lookup(record_id="SUP-00003", domain="gone.example"))
        is None
    )


async def test_a_worker_says_at_once_when_the_progress_redis_does_not_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from keel.scenarios.ingestion import open_activities
    from keel.workers.app import AppContext
    from tests.conftest import free_port

    settings = offline_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with open_activities(AppContext(settings)) as activities:
        assert len(activities) == 2
    err = capsys.readouterr().err
    assert "ingestion: the progress stream's Redis at redis://127.0.0.1:" in err
    assert "ingestion runs wait for it: start Redis or set KEEL_REDIS_URL" in err
    async with open_activities(AppContext(offline_settings(redis_url=REDIS_URL))):
        pass
    assert capsys.readouterr().err == ""
