"""The ledger archive, for its readers (``keel ledger``, ``verify``, ``audit``, ``export``,
``trust``, ``archive status``): every closed execution's ledger, kept after Temporal's
retention removed the execution (docs/archive.md).

``ArchiveStore.open(settings)`` (an async context manager) reads it: ``runs(workflow_id)``
(the runs of its latest execution, oldest first, each an ``ArchivedRun`` with the events as
stored), ``run(workflow_id, run_id)``, ``executions(workflow_type=None, since=None)`` (workflow
ids), ``counts()``. ``archive_lag(client, archive)`` adds what Temporal has closed that the
archive does not hold yet; ``ensure_archiver_schedule(client, every=..., task_queue=...)``
creates the Temporal Schedule that runs the archiver (``keel.workflows.archiver`` with
``keel.activities.archive``) on the workers.
"""

from keel.activities.archive_store import ArchiveCounts, ArchivedRun, ArchiveStore, PendingRun
from keel.archive.lag import ArchiveLag, archive_lag
from keel.archive.schedule import dev_archiver, ensure_archiver_schedule

__all__ = [
    "ArchiveCounts",
    "ArchiveLag",
    "ArchiveStore",
    "ArchivedRun",
    "PendingRun",
    "archive_lag",
    "dev_archiver",
    "ensure_archiver_schedule",
]
