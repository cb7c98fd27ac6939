"""The Temporal Schedule that runs the archiver (``keel archive schedule``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Literal

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from keel.contracts.archive import ARCHIVE_SCHEDULE_ID, ARCHIVER_WORKFLOW, ArchivePassInput
from keel.settings import KeelSettings

CATCHUP_WINDOW = timedelta(days=1)
"""A scheduled pass missed while the Temporal server was down runs when it is back, if it
was missed less than this long ago (one catches everything up: passes start from the
archive's watermark, not from the schedule's time)."""


def archiver_schedule(*, every: int, task_queue: str) -> Schedule:
    """The archiver's schedule: a pass every ``every`` seconds, never two at once (a pass
    still running when the next is due makes it skip), missed passes caught up within
    ``CATCHUP_WINDOW``."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ARCHIVER_WORKFLOW,
            ArchivePassInput(),
            id=f"{ARCHIVE_SCHEDULE_ID}-pass",
            task_queue=task_queue,
            execution_timeout=timedelta(hours=6),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
    )


async def ensure_archiver_schedule(
    client: Client, *, every: int, task_queue: str, update: bool = True
) -> tuple[ScheduleHandle, Literal["created", "updated", "kept"]]:
    """Create the schedule ``keel-archiver``, or (``update``) set an existing one to
    ``every`` and ``task_queue``; returns its handle and what was done. ``keel dev`` can
    call it with ``update=False`` so the embedded default archives by itself."""
    schedule = archiver_schedule(every=every, task_queue=task_queue)
    try:
        return await client.create_schedule(ARCHIVE_SCHEDULE_ID, schedule), "created"
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(ARCHIVE_SCHEDULE_ID)
    if not update:
        return handle, "kept"

    def change(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=schedule)

    await handle.update(change)
    return handle, "updated"


@asynccontextmanager
async def dev_archiver(settings: KeelSettings, client: Client) -> AsyncIterator[None]:
    """The archive inside ``keel dev``: its schedule, created on the dev server if missing
    (kept as it is otherwise), so the embedded default archives by itself into
    ``$KEEL_DATA_DIR/archive.sqlite3`` (or ``KEEL_ARCHIVE_URL``)."""
    await ensure_archiver_schedule(
        client,
        every=settings.archive_interval_seconds,
        task_queue=settings.task_queue,
        update=False,
    )
    yield
