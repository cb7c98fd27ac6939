"""The ledger archive's names and the models its workflow and activity exchange (no I/O).

The archiver (``keel.workflows.archiver``, run by the Temporal Schedule ``keel-archiver``)
asks the archive-pass activity (``keel.activities.archive``) to copy the ledgers of the
executions that closed since the archive's watermark into the archive
(``keel.activities.archive_store``). See docs/archive.md.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

ARCHIVER_WORKFLOW = "KeelArchiver"
"""The archiver's workflow type (stable: schedules and histories name it)."""
ARCHIVE_PASS_ACTIVITY = "keel_archive_pass"
"""The activity that copies one bounded batch of closed executions' ledgers."""
ARCHIVE_SCHEDULE_ID = "keel-archiver"
"""The Temporal Schedule that starts the archiver (``keel archive schedule``)."""
ARCHIVER_WORKFLOW_ID = "keel-archiver"
"""The workflow id of a pass started by hand (``keel archive run``); the schedule's runs
are ``keel-archiver-<time>``, so the two never collide."""


class ArchivePassInput(BaseModel):
    """What one archiver pass is asked to do."""

    batch_size: int = Field(200, ge=1, le=5_000)
    """Runs archived (or retried) at most per activity call: each call is one bounded pass
    that heartbeats as it goes."""
    overlap_seconds: int = Field(300, ge=0, le=7 * 24 * 3600)
    """How far before the watermark the pass lists again: visibility is eventually
    consistent, so a run may appear there after runs that closed later than it did."""
    max_batches: int = Field(20, ge=1, le=1_000)
    """Batches one workflow run takes at most; the next scheduled run takes the rest."""
    retry_pending: bool = True
    """Retry the pending runs first (the archiver asks only in its first batch, so a run
    that stays unreadable costs one attempt per scheduled pass, not one per batch)."""
    query_timeout_seconds: float = Field(15.0, ge=0.5, le=120.0)
    """How long the ``ledger`` query of a closed run that did not complete may wait for a
    worker of its task queue to replay it (a queue that timed out is not asked again in the
    same batch)."""


class ArchivePassResult(BaseModel):
    """What one batch did (also the archiver workflow's result, summed over its batches)."""

    listed: int = 0
    """Closed runs visibility listed since the watermark (less the overlap)."""
    archived: int = 0
    """Runs newly written to the archive."""
    already: int = 0
    """Runs the archive already held, with the same ledger (nothing written)."""
    failed_verification: int = 0
    """Runs archived flagged: their ledger did not verify on insert."""
    conflicts: int = 0
    """Runs the archive holds with a *different* ledger: refused, recorded as a conflict."""
    pending: int = 0
    """Runs whose ledger could not be read this time (no worker answered the query): kept
    on the pending list, retried by every later pass."""
    no_ledger: int = 0
    """Closed runs that are not Keel workflows (no ledger): noted once, not retried."""
    watermark: str | None = None
    """The close time (ISO 8601, UTC) up to which every listed run has been handled."""
    more: bool = False
    """More runs than one batch were waiting: the workflow asks for another batch."""

    def plus(self, other: ArchivePassResult) -> ArchivePassResult:
        """The counts of both batches, with ``other``'s watermark and ``more``."""
        counts = {
            name: getattr(self, name) + getattr(other, name)
            for name in (
                "listed",
                "archived",
                "already",
                "failed_verification",
                "conflicts",
                "pending",
                "no_ledger",
            )
        }
        return ArchivePassResult(**counts, watermark=other.watermark, more=other.more)
