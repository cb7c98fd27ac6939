"""Supplier ingestion: enrich hundreds of supplier records with one agent call each, in
bounded parallel batches, continuing as new to keep history bounded, with a resumable
progress stream (``keel watch``).

``APP`` declares it; see README.md beside this file.
"""

import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from keel.progress.activities import ProgressActivities
from keel.progress.probe import redis_problem
from keel.scenarios.ingestion.contracts import (
    MAX_JOB_BYTES,
    SUPPLIER_ENRICHMENT,
    BatchEnriched,
    IngestionJob,
)
from keel.scenarios.ingestion.fixtures import SAMPLES
from keel.scenarios.ingestion.offline import enrich_supplier
from keel.scenarios.ingestion.tools import SupplierPages
from keel.scenarios.ingestion.workflow import SupplierIngestionWorkflow
from keel.workers.app import App, AppContext, DemoRun, Entry


@asynccontextmanager
async def open_activities(context: AppContext) -> AsyncIterator[Sequence[Callable[..., Any]]]:
    """The page lookup over the fixture pages, and the progress stream's append (Redis).

    A Redis that does not answer is said at once: ingestion runs wait for it (their progress
    is never dropped), which would otherwise look like a hang.
    """
    progress = ProgressActivities.open(context.settings)
    problem = await redis_problem(context.settings.redis_url)
    if problem is not None:
        print(
            f"ingestion: the progress stream's Redis at {context.settings.redis_url} does not "
            f"answer ({problem}); ingestion runs wait for it: start Redis or set KEEL_REDIS_URL",
            file=sys.stderr,
            flush=True,
        )
    try:
        yield [*SupplierPages().activities(), *progress.activities()]
    finally:
        await progress.aclose()


def summarize(result: Any) -> str:
    """``job id, enriched of total, runs``."""
    return (
        f"{result['job_id']}, {result['enriched']} of {result['total']} enriched, "
        f"{result['runs']} runs, last event {result['last_event_id']}"
    )


APP = App(
    name="ingestion",
    workflows=[SupplierIngestionWorkflow],
    entries=[
        Entry(
            "ingestion", SupplierIngestionWorkflow, IngestionJob, MAX_JOB_BYTES, title_field="title"
        )
    ],
    contracts=[SUPPLIER_ENRICHMENT],
    activities=open_activities,
    offline_rules={SUPPLIER_ENRICHMENT.name: enrich_supplier},
    samples=SAMPLES,
    demo=[DemoRun("ingestion, 20 suppliers", "ingestion", "ingestion-demo")],
    summarize=summarize,
    event_types=[BatchEnriched],
)
"""The supplier ingestion app."""

__all__ = ["APP", "SupplierIngestionWorkflow"]
