"""Supplier ingestion: enrich hundreds of records, a bounded batch at a time, one agent call
and one lookup each, continuing as new every ``records_per_run`` records so that no run's
history grows with the job.

Progress goes out after every batch: one event per record and one for the batch, numbered in
workflow code, appended to the workflow's Redis Stream by ``keel.progress.append`` (see
``keel.progress``), shown as the execution's current details and answered by the
``progress`` query. A run hands the next one only what is left and the counts
(``IngestionCarry``, sealed by ``KeelWorkflow.continue_as_new``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from keel.contracts.ledger import ContinuedAsNew, LedgerContinued, WorkflowCompleted
    from keel.progress.events import ProgressView
    from keel.scenarios.ingestion.contracts import (
        MAX_JOB_BYTES,
        SUPPLIER_ENRICHMENT,
        BatchEnriched,
        EnrichedRecord,
        EnrichmentInput,
        IngestionCarry,
        IngestionJob,
        IngestionResult,
        Lookup,
        SupplierPage,
        SupplierRecord,
        Tally,
        enrichment_problems,
    )
    from keel.scenarios.ingestion.tools import LOOKUP_HEARTBEAT_TIMEOUT, LOOKUP_PAGE

from keel.progress.reporter import ProgressReporter
from keel.workflows.base import KeelWorkflow

LOOKUP_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)


@workflow.defn(name="SupplierIngestion")
class SupplierIngestionWorkflow(KeelWorkflow):
    """Input: an ``IngestionJob``; a continued run's input is Keel's sealed state with the
    records still to do and an ``IngestionCarry``."""

    def __init__(self) -> None:
        super().__init__()
        self.progress = ProgressReporter()
        self.tally = Tally()
        self.run_no = 1
        self.batches_done = 0

    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> IngestionResult:
        """Enrich the job's records (resuming where the previous run stopped, if any)."""
        return await self.settle(self._ingest(raw_input))

    @workflow.query(name="progress")
    def progress_query(self, *args: Any) -> ProgressView:
        """Records done of total, the run, the last event's id (no arguments)."""
        if args:
            raise ApplicationError(
                f"the progress query takes no arguments; {len(args)} were sent",
                type="QueryRefused",
            )
        return self.progress.view()

    async def _ingest(self, raw_input: Any) -> IngestionResult:
        state = await self.resume(raw_input)
        if state is not None:
            self._resume(IngestionCarry.model_validate(state["carry"]))
        self.start(raw_input)
        job = self.ingest(
            IngestionJob, state["job"] if state else raw_input, max_bytes=MAX_JOB_BYTES
        )
        if state is None:
            self.progress.total = len(job.records)
            self.progress.add(
                "started",
                f"{len(job.records)} records, {job.batch_size} at a time, "
                f"{job.records_per_run} per run",
                {"job_id": job.job_id, "title": job.title},
            )
            await self.progress.flush()  # a watcher sees the job start, not its first batch
        records, done_here = job.records, 0
        while records:
            size = min(job.batch_size, job.records_per_run - done_here)
            batch, records = records[:size], records[size:]
            await self._batch(batch)
            done_here += len(batch)
            if records and self._should_continue(job, done_here):
                self.progress.add(
                    "continued", f"run {self.run_no} hands over to run {self.run_no + 1}"
                )
                await self.progress.flush()
                await self._continue_as_new(job, records)
            await self.progress.flush()
        return await self._finish(job)

    async def _batch(self, batch: list[SupplierRecord]) -> None:
        """Enrich ``batch`` in parallel; count it, record it, queue its progress events."""
        self.batches_done += 1
        outcomes = await asyncio.gather(*(self._enrich(record) for record in batch))
        counts = Tally()
        for outcome in outcomes:  # the batch's order, not completion order
            self.tally.add(outcome)
            counts.add(outcome)
            self.progress.done += 1
            category = outcome.enrichment.category.value if outcome.enrichment else "none"
            self.progress.add(
                "record",
                f"{outcome.record_id} {outcome.name}: {category} ({outcome.source})",
                outcome.model_dump(mode="json"),
            )
        event = self.ledger.record(
            BatchEnriched(
                batch=self.batches_done,
                record_ids=[r.record_id for r in batch],
                enriched=counts.enriched,
                defaulted=counts.defaulted,
                denied=counts.denied,
                pages_missing=counts.pages_missing,
            )
        )
        self.progress.add("batch", event.describe(), counts.model_dump(mode="json"))

    async def _enrich(self, record: SupplierRecord) -> EnrichedRecord:
        page: SupplierPage | None = await workflow.execute_activity(
            LOOKUP_PAGE,
            Lookup(record_id=record.record_id, domain=record.website),
            result_type=SupplierPage | None,  # type: ignore[arg-type]
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=LOOKUP_HEARTBEAT_TIMEOUT,
            retry_policy=LOOKUP_RETRIES,
            summary=f"lookup {record.website}",
        )
        outcome = await self.agents.run(
            record.record_id,
            SUPPLIER_ENRICHMENT,
            EnrichmentInput(
                record=record.model_dump(mode="json"),
                page=page.model_dump(mode="json") if page else None,
            ),
            check=lambda answer: enrichment_problems(record, answer),
        )
        return EnrichedRecord(
            record_id=record.record_id,
            name=record.name,
            source=outcome.source,
            page_found=page is not None,
            enrichment=outcome.output,
        )

    def _should_continue(self, job: IngestionJob, done_here: int) -> bool:
        return done_here >= job.records_per_run or workflow.info().is_continue_as_new_suggested()

    async def _continue_as_new(self, job: IngestionJob, rest: list[SupplierRecord]) -> None:
        last = await self.ledger.record_signed(
            ContinuedAsNew(
                reason=f"{self.progress.done} of {self.progress.total} records done; "
                f"{len(rest)} left for the next run",
                rounds_done=self.batches_done,
            ),
            "continue-as-new",
        )
        carry = IngestionCarry(
            ledger_head=last.hash,
            ledger_seq=last.seq,
            previous_run_id=workflow.info().run_id,
            runs=self.run_no,
            batches_done=self.batches_done,
            records_done=self.progress.done,
            total=self.progress.total,
            progress_seq=self.progress.seq,
            tally=self.tally,
        )
        await self.continue_as_new(
            {
                "job": job.model_copy(update={"records": rest}).model_dump(mode="json"),
                "carry": carry.model_dump(mode="json"),
            }
        )

    def _resume(self, carry: IngestionCarry) -> None:
        self.ledger.continue_from(carry.ledger_head, carry.ledger_seq)
        self.run_no = carry.runs + 1
        self.batches_done = carry.batches_done
        self.tally = carry.tally.model_copy(deep=True)
        self.progress.restore(
            seq=carry.progress_seq, done=carry.records_done, total=carry.total, run=self.run_no
        )
        self.ledger.record(
            LedgerContinued(
                previous_run_id=carry.previous_run_id,
                previous_head=carry.ledger_head,
                run=self.run_no,
                rounds_done=carry.batches_done,
            )
        )

    async def _finish(self, job: IngestionJob) -> IngestionResult:
        tally, progress = self.tally, self.progress
        summary = (
            f"{progress.done} records: {tally.enriched} enriched, {tally.defaulted} left "
            f"unclassified, {tally.denied} denied by a guardrail, {tally.pages_missing} "
            f"without a page; {self.run_no} run(s)"
        )
        self.ledger.record(
            WorkflowCompleted(outcome="ingested", summary={"summary": summary, "runs": self.run_no})
        )
        final = progress.add("finished", summary, tally.model_dump(mode="json"), final=True)
        await progress.flush()
        return IngestionResult(
            job_id=job.job_id,
            outcome="ingested",
            summary=summary,
            total=progress.total,
            enriched=tally.enriched,
            defaulted=tally.defaulted,
            denied=tally.denied,
            pages_missing=tally.pages_missing,
            by_category=dict(sorted(tally.by_category.items())),
            runs=self.run_no,
            batches=self.batches_done,
            progress_events=final.seq,
            last_event_id=final.id,
            ledger=list(self.ledger.events),
            ledger_genesis=self.ledger.genesis,
            ledger_head=self.ledger.head_hash,
        )
