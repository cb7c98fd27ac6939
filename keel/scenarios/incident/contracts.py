"""On-call incident investigation: the page, the tools, the planner contract and its policy."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from keel.contracts.agent import AgentContract, UseDefault
from keel.contracts.guardrails import GuardrailConfig
from keel.contracts.ledger import LedgerEvent
from keel.contracts.plans import PlannerOutput, PlanPolicy
from keel.contracts.registry import REGISTRY
from keel.contracts.tools import CATALOG, ToolSpec

MAX_PAGE_BYTES = 64 * 1024
Service = str
Metric = Literal["p99_latency_ms", "error_rate", "cpu_percent"]


class IncidentPage(BaseModel):
    """A page from the alerting system."""

    model_config = ConfigDict(extra="forbid")

    incident_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    service: Service = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    alert: str = Field(min_length=1, max_length=200)
    severity: Literal["sev1", "sev2", "sev3", "sev4"]
    summary: str = Field(min_length=1, max_length=2_000)
    opened_at: datetime
    continue_after_rounds: int | None = Field(None, ge=1)
    """Continue-as-new after this many planning rounds in one run (default: when Temporal
    suggests it)."""


# --- tools -----------------------------------------------------------------------------------


class MetricsLookupInput(BaseModel):
    """Input of ``metrics_lookup``: one metric of one service over a window."""

    model_config = ConfigDict(extra="forbid")
    service: Service
    metric: Metric
    window_minutes: int = Field(60, ge=5, le=1_440)


class MetricsLookupOutput(BaseModel):
    """Output of ``metrics_lookup``: the series and whether it is anomalous."""

    service: Service
    metric: Metric
    baseline: float
    current: float
    peak: float
    anomaly_started_at: datetime | None


class DeployHistoryInput(BaseModel):
    """Input of ``deploy_history``: a service's deploys since some hours ago."""

    model_config = ConfigDict(extra="forbid")
    service: Service
    since_hours: int = Field(24, ge=1, le=168)


class Deploy(BaseModel):
    """One deploy of a service."""

    deploy_id: str
    version: str
    previous_version: str
    at: datetime
    author: str
    summary: str


class DeployHistoryOutput(BaseModel):
    """Output of ``deploy_history``."""

    service: Service
    current_version: str
    deploys: list[Deploy]


class AlertCorrelationInput(BaseModel):
    """Input of ``alert_correlation``: a service's alerts within a window."""

    model_config = ConfigDict(extra="forbid")
    service: Service
    window_minutes: int = Field(60, ge=5, le=1_440)


class Alert(BaseModel):
    """One alert that fired."""

    name: str
    service: Service
    at: datetime
    severity: str


class AlertCorrelationOutput(BaseModel):
    """Output of ``alert_correlation``."""

    service: Service
    alerts: list[Alert]
    correlated_services: list[Service]


class RollbackDeployInput(BaseModel):
    """Input of ``rollback_deploy`` (a side effect: gated, compensated)."""

    model_config = ConfigDict(extra="forbid")
    service: Service
    deploy_id: str = Field(min_length=1)
    to_version: str = Field(min_length=1)


class RollForwardInput(BaseModel):
    """Input of ``roll_forward_deploy``, the compensation of a rollback."""

    model_config = ConfigDict(extra="forbid")
    service: Service
    to_version: str = Field(min_length=1)


class DeployChangeOutput(BaseModel):
    """Output of a deploy change: the action id the deploy system gave it."""

    service: Service
    from_version: str
    to_version: str
    action_id: str


class UpdateIncidentInput(BaseModel):
    """Input of ``update_incident``: a status and a note on the incident."""

    model_config = ConfigDict(extra="forbid")
    incident_id: str = Field(min_length=1)
    status: Literal["investigating", "mitigating", "mitigated", "resolved"]
    note: str = Field(min_length=1, max_length=8_000)


class UpdateIncidentOutput(BaseModel):
    """Output of ``update_incident``."""

    incident_id: str
    status: str
    note_id: str


def _tool(**kwargs: Any) -> ToolSpec:
    return CATALOG.register(ToolSpec(**kwargs))


METRICS_LOOKUP = _tool(
    name="metrics_lookup",
    description="Baseline, current and peak of a service metric, and when an anomaly began.",
    input_model=MetricsLookupInput,
    output_model=MetricsLookupOutput,
)
DEPLOY_HISTORY = _tool(
    name="deploy_history",
    description="Deploys of a service, newest first, and its current version.",
    input_model=DeployHistoryInput,
    output_model=DeployHistoryOutput,
)
ALERT_CORRELATION = _tool(
    name="alert_correlation",
    description="Alerts around a service in a time window, and which services they involve.",
    input_model=AlertCorrelationInput,
    output_model=AlertCorrelationOutput,
)
ROLL_FORWARD = _tool(
    name="roll_forward_deploy",
    description="Deploy a given version of a service again (undoes a rollback).",
    input_model=RollForwardInput,
    output_model=DeployChangeOutput,
    side_effects=True,
    needs_approval=True,
    unknown_outcome="lookup",
)
ROLLBACK_DEPLOY = _tool(
    name="rollback_deploy",
    description="Roll a service back to the version before a deploy.",
    input_model=RollbackDeployInput,
    output_model=DeployChangeOutput,
    side_effects=True,
    needs_approval=True,
    requires_compensation=True,
    compensation_tools=("roll_forward_deploy",),
    unknown_outcome="lookup",
)
UPDATE_INCIDENT = _tool(
    name="update_incident",
    description="Set the incident's status and append a note to its timeline.",
    input_model=UpdateIncidentInput,
    output_model=UpdateIncidentOutput,
    side_effects=True,
    unknown_outcome="lookup",
)

INCIDENT_POLICY = PlanPolicy(
    max_tasks_per_plan=6,
    max_fanout_width=4,
    max_rounds=5,
    max_plan_rejections=2,
    allowed_tools=(
        "metrics_lookup",
        "deploy_history",
        "alert_correlation",
        "rollback_deploy",
        "roll_forward_deploy",
        "update_incident",
    ),
    side_effects_require_gate=True,
    gate_exempt_tools=("update_incident",),
    # Who approves a planned rollback is policy, never the planner's choice.
    gate_reviewers=("oncall.lead", "sre.manager"),
    gate_roles=("oncall-lead",),
    gate_sla=timedelta(minutes=30),
)


# --- planner ---------------------------------------------------------------------------------


class Finding(BaseModel):
    """What one task's result told the planner."""

    round: int
    ref: str
    tool: str
    output: dict[str, Any]


class IncidentPlannerInput(BaseModel):
    """What the planner reads each round: the page, findings so far, actions, tools, policy."""

    incident: dict[str, Any]
    round: int
    findings: list[Finding]
    actions: list[str]
    """Side effects performed so far, e.g. ``rollback_deploy: checkout-api 1.42.0 -> 1.41.3``."""
    tools: list[dict[str, Any]]
    policy: dict[str, Any]


INCIDENT_PLANNER = REGISTRY.register(
    AgentContract(
        name="incident-planner",
        version=1,
        description="Plan the next round of an incident investigation from the findings so far.",
        input_model=IncidentPlannerInput,
        output_model=PlannerOutput,
        system_prompt=(
            "You are an SRE incident commander. Propose the next investigation or mitigation "
            "tasks using only the catalog tools, as a dependency graph. Side-effecting tools "
            "need a human gate, and rollbacks need a compensation. Say done when the incident "
            "is mitigated and its timeline updated."
        ),
        prompt_template=(
            "Incident: $incident\nRound: $round\nFindings so far: $findings\n"
            "Actions taken: $actions\nTool catalog: $tools\nPolicy: $policy"
        ),
        time_budget=timedelta(seconds=90),
        confidence_threshold=0.5,
        max_attempts=2,
        # Findings grow each round: a larger budget per run than the default. The page
        # (alert text from monitoring) and the tools' results are untrusted.
        guardrails=GuardrailConfig(token_budget=200_000, untrusted_fields=("incident", "findings")),
        on_exhausted=UseDefault(
            output={
                "done": True,
                "summary": "The planner produced no usable plan; handing over to on-call.",
                "tasks": [],
                "confidence": 1.0,
            },
            reason="planner budget spent: stop planning and hand over to a human",
        ),
    )
)


class IncidentCarry(BaseModel):
    """What a run hands to the next one on continue-as-new."""

    ledger_head: str
    ledger_seq: int
    previous_run_id: str
    runs: int
    rounds_done: int
    findings: list[Finding]
    actions: list[str]
    completed: list[dict[str, Any]]
    """Completed tasks with their compensations, oldest first (the saga's stack)."""


class IncidentResult(BaseModel):
    """Result of an investigation, with its ledger."""

    incident_id: str
    outcome: Literal["mitigated", "handed-over", "round-limit", "compensated"]
    summary: str
    rounds: int
    runs: int
    tasks_run: list[str]
    compensated: list[str]
    ledger: list[LedgerEvent]
    ledger_genesis: str
    ledger_head: str
