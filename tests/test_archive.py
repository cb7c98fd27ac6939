"""The ledger archive on a real dev server: the archiver copies every closed execution's
ledger (each run of a continued one), verified; a second pass writes nothing; runs that
closed while no archiver ran are caught up in bounded batches; a run no worker could read
waits on the pending list until one can; the Schedule runs real passes; and once Temporal
no longer has an execution, ``keel ledger``, ``keel verify`` and ``keel audit`` read it
from the archive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, ScheduleOverlapPolicy, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from keel.activities.providers import ModelProvider
from keel.archive import ArchiveStore
from keel.contracts.archive import (
    ARCHIVE_SCHEDULE_ID,
    ARCHIVER_WORKFLOW,
    ArchivePassInput,
    ArchivePassResult,
)
from keel.offline import OfflineProvider
from keel.scenarios.incident import IncidentInvestigationWorkflow
from keel.testing import offline_settings
from keel.workers.apps import resolve_apps
from keel.workers.runtime import WORKER_DATA_CONVERTER, agent_node_activities, build_worker
from keel.workflows.archiver import ArchiverWorkflow
from tests.helpers import decide, review, run_keel, start_review, wait_for_gate
from tests.samples import load_sample
from tests.standins import ScriptedPlanner, StandInTools, plan, rollback, task
from tests.test_archive_probes import BadLedgerWorkflow, NoLedgerWorkflow

pytestmark = pytest.mark.integration

PG_URL = "postgresql://127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def archive_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield str(tmp_path / "archive.sqlite3")
        return
    schema = f"keel_archive_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


class Deployment:
    """Workers on fresh task queues sharing one archive and one data directory (so one
    signing key), and the environment of a ``keel`` subprocess that talks to them."""

    def __init__(self, env: WorkflowEnvironment, data_dir: Path, archive_url: str) -> None:
        self.client = env.client
        self.queues = [f"archive-{n}-{uuid.uuid4()}" for n in range(3)]
        self.settings = offline_settings(
            data_dir=data_dir, archive_url=archive_url, archive_task_queues=self.queues
        )
        self.cli_env = {
            **os.environ,
            "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "KEEL_CODEC": "off",
            "KEEL_DATA_DIR": str(data_dir),
            "KEEL_ARCHIVE_URL": archive_url,
            "KEEL_ARCHIVE_TASK_QUEUES": json.dumps(self.queues),
        }

    @asynccontextmanager
    async def worker(
        self,
        queue: str,
        *,
        provider: ModelProvider | None = None,
        tools: Sequence[Callable[..., Any]] = (),
        workflows: Sequence[type] = (),
    ) -> AsyncIterator[None]:
        nodes = agent_node_activities(self.settings, provider or OfflineProvider())
        try:
            async with build_worker(
                self.client,
                self.settings,
                apps=resolve_apps(),
                task_queue=queue,
                nodes=nodes,
                activities=list(tools),
                workflows=workflows,
            ):
                yield
        finally:
            await nodes.aclose()

    async def archive_pass(self, **request: Any) -> ArchivePassResult:
        """One archiver workflow run on the first queue (its worker must be running)."""
        result: ArchivePassResult = await self.client.execute_workflow(
            ARCHIVER_WORKFLOW,
            ArchivePassInput(**request),
            id=f"archiver-test-{uuid.uuid4()}",
            task_queue=self.queues[0],
            result_type=ArchivePassResult,
        )
        return result

    async def keel(self, *args: str, expect: int = 0) -> str:
        return await run_keel(*args, env=self.cli_env, expect=expect)

    async def status(self) -> dict[str, Any]:
        out = await self.keel("archive", "status", "-o", "json")
        status: dict[str, Any] = json.loads(out.splitlines()[-1])
        return status

    def archive(self) -> ArchiveStore:
        return ArchiveStore.open(self.settings)


@pytest.fixture
def deployment(dev_env: WorkflowEnvironment, tmp_path: Path, archive_url: str) -> Deployment:
    return Deployment(dev_env, tmp_path / "data", archive_url)


async def run_incident(deployment: Deployment, stack: AsyncExitStack) -> WorkflowHandle[Any, Any]:
    """An incident that continues as new twice (three runs), on the second queue; its
    worker stays up for the block of ``stack`` (a closed run that did not complete is
    read by its worker answering the ``ledger`` query)."""
    planner = ScriptedPlanner(
        plan(rollback("first")),
        plan(task("look", "metrics_lookup")),
        plan(task("notify", "update_incident"), done=True, summary="mitigated"),
    )
    queue = deployment.queues[1]
    tools = StandInTools().activities()
    await stack.enter_async_context(deployment.worker(queue, provider=planner, tools=tools))
    incident = await deployment.client.start_workflow(
        IncidentInvestigationWorkflow.run,
        {"page": {**load_sample("incident-page"), "continue_after_rounds": 1}},
        id=f"archive-incident-{uuid.uuid4()}",
        task_queue=queue,
    )
    await wait_for_gate(incident, "approve-first")
    await decide(incident, review("approve-first", "approve", "oncall.lead"))
    await incident.result()
    return incident


async def delete_from_temporal(client: Client, workflow_id: str, run_ids: Sequence[str]) -> None:
    """Delete every run of an execution, as retention would, and wait until it is gone."""
    for run_id in run_ids:
        await client.workflow_service.delete_workflow_execution(
            DeleteWorkflowExecutionRequest(
                namespace=client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
            )
        )
    async with asyncio.timeout(60):
        for run_id in run_ids:
            while True:
                try:
                    await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
                except RPCError as err:
                    assert err.status is RPCStatusCode.NOT_FOUND
                    break
                await asyncio.sleep(0.2)


async def test_the_archive_outlives_temporal(deployment: Deployment, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(deployment.worker(deployment.queues[0]))
        contract = await start_review(deployment.client, deployment.queues[0], "low")
        await contract.result()
        incident = await run_incident(deployment, stack)

        before = await deployment.status()
        assert before["unarchived"] == 4 and before["oldest_unarchived_age_seconds"] is not None
        first = await deployment.archive_pass()
        assert (first.archived, first.failed_verification, first.conflicts) == (4, 0, 0)
        again = await deployment.archive_pass()
        assert (again.archived, again.already) == (0, 4)

        after = await deployment.status()
        assert after["unarchived"] == 0 and after["oldest_unarchived_age_seconds"] is None
        counts = after["counts"]
        assert (counts["executions"], counts["runs"], counts["failed_verification"]) == (2, 4, 0)

        async with deployment.archive() as archive:
            chain = await archive.runs(incident.id)
            assert [r.status for r in chain] == ["CONTINUED_AS_NEW"] * 2 + ["COMPLETED"]
            assert all(run.verified for run in chain)
            (archived_contract,) = await archive.runs(contract.id)
        from_temporal = await deployment.keel("ledger", contract.id, "-o", "json")

    # Retention removes the oldest run first: the chain is read from Temporal and the archive.
    await delete_from_temporal(deployment.client, incident.id, [chain[0].run_id])
    mixed = await deployment.keel("verify", incident.id)
    assert f"{incident.id}: verified" in mixed
    # The first run from the archive; the second (continued as new: read by query) too, for
    # its worker is gone; the last from Temporal (its result).
    assert "read 2 of its 3 runs from the ledger archive" in mixed
    assert "Temporal no longer has them, or gives their ledgers only by a worker" in mixed
    await delete_from_temporal(deployment.client, contract.id, [archived_contract.run_id])
    await delete_from_temporal(deployment.client, incident.id, [r.run_id for r in chain[1:]])

    printed = await deployment.keel("ledger", contract.id, "-o", "json")
    assert f"read the ledger of '{contract.id}' from the ledger archive" in printed
    assert f"Temporal no longer has '{contract.id}'" in printed
    events = [line for line in printed.splitlines() if line.startswith("{")]
    assert events == [line for line in from_temporal.splitlines() if line.startswith("{")]
    assert len(events) == len(archived_contract.events)
    for workflow_id in (contract.id, incident.id):
        verified = await deployment.keel("verify", workflow_id)
        assert f"{workflow_id}: verified" in verified
        assert "from the ledger archive" in verified
    # keel export: Temporal's executions, then the archived ones Temporal no longer has.
    exported = tmp_path / "exported.jsonl"
    note = await deployment.keel(
        "export", "--out", str(exported), "--workflow-type", "ContractReview"
    )
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [
        r["event"] for r in lines if r["workflow_id"] == contract.id
    ] == archived_contract.events
    assert "from the ledger archive: Temporal no longer has them" in note
    only_temporal = tmp_path / "temporal.jsonl"
    await deployment.keel("export", "--out", str(only_temporal), "--source", "temporal")
    assert contract.id not in only_temporal.read_text()
    export = tmp_path / "archived.jsonl"
    await deployment.keel("archive", "export", contract.id, incident.id, "--out", str(export))
    offline = {**deployment.cli_env, "TEMPORAL_ADDRESS": "127.0.0.1:1"}  # no server needed
    checked = await run_keel("verify", str(export), env=offline, expect=0)
    assert f"{contract.id}: verified" in checked and f"{incident.id}: verified" in checked
    dossier = tmp_path / "dossier.html"
    await deployment.keel("audit", incident.id, "--out", str(dossier), "--no-pdf")
    assert incident.id in dossier.read_text()
    missing = await deployment.keel("ledger", f"never-{uuid.uuid4()}", expect=1)
    assert "in namespace 'default': not found, nor in the ledger archive" in missing


async def test_runs_closed_while_no_archiver_ran_are_caught_up_in_bounded_batches(
    deployment: Deployment,
) -> None:
    async with deployment.worker(deployment.queues[0]):
        empty = await deployment.archive_pass()
        assert empty.archived == 0 and empty.watermark is not None
        # The archiver is down (no pass runs) while three executions close.
        handles = [await start_review(deployment.client, deployment.queues[0], "low")]
        handles += [await start_review(deployment.client, deployment.queues[0], "low")]
        handles += [await start_review(deployment.client, deployment.queues[0], "low")]
        for handle in handles:
            await handle.result()
        assert (await deployment.status())["unarchived"] == 3

        caught_up = await deployment.archive_pass(batch_size=1, overlap_seconds=0)
        assert caught_up.archived == 3 and not caught_up.more
        assert caught_up.watermark is not None and caught_up.watermark > empty.watermark
    async with deployment.archive() as archive:
        assert set(await archive.executions()) == {handle.id for handle in handles}
    history = await deployment.client.get_workflow_handle(
        (await _latest_archiver(deployment.client, deployment.queues[0])).id
    ).fetch_history()
    batches = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert len(batches) >= 3  # one run per batch: the pass asked for the rest itself
    assert (await deployment.status())["unarchived"] == 0


async def _latest_archiver(client: Client, queue: str) -> Any:
    query = f"WorkflowType = '{ARCHIVER_WORKFLOW}' AND TaskQueue = '{queue}'"
    found = [e async for e in client.list_workflows(query)]
    return max(found, key=lambda e: e.start_time)


@pytest.mark.parametrize("archive_url", ["sqlite"], indirect=True)
async def test_a_run_no_worker_can_read_waits_on_the_pending_list_until_one_can(
    deployment: Deployment,
) -> None:
    """A terminated run has no result; its ledger is read by a worker of its own task queue
    replaying it. While none runs, the run is pending (the watermark moves on); once one
    does, the next pass archives it."""
    elsewhere = deployment.queues[2]
    async with deployment.worker(elsewhere):
        waiting = await start_review(deployment.client, elsewhere, "medium")
        await wait_for_gate(waiting, "standard-review")
    await waiting.terminate("the vendor withdrew")
    async with deployment.worker(deployment.queues[0]):
        unread = await deployment.archive_pass(query_timeout_seconds=2)
        assert (unread.archived, unread.pending) == (0, 1)
        status = await deployment.status()
        assert status["counts"]["pending"] == 1 and status["unarchived"] == 1
        async with deployment.worker(elsewhere):
            read = await deployment.archive_pass(query_timeout_seconds=10)
        assert (read.archived, read.pending, read.failed_verification) == (1, 0, 0)
    async with deployment.archive() as archive:
        (run,) = await archive.runs(waiting.id)
    assert run.status == "TERMINATED" and run.verified
    assert [e["type"] for e in run.events].count("GateOpened") == 1
    status = await deployment.status()
    assert status["counts"]["pending"] == 0 and status["unarchived"] == 0


@pytest.mark.parametrize("archive_url", ["sqlite"], indirect=True)
async def test_keel_archive_schedule_runs_real_passes(deployment: Deployment) -> None:
    client = deployment.client
    try:
        async with deployment.worker(deployment.queues[0]):
            contract = await start_review(client, deployment.queues[0], "low")
            await contract.result()
            created = await deployment.keel(
                "archive", "schedule", "--every", "3600", "--task-queue", deployment.queues[0]
            )
            assert f"schedule {ARCHIVE_SCHEDULE_ID} created: an archiver pass every 3600 s" in (
                created
            )
            updated = await deployment.keel(
                "archive",
                "schedule",
                "--task-queue",
                deployment.queues[0],
                "--trigger",
                "-o",
                "json",
            )
            assert json.loads(updated.splitlines()[-1]) == {
                "schedule": ARCHIVE_SCHEDULE_ID,
                "action": "updated",
                "every_seconds": 300,
                "task_queue": deployment.queues[0],
                "triggered": True,
            }
            schedule = await client.get_schedule_handle(ARCHIVE_SCHEDULE_ID).describe()
            assert schedule.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
            assert schedule.schedule.policy.catchup_window == timedelta(days=1)
            async with asyncio.timeout(60), deployment.archive() as archive:
                while not await archive.runs(contract.id):
                    await asyncio.sleep(0.5)
            scheduled = await _latest_archiver(client, deployment.queues[0])
            assert scheduled.id.startswith(f"{ARCHIVE_SCHEDULE_ID}-pass")
            result = await client.get_workflow_handle(scheduled.id).result()
            assert result["archived"] == 1
    finally:
        with contextlib.suppress(RPCError):  # not created: the test failed before
            await client.get_schedule_handle(ARCHIVE_SCHEDULE_ID).delete()


@pytest.mark.parametrize("archive_url", ["sqlite"], indirect=True)
async def test_keel_archive_run_passes_on_a_worker_and_its_history_replays(
    deployment: Deployment,
) -> None:
    async with deployment.worker(deployment.queues[0]):
        contract = await start_review(deployment.client, deployment.queues[0], "low")
        await contract.result()
        out = await deployment.keel("archive", "run", "--task-queue", deployment.queues[0])
        assert "archived 1 runs (0 held already, 0 flagged" in out
        again = await deployment.keel(
            "archive", "run", "--task-queue", deployment.queues[0], "-o", "json"
        )
        assert json.loads(again.splitlines()[-1])["already"] == 1
        asked = await deployment.keel("ledger", contract.id, "--from-archive")
        assert f"read the ledger of '{contract.id}' from the ledger archive" in asked
        assert ", as asked" in asked
    nobody = await deployment.keel("archive", "run", "--task-queue", "nobody-here", expect=1)
    assert "no worker polls task queue 'nobody-here'" in nobody
    history = await deployment.client.get_workflow_handle("keel-archiver").fetch_history()
    await Replayer(
        workflows=[ArchiverWorkflow], data_converter=WORKER_DATA_CONVERTER
    ).replay_workflow(history)


@pytest.mark.parametrize("archive_url", ["sqlite"], indirect=True)
async def test_a_run_whose_ledger_cannot_be_taken_never_blocks_the_others(
    deployment: Deployment,
) -> None:
    probes: list[Any] = [NoLedgerWorkflow, BadLedgerWorkflow]
    async with deployment.worker(deployment.queues[0], workflows=probes):
        for probe in probes:
            with contextlib.suppress(WorkflowFailureError):
                await deployment.client.execute_workflow(
                    probe.run, id=f"probe-{uuid.uuid4()}", task_queue=deployment.queues[0]
                )
        contract = await start_review(deployment.client, deployment.queues[0], "low")
        await contract.result()
        result = await deployment.archive_pass()
        assert (result.archived, result.no_ledger, result.pending) == (1, 1, 1)
        again = await deployment.archive_pass()
        assert (again.archived, again.already, again.no_ledger, again.pending) == (0, 1, 0, 1)
    async with deployment.archive() as archive:
        assert await archive.executions() == [contract.id]
        (pending,) = await archive.pending(10)
        assert pending.workflow_type == "ArchiveProbeBadLedger" and pending.attempts == 2
        assert pending.reason.startswith("not archived:")
        (not_keel,) = await archive.pending(10, kind="no-ledger")
        assert "it answers no ledger query" in not_keel.reason


@pytest.mark.parametrize("archive_url", ["sqlite"], indirect=True)
async def test_a_continued_run_waits_for_the_run_before_it(deployment: Deployment) -> None:
    """The incident's completed last run is readable from its result, but the two runs it
    continues need their worker to replay them: while it is down, all three wait (none is
    archived with a link it could not check); once it is back, all three verify."""
    async with AsyncExitStack() as stack:
        incident = await run_incident(deployment, stack)
    async with deployment.worker(deployment.queues[0]):
        waiting = await deployment.archive_pass(query_timeout_seconds=2)
        assert (waiting.archived, waiting.pending) == (0, 3)
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(
                deployment.worker(deployment.queues[1], tools=StandInTools().activities())
            )
            done = await deployment.archive_pass(query_timeout_seconds=10)
        assert (done.archived, done.pending, done.failed_verification) == (3, 0, 0)
    async with deployment.archive() as archive:
        chain = await archive.runs(incident.id)
        assert len(chain) == 3 and all(run.verified for run in chain)
        assert (await archive.counts()).pending == 0


async def test_keel_dev_archives_by_itself(tmp_path: Path) -> None:
    """The embedded default: ``keel dev`` creates the schedule (on its worker's queue), and
    a pass fills ``$KEEL_DATA_DIR/archive.sqlite3``."""
    from tests.conftest import free_port
    from tests.test_dev_and_demo import DevStack, keel, sample_file, stack_env

    env = {**stack_env(tmp_path, free_port(), free_port()), "KEEL_INBOX_PORT": "0"}
    env["KEEL_PROGRESS_PORT"] = "0"
    contract = sample_file(tmp_path, "contract_review", "contract-low-risk")
    async with DevStack(env):
        code, out = await keel(
            env, "start", "contract-review", "--input", str(contract), "--id", "c-1"
        )
        assert code == 0, out
        code, out = await keel(env, "archive", "schedule", "-o", "json")
        assert code == 0 and json.loads(out.splitlines()[-1])["action"] == "updated", out
        archived = 0
        async with asyncio.timeout(60):
            while not archived:  # until the review has completed and a pass took it
                code, out = await keel(env, "archive", "run", "-o", "json")
                assert code == 0, out
                archived = json.loads(out.splitlines()[-1])["archived"]
    assert (tmp_path / "data" / "archive.sqlite3").is_file()
    async with ArchiveStore.open(offline_settings(data_dir=tmp_path / "data")) as archive:
        (run,) = await archive.runs("c-1")
    assert run.status == "COMPLETED" and run.verified
