"""Deterministic code only: building blocks (ledger, context, gates, agent node) and the
scenario workflows. No I/O here: all I/O is in ``keel.activities``."""

from keel.workflows.contract_review import ContractReviewWorkflow

WORKFLOWS = [ContractReviewWorkflow]
"""Every workflow a Keel worker registers."""

__all__ = ["WORKFLOWS", "ContractReviewWorkflow"]
