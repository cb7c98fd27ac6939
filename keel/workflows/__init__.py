"""Deterministic code only: building blocks (ledger, context, gates, agent node) and the
scenario workflows. No I/O here: all I/O is in ``keel.activities``."""

from keel.workflows.contract_review import ContractReviewWorkflow
from keel.workflows.incident import IncidentInvestigationWorkflow
from keel.workflows.support import SupportEmailWorkflow
from keel.workflows.tool_task import ToolTaskWorkflow

WORKFLOWS = [
    ContractReviewWorkflow,
    IncidentInvestigationWorkflow,
    SupportEmailWorkflow,
    ToolTaskWorkflow,
]
"""Every workflow a Keel worker registers."""

__all__ = [
    "WORKFLOWS",
    "ContractReviewWorkflow",
    "IncidentInvestigationWorkflow",
    "SupportEmailWorkflow",
    "ToolTaskWorkflow",
]
