"""Keel: durable, auditable AI-agent workflows on Temporal.

This module is the public API: what an app author imports. An app declares its workflows
(subclasses of ``KeelWorkflow``), agent contracts, gates, tools and offline rules in an
``App``; ``keel worker --app MODULE`` serves it, and ``keel.testing`` tests it.

Example:
    A workflow with one agent node and a gate::

        @workflow.defn(name="ExpenseApproval")
        class ExpenseApproval(keel.KeelWorkflow):
            @workflow.run
            async def run(self, raw: dict[str, Any]) -> ExpenseResult:
                self.start(raw)
                claim = self.ingest(ExpenseClaim, raw, max_bytes=16_000)
                outcome = await self.agents.run("categorize", CATEGORIZER, claim)
                ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.activities.tools import EmailSender, tool_input
    from keel.contracts.agent import (
        AgentContract,
        EscalateToGate,
        RetryStrategy,
        UseDefault,
        canonical_json,
    )
    from keel.contracts.agent_node import SystemFailure
    from keel.contracts.gates import GateSpec, GateState, GateView, ReviewDecision, ReviewReceipt
    from keel.contracts.guardrails import GuardrailConfig
    from keel.contracts.integrity import LedgerReport, verify_ledger
    from keel.contracts.ledger import (
        GENESIS_HASH,
        AgentCallFailed,
        AgentDecided,
        AgentRetried,
        ChainHeadSigned,
        ChainReport,
        CheckpointTaken,
        Compensated,
        ContinuedAsNew,
        DefaultApplied,
        Escalated,
        EventBase,
        ForeignEvent,
        GateDecided,
        GateExpired,
        GateOpened,
        InputRejected,
        LedgerContinued,
        LedgerEvent,
        NodeFailed,
        PlanMaterialized,
        PlanProposed,
        PlanRejected,
        PolicyApplied,
        ProviderFallback,
        ReviewRefused,
        RolledBack,
        Routed,
        TaskCompleted,
        TaskFailed,
        TaskSkipped,
        ValidationFailed,
        WorkflowCompleted,
        WorkflowStarted,
        event_types,
        parse_ledger,
        register_event_type,
        verify_chain,
    )
    from keel.contracts.names import PENDING_GATES, SEARCH_ATTRIBUTES, TASK_QUEUE, model_queue
    from keel.contracts.plans import (
        Compensation,
        PlannedTask,
        PlannerOutput,
        PlanPolicy,
        TaskGate,
        validate_plan,
    )
    from keel.contracts.registry import REGISTRY, ContractRegistry
    from keel.contracts.tools import (
        CATALOG,
        ToolCall,
        ToolCatalog,
        ToolResult,
        ToolSpec,
        tool_activity_name,
    )
    from keel.errors import (
        ContractConflictError,
        ContractNotFoundError,
        KeelError,
        KeelRuntimeError,
        KeelUserError,
        ProviderAuthError,
        ProviderConfigError,
        ProviderError,
        ProviderPermanentError,
        ProviderRetryableError,
    )
    from keel.settings import KeelSettings
    from keel.workers.app import App, AppContext, DemoReview, DemoRun, Entry
    from keel.workers.apps import load_app, resolve_apps
    from keel.workers.runtime import build_worker, connect, ensure_search_attributes, running_worker
    from keel.workflows import (
        AgentNodes,
        AgentOutcome,
        Checkpoint,
        GateBook,
        GateRecord,
        KeelWorkflow,
        OutputCheck,
        PlanExecutor,
        PlanRun,
        ToolTaskWorkflow,
    )

__version__ = "0.2.0"

# Public name -> the module that defines it. Imported on first use (PEP 562): ``import keel``
# stays cheap, and a workflow sandbox that imports ``keel`` does not re-import the engine.
_EXPORTS: dict[str, str] = {
    "AgentCallFailed": "keel.contracts.ledger",
    "AgentContract": "keel.contracts.agent",
    "AgentDecided": "keel.contracts.ledger",
    "AgentNodes": "keel.workflows",
    "AgentOutcome": "keel.workflows",
    "AgentRetried": "keel.contracts.ledger",
    "App": "keel.workers.app",
    "AppContext": "keel.workers.app",
    "CATALOG": "keel.contracts.tools",
    "ChainHeadSigned": "keel.contracts.ledger",
    "ChainReport": "keel.contracts.ledger",
    "Checkpoint": "keel.workflows",
    "CheckpointTaken": "keel.contracts.ledger",
    "Compensated": "keel.contracts.ledger",
    "Compensation": "keel.contracts.plans",
    "ContinuedAsNew": "keel.contracts.ledger",
    "ContractConflictError": "keel.errors",
    "ContractNotFoundError": "keel.errors",
    "ContractRegistry": "keel.contracts.registry",
    "DefaultApplied": "keel.contracts.ledger",
    "DemoReview": "keel.workers.app",
    "DemoRun": "keel.workers.app",
    "EmailSender": "keel.activities.tools",
    "Entry": "keel.workers.app",
    "EscalateToGate": "keel.contracts.agent",
    "Escalated": "keel.contracts.ledger",
    "EventBase": "keel.contracts.ledger",
    "ForeignEvent": "keel.contracts.ledger",
    "GENESIS_HASH": "keel.contracts.ledger",
    "GateBook": "keel.workflows",
    "GateDecided": "keel.contracts.ledger",
    "GateExpired": "keel.contracts.ledger",
    "GateOpened": "keel.contracts.ledger",
    "GateRecord": "keel.workflows",
    "GateSpec": "keel.contracts.gates",
    "GateState": "keel.contracts.gates",
    "GateView": "keel.contracts.gates",
    "GuardrailConfig": "keel.contracts.guardrails",
    "InputRejected": "keel.contracts.ledger",
    "KeelError": "keel.errors",
    "KeelRuntimeError": "keel.errors",
    "KeelSettings": "keel.settings",
    "KeelUserError": "keel.errors",
    "KeelWorkflow": "keel.workflows",
    "LedgerContinued": "keel.contracts.ledger",
    "LedgerEvent": "keel.contracts.ledger",
    "LedgerReport": "keel.contracts.integrity",
    "NodeFailed": "keel.contracts.ledger",
    "OutputCheck": "keel.workflows",
    "PENDING_GATES": "keel.contracts.names",
    "PlanExecutor": "keel.workflows",
    "PlanMaterialized": "keel.contracts.ledger",
    "PlanPolicy": "keel.contracts.plans",
    "PlanProposed": "keel.contracts.ledger",
    "PlanRejected": "keel.contracts.ledger",
    "PlanRun": "keel.workflows",
    "PlannedTask": "keel.contracts.plans",
    "PlannerOutput": "keel.contracts.plans",
    "PolicyApplied": "keel.contracts.ledger",
    "ProviderAuthError": "keel.errors",
    "ProviderConfigError": "keel.errors",
    "ProviderError": "keel.errors",
    "ProviderFallback": "keel.contracts.ledger",
    "ProviderPermanentError": "keel.errors",
    "ProviderRetryableError": "keel.errors",
    "REGISTRY": "keel.contracts.registry",
    "RetryStrategy": "keel.contracts.agent",
    "ReviewDecision": "keel.contracts.gates",
    "ReviewReceipt": "keel.contracts.gates",
    "ReviewRefused": "keel.contracts.ledger",
    "RolledBack": "keel.contracts.ledger",
    "Routed": "keel.contracts.ledger",
    "SEARCH_ATTRIBUTES": "keel.contracts.names",
    "SystemFailure": "keel.contracts.agent_node",
    "TASK_QUEUE": "keel.contracts.names",
    "TaskCompleted": "keel.contracts.ledger",
    "TaskFailed": "keel.contracts.ledger",
    "TaskGate": "keel.contracts.plans",
    "TaskSkipped": "keel.contracts.ledger",
    "ToolCall": "keel.contracts.tools",
    "ToolCatalog": "keel.contracts.tools",
    "ToolResult": "keel.contracts.tools",
    "ToolSpec": "keel.contracts.tools",
    "ToolTaskWorkflow": "keel.workflows",
    "UseDefault": "keel.contracts.agent",
    "ValidationFailed": "keel.contracts.ledger",
    "WorkflowCompleted": "keel.contracts.ledger",
    "WorkflowStarted": "keel.contracts.ledger",
    "build_worker": "keel.workers.runtime",
    "canonical_json": "keel.contracts.agent",
    "connect": "keel.workers.runtime",
    "ensure_search_attributes": "keel.workers.runtime",
    "event_types": "keel.contracts.ledger",
    "load_app": "keel.workers.apps",
    "model_queue": "keel.contracts.names",
    "parse_ledger": "keel.contracts.ledger",
    "register_event_type": "keel.contracts.ledger",
    "resolve_apps": "keel.workers.apps",
    "running_worker": "keel.workers.runtime",
    "tool_activity_name": "keel.contracts.tools",
    "tool_input": "keel.activities.tools",
    "validate_plan": "keel.contracts.plans",
    "verify_chain": "keel.contracts.ledger",
    "verify_ledger": "keel.contracts.integrity",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "CATALOG",
    "GENESIS_HASH",
    "PENDING_GATES",
    "REGISTRY",
    "SEARCH_ATTRIBUTES",
    "TASK_QUEUE",
    "AgentCallFailed",
    "AgentContract",
    "AgentDecided",
    "AgentNodes",
    "AgentOutcome",
    "AgentRetried",
    "App",
    "AppContext",
    "ChainHeadSigned",
    "ChainReport",
    "Checkpoint",
    "CheckpointTaken",
    "Compensated",
    "Compensation",
    "ContinuedAsNew",
    "ContractConflictError",
    "ContractNotFoundError",
    "ContractRegistry",
    "DefaultApplied",
    "DemoReview",
    "DemoRun",
    "EmailSender",
    "Entry",
    "EscalateToGate",
    "Escalated",
    "EventBase",
    "ForeignEvent",
    "GateBook",
    "GateDecided",
    "GateExpired",
    "GateOpened",
    "GateRecord",
    "GateSpec",
    "GateState",
    "GateView",
    "GuardrailConfig",
    "InputRejected",
    "KeelError",
    "KeelRuntimeError",
    "KeelSettings",
    "KeelUserError",
    "KeelWorkflow",
    "LedgerContinued",
    "LedgerEvent",
    "LedgerReport",
    "NodeFailed",
    "OutputCheck",
    "PlanExecutor",
    "PlanMaterialized",
    "PlanPolicy",
    "PlanProposed",
    "PlanRejected",
    "PlanRun",
    "PlannedTask",
    "PlannerOutput",
    "PolicyApplied",
    "ProviderAuthError",
    "ProviderConfigError",
    "ProviderError",
    "ProviderFallback",
    "ProviderPermanentError",
    "ProviderRetryableError",
    "RetryStrategy",
    "ReviewDecision",
    "ReviewReceipt",
    "ReviewRefused",
    "RolledBack",
    "Routed",
    "SystemFailure",
    "TaskCompleted",
    "TaskFailed",
    "TaskGate",
    "TaskSkipped",
    "ToolCall",
    "ToolCatalog",
    "ToolResult",
    "ToolSpec",
    "ToolTaskWorkflow",
    "UseDefault",
    "ValidationFailed",
    "WorkflowCompleted",
    "WorkflowStarted",
    "__version__",
    "build_worker",
    "canonical_json",
    "connect",
    "ensure_search_attributes",
    "event_types",
    "load_app",
    "model_queue",
    "parse_ledger",
    "register_event_type",
    "resolve_apps",
    "running_worker",
    "tool_activity_name",
    "tool_input",
    "validate_plan",
    "verify_chain",
    "verify_ledger",
]
