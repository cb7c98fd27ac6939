"""The archiver: what the Temporal Schedule ``keel-archiver`` starts every few minutes.

Deterministic: it only calls the archive-pass activity (``keel.activities.archive``), one
bounded batch at a time, while a batch says more runs are waiting, up to
``ArchivePassInput.max_batches``; the next scheduled run takes the rest. Its history stays
small, so it needs no continue-as-new. Completeness does not rest on the schedule: the
activity works from the watermark the archive keeps, so a pass after any downtime (of the
workers, the schedule, the database) catches up everything that closed meanwhile.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from keel.contracts.archive import (
        ARCHIVE_PASS_ACTIVITY,
        ARCHIVER_WORKFLOW,
        ArchivePassInput,
        ArchivePassResult,
    )

PASS_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=5,
)
"""A batch whose database or Temporal call failed is retried; past that, the next
scheduled run starts again from the watermark."""


@workflow.defn(name=ARCHIVER_WORKFLOW)
class ArchiverWorkflow:
    """Copy closed executions' ledgers into the archive, in bounded batches."""

    @workflow.run
    async def run(self, request: ArchivePassInput) -> ArchivePassResult:
        """Archive batches until none is left waiting (or ``max_batches`` ran)."""
        total = ArchivePassResult()
        for index in range(request.max_batches):
            batch = await workflow.execute_activity(
                ARCHIVE_PASS_ACTIVITY,
                request.model_copy(update={"retry_pending": request.retry_pending and not index}),
                result_type=ArchivePassResult,
                start_to_close_timeout=timedelta(minutes=15),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=PASS_RETRIES,
            )
            total = total.plus(batch)
            if not batch.more:
                break
        return total
