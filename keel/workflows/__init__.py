"""The engine's deterministic building blocks: ``KeelWorkflow`` (ledger, context, gates,
agent nodes and the ``review``/``ledger``/``gates`` handlers), the plan executor and the
``KeelToolTask`` child workflow. No I/O here: all I/O is in ``keel.activities``."""

from keel.workflows.agent_node import AgentNodes, AgentOutcome, OutputCheck
from keel.workflows.base import KeelWorkflow
from keel.workflows.context import Checkpoint, WorkflowContext
from keel.workflows.gates import GateBook, GateRecord
from keel.workflows.ledger import Ledger
from keel.workflows.plan_executor import PlanExecutor, PlanRun
from keel.workflows.tool_task import ToolTaskWorkflow

__all__ = [
    "AgentNodes",
    "AgentOutcome",
    "Checkpoint",
    "GateBook",
    "GateRecord",
    "KeelWorkflow",
    "Ledger",
    "OutputCheck",
    "PlanExecutor",
    "PlanRun",
    "ToolTaskWorkflow",
    "WorkflowContext",
]
