"""Workflows that are not Keel's, for the archive's tests: one with no ledger at all, one
whose ``ledger`` query answers something that is not a ledger. Both fail at once (a closed
run with no result: the archiver can only ask its query)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError


@workflow.defn(name="ArchiveProbeNoLedger")
class NoLedgerWorkflow:
    """Not a Keel workflow: no ``ledger`` query."""

    @workflow.run
    async def run(self) -> None:
        """Fail at once."""
        raise ApplicationError("done", non_retryable=True)


@workflow.defn(name="ArchiveProbeBadLedger")
class BadLedgerWorkflow:
    """Answers the ``ledger`` query with text, not a list of events."""

    @workflow.run
    async def run(self) -> None:
        """Fail at once."""
        raise ApplicationError("done", non_retryable=True)

    @workflow.query(name="ledger")
    def ledger(self) -> str:
        """Not a ledger."""
        return "not a ledger"
