"""On-call incident investigation: a planner fans out tools as child workflows, proposes a
gated rollback with its compensation, and updates the incident.

``APP`` declares it; see README.md beside this file.
"""

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from keel.offline import OfflineFault
from keel.scenarios.incident.contracts import (
    INCIDENT_PLANNER,
    MAX_PAGE_BYTES,
    IncidentPage,
)
from keel.scenarios.incident.offline import plan_incident
from keel.scenarios.incident.plan_faults import PLAN_FAULT_KINDS, plan_fault
from keel.scenarios.incident.tools import INCIDENT_TOOLS, IncidentTools
from keel.scenarios.incident.workflow import IncidentInvestigationWorkflow
from keel.workers.app import App, AppContext, DemoReview, DemoRun, Entry


@asynccontextmanager
async def open_activities(context: AppContext) -> AsyncIterator[Sequence[Callable[..., Any]]]:
    """The six incident tools over the side-effect record; the fake world is scoped."""
    tools = IncidentTools.open(context.settings, namespace=context.scope)
    try:
        yield tools.activities()
    finally:
        await tools.aclose()


def summarize(result: Any) -> str:
    """``incident id, rounds, tasks run``."""
    return (
        f"{result['incident_id']}, {result['rounds']} rounds, "
        f"tasks {', '.join(result['tasks_run'])}"
    )


APP = App(
    name="incident",
    workflows=[IncidentInvestigationWorkflow],
    entries=[
        Entry(
            "incident",
            IncidentInvestigationWorkflow,
            IncidentPage,
            MAX_PAGE_BYTES,
            wrap=lambda page: {"page": page},
            title_field="alert",
        )
    ],
    contracts=[INCIDENT_PLANNER],
    tools=list(INCIDENT_TOOLS),
    activities=open_activities,
    offline_rules={INCIDENT_PLANNER.name: plan_incident},
    offline_faults={kind: plan_fault(kind) for kind in sorted(PLAN_FAULT_KINDS)},
    samples=Path(__file__).parent / "samples",
    demo=[
        DemoRun(
            "incident, latency page",
            "incident",
            "incident-page",
            faults=[OfflineFault(kind="plan_unknown_tool", rounds=[1])],
            reviews={
                "approve-rollback": DemoReview(
                    "oncall.lead",
                    "approve",
                    "Latency spike starts two minutes after the deploy; roll back.",
                )
            },
        )
    ],
    summarize=summarize,
)
"""The incident investigation app."""

__all__ = ["APP", "IncidentInvestigationWorkflow"]
