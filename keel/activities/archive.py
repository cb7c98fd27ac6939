"""The archive pass: copy the ledgers of executions that closed since the watermark.

One call is one bounded pass (``ArchivePassInput.batch_size`` runs at most, heartbeating
after each):

1. retry the pending runs (ledgers that could not be read by an earlier pass);
2. list the closed runs whose close time is at or after the watermark less the overlap
   (visibility is eventually consistent: a run may show up after runs that closed later),
   in a time window narrowed until it holds at most ``LIST_LIMIT`` runs;
3. for each run the archive does not hold, in close order: read its ledger (a completed
   run's result carries it; any other closed run answers the ``ledger`` query, which a
   worker of its task queue answers by replaying its history) and append it to the
   archive, verified (``keel.activities.archive_store``); a run that continues another is
   archived after that one, so its continue-as-new link is checked;
4. advance the watermark to where every listed run has been handled.

A run whose ledger cannot be taken (no worker answered its query, an answer that is not a
ledger, a run it continues that is not archived yet) goes on the pending list and is
retried by every later pass, so the watermark never waits for it, it is never forgotten,
and it never blocks the others; a closed execution that is not a Keel workflow is noted
once (``no-ledger``). One task queue whose query timed out is not asked again in the same
pass. Only an unreachable archive database fails the pass (Temporal retries it).
Keel's tool-task children (their parents' ledgers record them) and the archiver itself are
not listed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from keel.activities.archive_store import ArchiveStore, Inserted, OfferedRun, continues
from keel.activities.sqlstore import StoreUnavailableError
from keel.contracts.archive import (
    ARCHIVE_PASS_ACTIVITY,
    ARCHIVER_WORKFLOW,
    ArchivePassInput,
    ArchivePassResult,
)
from keel.contracts.signing import Keyring
from keel.contracts.tools import TOOL_TASK_WORKFLOW
from keel.settings import KeelSettings

LIST_LIMIT = 5_000
"""Closed runs one pass lists at most (its window is narrowed until it holds no more)."""
PASS_SECONDS = 600.0
"""A pass stops starting new runs after this long (the next one carries on)."""
MAX_PREDECESSORS = 100
"""Runs a pass follows back at most to archive the runs a run continues first (the rest
wait for the next pass; in close order, the runs before are normally archived already)."""
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
"""The lower end of the first pass's window (no watermark yet)."""
CLOSED_QUERY = (
    "ExecutionStatus != 'Running' AND "
    f"WorkflowType != '{ARCHIVER_WORKFLOW}' AND WorkflowType != '{TOOL_TASK_WORKFLOW}'"
)


_NO_SUCH_QUERY = ("unknown querytype", "knownquerytypes", "expected but not found")
"""How SDKs word a query the workflow has no handler for (Go: ``unknown queryType ...
KnownQueryTypes=[...]``; Python: ``Query handler for 'ledger' expected but not found``)."""


class Unreadable(Exception):
    """A closed run's ledger could not be read this time (retry later)."""


class NoLedger(Exception):
    """The closed run is not a Keel workflow: it has no ledger."""


class Gone(Exception):
    """Temporal no longer has the run."""


@dataclass(frozen=True)
class ClosedRun:
    """What visibility (or a describe) says of one closed run."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: str
    close_time: datetime
    start_time: datetime | None = None

    @classmethod
    def of(cls, execution: WorkflowExecution) -> ClosedRun:
        """The closed run a visibility entry (or a description) names."""
        return cls(
            workflow_id=execution.id,
            run_id=execution.run_id,
            workflow_type=execution.workflow_type,
            task_queue=execution.task_queue,
            status=execution.status.name if execution.status else "RUNNING",
            close_time=execution.close_time or datetime.now(UTC),
            start_time=execution.start_time,
        )

    @property
    def key(self) -> tuple[str, str]:
        """(workflow id, run id)."""
        return self.workflow_id, self.run_id


@dataclass
class ArchivePass:
    """One bounded pass over ``client``'s closed runs into ``store`` (see the module)."""

    client: Client
    store: ArchiveStore
    keyring: Keyring | None
    request: ArchivePassInput
    task_queues: Sequence[str] = ()
    """Only runs of these task queues (empty: every run of the namespace)."""
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    result: ArchivePassResult = field(default_factory=ArchivePassResult)
    _silent_queues: set[str] = field(default_factory=set)
    _handled: set[tuple[str, str]] = field(default_factory=set)
    _started: float = field(default_factory=time.monotonic)
    _budget: int = 0

    async def run(self) -> ArchivePassResult:
        """Retry the pending runs, then archive the listed ones; advance the watermark."""
        await self.store.ensure_schema()
        if self.request.retry_pending:
            await self._retry_pending()
        self._budget = self.request.batch_size
        watermark = await self.store.watermark()
        lower = watermark - timedelta(seconds=self.request.overlap_seconds) if watermark else EPOCH
        upper = self.now()
        upper, narrowed = await self._window(lower, upper)
        listed = await self._list(lower, upper)
        self.result.listed = len(listed)
        keys = [run.key for run in listed]
        held = await self.store.archived(keys)
        not_keel = await self.store.noted(keys, "no-ledger")  # noted once, never retried
        reached = upper
        for index, run in enumerate(listed):
            if run.key in held or run.key in not_keel or run.key in self._handled:
                self.result.already += run.key in held
                continue
            if self._spent():
                reached, self.result.more = run.close_time, True
                break
            await self._archive(run)
            activity_heartbeat(index, len(listed))
        self.result.more = self.result.more or narrowed
        self.result.watermark = await self.store.advance_watermark(reached)
        return self.result

    def _spent(self) -> bool:
        return self._budget <= 0 or time.monotonic() - self._started > PASS_SECONDS

    async def _retry_pending(self) -> None:
        """Try the pending runs again, the first closed first: a quarter of a batch of them
        at most, beside the batch (runs that stay unreadable must not starve the rest)."""
        self._budget = max(1, self.request.batch_size // 4)
        for index, pending in enumerate(await self.store.pending(self._budget)):
            if time.monotonic() - self._started > PASS_SECONDS:
                return
            activity_heartbeat(index, self._budget)
            try:
                run = await self._describe(pending.workflow_id, pending.run_id)
            except Gone:
                await self.store.forget_pending(
                    pending.workflow_id,
                    pending.run_id,
                    "Temporal no longer has the run; its ledger was never archived",
                )
                continue
            await self._archive(run)

    async def _window(self, lower: datetime, upper: datetime) -> tuple[datetime, bool]:
        """``upper`` lowered (halving the window) until the window holds at most
        ``LIST_LIMIT`` closed runs; and whether it was lowered."""
        narrowed = False
        while upper - lower > timedelta(seconds=1):
            counted = await self.client.count_workflows(
                visibility_query(lower, upper, self.task_queues)
            )
            if counted.count <= LIST_LIMIT:
                break
            upper, narrowed = lower + (upper - lower) / 2, True
        return upper, narrowed

    async def _list(self, lower: datetime, upper: datetime) -> list[ClosedRun]:
        return await closed_runs(self.client, lower, upper, self.task_queues)

    async def _archive(self, run: ClosedRun, depth: int = 0) -> None:
        """Read ``run``'s ledger and append it (after the runs it continues). What goes
        wrong with one run puts it on the pending list; only an unreachable archive
        database fails the pass (Temporal retries it)."""
        self._handled.add(run.key)
        self._budget -= 1
        try:
            events = await self._ledger(run)
            waiting = await self._archive_previous(run, events, depth)
            if waiting is not None:
                raise Unreadable(waiting)
            outcome, why = await self.store.archive(_offered(run, events), self.keyring)
        except Gone:
            return  # deleted since it was listed: nothing left to read
        except NoLedger as err:
            self.result.no_ledger += 1
            await self._note(run, "no-ledger", str(err))
            return
        except StoreUnavailableError:
            raise
        except Exception as err:  # one run's ledger must never block the rest
            self.result.pending += 1
            reason = str(err) if isinstance(err, Unreadable) else f"not archived: {err!r}"
            await self._note(run, "retry", reason[:1000])
            return
        self._count(run, outcome, why)

    def _count(self, run: ClosedRun, outcome: Inserted, why: str) -> None:
        if outcome is Inserted.ALREADY:
            self.result.already += 1
        elif outcome is Inserted.CONFLICT:
            self.result.conflicts += 1
            activity_log(f"refused a different ledger for an archived run: {why}")
        else:
            self.result.archived += 1
            if why:
                self.result.failed_verification += 1
                activity_log(f"archived {run.workflow_id} run {run.run_id} flagged: {why}")

    async def _archive_previous(self, run: ClosedRun, events: list[Any], depth: int) -> str | None:
        """Archive the run ``run`` continues first, if the archive lacks it and Temporal
        still has it (so its link is checked against the archived one). Returns why
        ``run`` must wait (the run before it is not archived yet), or None."""
        previous = continues(events)
        if previous is None or await self.store.archived([(run.workflow_id, previous)]):
            return None
        try:
            earlier = await self._describe(run.workflow_id, previous)
        except Gone:
            return None  # it never will be: the archive flags the link it cannot check
        if earlier.workflow_type != run.workflow_type:
            return None  # a forged link: the archive flags it
        if (run.workflow_id, previous) not in self._handled and depth < MAX_PREDECESSORS:
            await self._archive(earlier, depth + 1)
            if await self.store.archived([(run.workflow_id, previous)]):
                return None
        return f"waiting for the run it continues ({previous}) to be archived first"

    async def _note(self, run: ClosedRun, kind: str, reason: str) -> None:
        await self.store.note_pending(
            workflow_id=run.workflow_id,
            run_id=run.run_id,
            workflow_type=run.workflow_type,
            status=run.status,
            close_time=run.close_time,
            kind=kind,
            reason=reason,
        )

    async def _describe(self, workflow_id: str, run_id: str) -> ClosedRun:
        try:
            description = await self.client.get_workflow_handle(
                workflow_id, run_id=run_id
            ).describe()
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise Gone(err.message) from err
            raise
        return ClosedRun.of(description)

    async def _ledger(self, run: ClosedRun) -> list[Any]:
        """The run's ledger as stored (JSON objects)."""
        handle = self.client.get_workflow_handle(run.workflow_id, run_id=run.run_id)
        if run.status == WorkflowExecutionStatus.COMPLETED.name:
            try:
                result = await handle.result(follow_runs=False)
            except RPCError as err:
                if err.status is RPCStatusCode.NOT_FOUND:
                    raise Gone(err.message) from err
                raise
            ledger = result.get("ledger") if isinstance(result, dict) else None
            if isinstance(ledger, list):
                return ledger
            raise NoLedger("its result carries no ledger: not a Keel workflow")
        if run.task_queue in self._silent_queues:
            raise Unreadable(self._silence(run))
        try:
            events: list[Any] = await handle.query(
                "ledger",
                result_type=list[Any],
                rpc_timeout=timedelta(seconds=self.request.query_timeout_seconds),
            )
        except WorkflowQueryFailedError as err:
            if any(sign in str(err).lower() for sign in _NO_SUCH_QUERY):
                raise NoLedger(f"it answers no ledger query: {str(err)[:300]}") from err
            raise Unreadable(f"its ledger query failed: {str(err)[:300]}") from err
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise Gone(err.message) from err
            if err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                self._silent_queues.add(run.task_queue)
                raise Unreadable(self._silence(run)) from err
            raise Unreadable(f"its ledger query failed: {err.message[:300]}") from err
        return events

    def _silence(self, run: ClosedRun) -> str:
        return (
            f"no worker answered its ledger query in {self.request.query_timeout_seconds:g} s: "
            f"a closed {run.status} run is read by a worker of its task queue "
            f"{run.task_queue!r} replaying it; retried by the next pass"
        )


async def closed_runs(
    client: Client,
    lower: datetime,
    upper: datetime,
    task_queues: Sequence[str] = (),
    limit: int = LIST_LIMIT,
) -> list[ClosedRun]:
    """The closed runs (but tool tasks and the archiver's; of ``task_queues`` if any) whose
    close time is in [``lower``, ``upper``], at most ``limit``, the first closed first."""
    query = visibility_query(lower, upper, task_queues)
    runs = [ClosedRun.of(e) async for e in client.list_workflows(query, limit=limit)]
    return sorted(runs, key=lambda run: (run.close_time, run.workflow_id, run.run_id))


def visibility_query(lower: datetime, upper: datetime, task_queues: Sequence[str] = ()) -> str:
    """The visibility query of the closed runs to archive in [``lower``, ``upper``]."""
    window = f"CloseTime >= '{_rfc3339(lower)}' AND CloseTime <= '{_rfc3339(upper)}'"
    queues = ", ".join(f"'{queue}'" for queue in task_queues if "'" not in queue)
    return f"{CLOSED_QUERY} AND {window}" + (f" AND TaskQueue IN ({queues})" if queues else "")


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _offered(run: ClosedRun, events: list[Any]) -> OfferedRun:
    return OfferedRun(
        workflow_id=run.workflow_id,
        run_id=run.run_id,
        workflow_type=run.workflow_type,
        task_queue=run.task_queue,
        status=run.status,
        close_time=run.close_time,
        start_time=run.start_time,
        events=events,
    )


def activity_log(message: str) -> None:
    """Log a warning of the pass (through the activity's logger, when running as one)."""
    if activity.in_activity():
        activity.logger.warning(message)


def activity_heartbeat(done: int, of: int) -> None:
    """Heartbeat the pass's progress, when running as an activity."""
    if activity.in_activity():
        activity.heartbeat({"done": done + 1, "listed": of})


class ArchiveActivities:
    """The archive-pass activity of every Keel worker.

    Args:
        settings: where the archive is (``archive_url``).
        keyring: the keys ledgers are verified against on insert (the worker's: its own
            and ``KEEL_TRUSTED_KEYS_FILE``'s), asked for at each pass.
    """

    def __init__(self, settings: KeelSettings, keyring: Callable[[], Keyring | None]) -> None:
        self.settings = settings
        self.keyring = keyring

    def activities(self) -> list[Callable[..., Any]]:
        """The activities to register."""
        return [self.archive_pass]

    @activity.defn(name=ARCHIVE_PASS_ACTIVITY)
    async def archive_pass(self, request: ArchivePassInput) -> ArchivePassResult:
        """One bounded pass into the archive (see the module)."""
        async with ArchiveStore.open(self.settings) as store:
            return await ArchivePass(
                activity.client(),
                store,
                self.keyring(),
                request,
                task_queues=self.settings.archive_task_queues,
            ).run()
