"""How far the archive is behind Temporal: ``keel archive status``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client

from keel.activities.archive import EPOCH, LIST_LIMIT, closed_runs
from keel.activities.archive_store import ArchiveCounts, ArchiveStore
from keel.contracts.archive import ArchivePassInput

OVERLAP = timedelta(seconds=ArchivePassInput().overlap_seconds)


@dataclass(frozen=True)
class ArchiveLag:
    """The archive's counts, and what Temporal closed that it does not hold yet."""

    counts: ArchiveCounts
    watermark_age_seconds: float | None
    """How long ago the watermark's close time was (None: no pass has run)."""
    unarchived: int
    """Closed runs Temporal lists since the watermark (less the overlap) that the archive
    neither holds nor has on its pending list, plus the pending ones (unreadable so far,
    or lost); closed runs that are not Keel workflows are not counted."""
    unarchived_is_lower_bound: bool
    """More closed runs were waiting than one listing returns: ``unarchived`` is at least."""
    oldest_unarchived_close_time: str | None
    oldest_unarchived_age_seconds: float | None
    """The lag: how long ago the oldest closed run the archive lacks closed (None: none)."""

    def as_json(self) -> dict[str, Any]:
        """The lag as one JSON object (``-o json``)."""
        return asdict(self)


async def archive_lag(
    client: Client,
    archive: ArchiveStore,
    *,
    task_queues: Sequence[str] = (),
    now: datetime | None = None,
) -> ArchiveLag:
    """The archive's lag behind ``client``'s namespace (its runs of ``task_queues``, if
    any: what the archiver is configured to archive)."""
    moment = now or datetime.now(UTC)
    counts = await archive.counts()
    watermark = datetime.fromisoformat(counts.watermark) if counts.watermark else None
    lower = watermark - OVERLAP if watermark else EPOCH
    listed = await closed_runs(client, lower, moment, task_queues)
    keys = [run.key for run in listed]
    held = await archive.archived(keys) | await archive.noted(keys)
    missing = [run for run in listed if run.key not in held]
    oldest = [run.close_time.astimezone(UTC).isoformat() for run in missing[:1]]
    if counts.oldest_pending_close_time:
        oldest.append(counts.oldest_pending_close_time)
    first = min((datetime.fromisoformat(text) for text in oldest), default=None)
    return ArchiveLag(
        counts=counts,
        watermark_age_seconds=_age(moment, watermark),
        unarchived=len(missing) + counts.pending,
        unarchived_is_lower_bound=len(listed) >= LIST_LIMIT,
        oldest_unarchived_close_time=first.isoformat() if first else None,
        oldest_unarchived_age_seconds=_age(moment, first),
    )


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())
