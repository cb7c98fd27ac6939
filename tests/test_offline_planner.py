"""The offline incident planner over realistic findings, and the offline model's plan faults.

Findings are built by hand, shaped like the tool outputs and validated with the tools'
output models, so these tests fail if the shapes drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from keel.activities.providers.base import ModelRequest
from keel.contracts.plans import PlannerOutput, execution_levels, validate_plan
from keel.contracts.tools import CATALOG
from keel.offline import OfflineFault, rule_for
from keel.offline.provider import OfflineProvider
from keel.scenarios.incident.contracts import (
    INCIDENT_PLANNER,
    INCIDENT_POLICY,
    AlertCorrelationOutput,
    DeployChangeOutput,
    DeployHistoryOutput,
    Finding,
    IncidentPage,
    IncidentPlannerInput,
    MetricsLookupOutput,
)
from keel.scenarios.incident.offline import plan_incident

ANOMALY = datetime(2025, 3, 4, 14, 5, tzinfo=UTC)
Json = dict[str, Any]


class Scenario(BaseModel):
    """One incident's world: the service, its deploys and what its tools report."""

    incident_id: str
    service: str
    suspect_id: str
    version: str
    previous: str
    older_id: str
    older_version: str


CHECKOUT = Scenario(
    incident_id="INC-4711",
    service="checkout-api",
    suspect_id="dep-9f3a",
    version="1.42.0",
    previous="1.41.3",
    older_id="dep-8e21",
    older_version="1.41.2",
)
SEARCH = Scenario(
    incident_id="PD-20250304-17",
    service="search-indexer",
    suspect_id="rel-0042",
    version="2024.11.7",
    previous="2024.11.6",
    older_id="rel-0041",
    older_version="2024.11.5",
)


# --- findings, shaped like the tool outputs ------------------------------------------------


def finding(round_: int, ref: str, tool: str, model: type[BaseModel], raw: dict[str, Any]) -> Json:
    output = model.model_validate(raw).model_dump(mode="json")
    return Finding(round=round_, ref=ref, tool=tool, output=output).model_dump(mode="json")


def at(minutes_from_anomaly: float) -> str:
    return (ANOMALY + timedelta(minutes=minutes_from_anomaly)).isoformat()


def metrics_finding(s: Scenario, *, anomaly: bool = True) -> Json:
    raw = {
        "service": s.service,
        "metric": "p99_latency_ms",
        "baseline": 180.0,
        "current": 2_150.0 if anomaly else 185.0,
        "peak": 2_430.0 if anomaly else 212.0,
        "anomaly_started_at": at(0) if anomaly else None,
    }
    return finding(1, "metrics", "metrics_lookup", MetricsLookupOutput, raw)


def deploy(deploy_id: str, version: str, previous: str, minutes: float, who: str) -> Json:
    return {
        "deploy_id": deploy_id,
        "version": version,
        "previous_version": previous,
        "at": at(minutes),
        "author": who,
        "summary": f"release {version}",
    }


def deploys_finding(s: Scenario, *, suspect_minutes: float = -7, after: bool = True) -> Json:
    """Newest first: maybe a config push after the anomaly, the suspect, an older deploy."""
    deploys = [
        deploy(s.suspect_id, s.version, s.previous, suspect_minutes, "alice"),
        deploy(s.older_id, s.previous, s.older_version, suspect_minutes - 40, "bob"),
    ]
    if after:
        # After the anomaly started: cannot have caused it.
        deploys.insert(0, deploy("cfg-late", "cfg-7", s.version, 25, "carol"))
    raw = {"service": s.service, "current_version": s.version, "deploys": deploys}
    return finding(1, "deploys", "deploy_history", DeployHistoryOutput, raw)


def alerts_finding(
    s: Scenario, *, alerts: bool = True, others: Sequence[str] = (), others_at: float = 12
) -> Json:
    """Alerts on the service 3 and 9 minutes into the anomaly; others' at ``others_at``."""
    fired = [
        {"name": "P99LatencyHigh", "service": s.service, "at": at(3), "severity": "sev2"},
        {"name": "CheckoutErrorBudgetBurn", "service": s.service, "at": at(9), "severity": "sev3"},
    ]
    fired += [
        {"name": "TimeoutsToUpstream", "service": o, "at": at(others_at), "severity": "sev3"}
        for o in others
    ]
    raw = {
        "service": s.service,
        "alerts": fired if alerts else [],
        "correlated_services": list(others),
    }
    return finding(1, "alerts", "alert_correlation", AlertCorrelationOutput, raw)


def rollback_finding(s: Scenario) -> Json:
    raw = {
        "service": s.service,
        "from_version": s.version,
        "to_version": s.previous,
        "action_id": "act-5521",
    }
    return finding(2, "rollback", "rollback_deploy", DeployChangeOutput, raw)


def round_one(s: Scenario, **deploy_kw: Any) -> list[Json]:
    return [metrics_finding(s), deploys_finding(s, **deploy_kw), alerts_finding(s)]


def planner_input(
    s: Scenario, round_: int, findings: Sequence[Json] = (), actions: Sequence[str] = ()
) -> dict[str, Any]:
    """The node input, as the agent node hands it to the model (JSON-mode dump)."""
    page = IncidentPage(
        incident_id=s.incident_id,
        service=s.service,
        alert="p99 latency above SLO",
        severity="sev2",
        summary=f"{s.service} p99 latency above 2s for 10 minutes",
        opened_at=ANOMALY + timedelta(minutes=8),
    )
    tools = [spec.describe() for n in INCIDENT_POLICY.allowed_tools if (spec := CATALOG.get(n))]
    return IncidentPlannerInput(
        incident=page.model_dump(mode="json"),
        round=round_,
        findings=[Finding.model_validate(f) for f in findings],
        actions=list(actions),
        tools=tools,
        policy=INCIDENT_POLICY.model_dump(mode="json"),
    ).model_dump(mode="json")


def checked(raw: dict[str, Any]) -> PlannerOutput:
    """``raw`` as a plan that passes validation."""
    plan = PlannerOutput.model_validate(raw)
    assert validate_plan(plan, CATALOG, INCIDENT_POLICY) == []
    assert 0.5 <= plan.confidence <= 0.95
    assert plan.summary.startswith("Offline rule-based planner (not an LLM)")
    return plan


def rollback_state(s: Scenario) -> tuple[list[Json], list[str]]:
    findings = [*round_one(s), rollback_finding(s)]
    return findings, [f"rollback_deploy: {s.service} {s.version} -> {s.previous}"]


# --- the planner ---------------------------------------------------------------------------


def test_registered_for_the_incident_planner_contract() -> None:
    assert rule_for(INCIDENT_PLANNER.name) is plan_incident


@pytest.mark.parametrize("s", [CHECKOUT, SEARCH], ids=lambda s: s.service)
def test_round_one_fans_out_three_independent_reads(s: Scenario) -> None:
    plan = checked(plan_incident(planner_input(s, 1), []))
    assert not plan.done
    by_ref = {t.ref: t for t in plan.tasks}
    assert sorted(by_ref) == ["alerts", "deploys", "metrics"]
    assert by_ref["metrics"].tool == "metrics_lookup"
    assert by_ref["metrics"].input == {
        "service": s.service,
        "metric": "p99_latency_ms",
        "window_minutes": 120,
    }
    assert by_ref["deploys"].tool == "deploy_history"
    assert by_ref["deploys"].input == {"service": s.service, "since_hours": 24}
    assert by_ref["alerts"].tool == "alert_correlation"
    assert by_ref["alerts"].input == {"service": s.service, "window_minutes": 120}
    assert all(not t.depends_on and t.gate is None and t.compensation is None for t in plan.tasks)
    assert all(s.service in t.purpose for t in plan.tasks)
    assert execution_levels(plan.tasks) == [["alerts", "deploys", "metrics"]]


@pytest.mark.parametrize("s", [CHECKOUT, SEARCH], ids=lambda s: s.service)
def test_round_two_proposes_a_gated_compensated_rollback_of_the_suspect(s: Scenario) -> None:
    plan = checked(plan_incident(planner_input(s, 2, round_one(s)), []))
    assert not plan.done
    (task,) = plan.tasks
    assert task.ref == "rollback"
    assert task.tool == "rollback_deploy"
    assert task.input == {"service": s.service, "deploy_id": s.suspect_id, "to_version": s.previous}
    assert task.gate is not None
    assert task.gate.title == f"Roll back {s.service} from {s.version} to {s.previous}"
    assert set(task.gate.model_dump()) == {"title"}  # who approves is the policy's call
    assert task.compensation is not None
    assert task.compensation.tool == "roll_forward_deploy"
    assert task.compensation.input == {"service": s.service, "to_version": s.version}
    # The summary explains the evidence.
    for fragment in (
        "2025-03-04 14:05 UTC",  # anomaly start
        "2025-03-04 13:58 UTC",  # deploy time
        "7 minutes before",
        s.suspect_id,
        s.version,
        s.previous,
        "P99LatencyHigh",
    ):
        assert fragment in plan.summary, (fragment, plan.summary)


def test_the_suspect_is_the_latest_deploy_at_or_before_the_anomaly() -> None:
    s = CHECKOUT
    # The suspect lands exactly when the anomaly starts; a later config push is ignored.
    plan = checked(plan_incident(planner_input(s, 2, round_one(s, suspect_minutes=0)), []))
    assert plan.tasks[0].input["deploy_id"] == s.suspect_id
    # Only the older deploy is in the window: it is the one rolled back.
    older_only = [
        metrics_finding(s),
        finding(
            1,
            "deploys",
            "deploy_history",
            DeployHistoryOutput,
            {
                "service": s.service,
                "current_version": s.version,
                "deploys": [
                    deploy(s.suspect_id, s.version, s.previous, 2, "alice"),
                    deploy(s.older_id, s.previous, s.older_version, -50, "bob"),
                ],
            },
        ),
        alerts_finding(s),
    ]
    plan = checked(plan_incident(planner_input(s, 2, older_only), []))
    assert plan.tasks[0].input == {
        "service": s.service,
        "deploy_id": s.older_id,
        "to_version": s.older_version,
    }
    assert plan.tasks[0].compensation is not None
    assert plan.tasks[0].compensation.input["to_version"] == s.previous


def test_a_deploy_more_than_an_hour_before_does_not_explain_the_anomaly() -> None:
    s = SEARCH
    findings = round_one(s, suspect_minutes=-75, after=False)
    plan = checked(plan_incident(planner_input(s, 2, findings), []))
    assert plan.done
    (task,) = plan.tasks
    assert task.ref == "update-incident"
    assert task.tool == "update_incident"
    assert task.input["incident_id"] == s.incident_id
    assert task.input["status"] == "investigating"
    note = task.input["note"]
    assert "p99_latency_ms" in note and "2025-03-04 14:05 UTC" in note
    assert "no deploy in the 60 minutes before it explains it" in note
    assert f"{s.suspect_id} {s.version}, landed 75 minutes before" in note


def test_an_anomaly_with_no_deploys_at_all() -> None:
    s = CHECKOUT
    empty = finding(
        1,
        "deploys",
        "deploy_history",
        DeployHistoryOutput,
        {"service": s.service, "current_version": s.version, "deploys": []},
    )
    plan = checked(plan_incident(planner_input(s, 2, [metrics_finding(s), empty]), []))
    assert plan.done
    assert plan.tasks[0].input["status"] == "investigating"
    assert "no deploy" in plan.tasks[0].input["note"]


@pytest.mark.parametrize("s", [CHECKOUT, SEARCH], ids=lambda s: s.service)
def test_no_anomaly_notes_it_and_stops(s: Scenario) -> None:
    findings = [
        metrics_finding(s, anomaly=False),
        deploys_finding(s),
        alerts_finding(s, alerts=False),
    ]
    plan = checked(plan_incident(planner_input(s, 2, findings), []))
    assert plan.done
    (task,) = plan.tasks
    assert task.tool == "update_incident" and task.ref == "update-incident"
    assert task.input["incident_id"] == s.incident_id
    assert task.input["status"] == "investigating"
    assert "No anomaly found" in task.input["note"]
    assert "no suspect deploy" in task.input["note"]


@pytest.mark.parametrize("s", [CHECKOUT, SEARCH], ids=lambda s: s.service)
def test_after_the_rollback_it_updates_the_incident_and_is_done(s: Scenario) -> None:
    findings, actions = rollback_state(s)
    plan = checked(plan_incident(planner_input(s, 3, findings, actions), []))
    assert plan.done
    (task,) = plan.tasks
    assert task.ref == "update-incident"
    assert task.tool == "update_incident"
    assert task.input["incident_id"] == s.incident_id
    assert task.input["status"] == "mitigated"
    note = task.input["note"]
    assert f"{s.version} -> {s.previous}" in note
    assert s.suspect_id in note and "P99LatencyHigh" in note


def test_a_rollback_finding_alone_counts_as_the_action() -> None:
    s = CHECKOUT
    findings, _ = rollback_state(s)
    plan = checked(plan_incident(planner_input(s, 3, findings, []), []))
    assert plan.done
    assert plan.tasks[0].input["status"] == "mitigated"
    assert "act-5521" in plan.tasks[0].input["note"]


def test_an_action_alone_counts_as_the_rollback() -> None:
    s = CHECKOUT
    action = f"rollback_deploy: {s.service} {s.version} -> {s.previous}"
    plan = checked(plan_incident(planner_input(s, 3, round_one(s), [action]), []))
    assert plan.done
    assert plan.tasks[0].input["status"] == "mitigated"
    assert action in plan.tasks[0].input["note"]


def test_confidence_follows_the_evidence() -> None:
    s = CHECKOUT

    def confidence(findings: list[Json]) -> float:
        return checked(plan_incident(planner_input(s, 2, findings), [])).confidence

    tight = confidence(round_one(s, suspect_minutes=-5))
    loose = confidence(
        [
            metrics_finding(s),
            deploys_finding(s, suspect_minutes=-50),
            alerts_finding(s, alerts=False),
        ]
    )
    upstream = confidence(
        [
            metrics_finding(s),
            deploys_finding(s, suspect_minutes=-5),
            alerts_finding(s, others=["orders-db"], others_at=1),
        ]
    )
    assert 0.5 <= loose < upstream < tight <= 0.95


def test_other_services_alerting_first_or_after() -> None:
    s = CHECKOUT

    def plan_with(others_at: float) -> PlannerOutput:
        alerts = alerts_finding(s, others=["payments-gateway"], others_at=others_at)
        findings = [metrics_finding(s), deploys_finding(s, suspect_minutes=-5), alerts]
        return checked(plan_incident(planner_input(s, 2, findings), []))

    alone = checked(plan_incident(planner_input(s, 2, round_one(s, suspect_minutes=-5)), []))
    downstream, upstream = plan_with(12), plan_with(1)
    assert downstream.confidence == alone.confidence
    assert "Alerting after checkout-api: payments-gateway (likely downstream)" in downstream.summary
    assert upstream.confidence < alone.confidence
    assert "no later than checkout-api: payments-gateway" in upstream.summary


def test_deterministic_and_feedback_is_acknowledged() -> None:
    node_input = planner_input(CHECKOUT, 2, round_one(CHECKOUT))
    assert plan_incident(node_input, []) == plan_incident(node_input, [])
    replanned = checked(plan_incident(node_input, ["task 'x': unknown tool 'kubectl_exec'"]))
    first = checked(plan_incident(node_input, []))
    assert replanned.tasks == first.tasks
    assert "Re-planned" in replanned.summary


# --- plan faults through the offline model -------------------------------------------------

INTENDED = {
    "plan_unknown_tool": "unknown tool 'kubectl_exec'",
    "plan_cycle": "the dependencies form a cycle: ",
    "plan_bad_input": ": input.",
    "plan_too_many_tasks": f"the policy allows at most {INCIDENT_POLICY.max_tasks_per_plan}",
    "plan_missing_dependency": "depends on missing task 'baseline-check'",
    "plan_ungated_side_effect": "'rollback_deploy' has side effects and needs a human gate",
    "plan_missing_compensation": "'rollback_deploy' must declare a compensation",
}
STATES = {
    "fan-out": lambda s: planner_input(s, 1),
    "rollback": lambda s: planner_input(s, 2, round_one(s)),
    "update": lambda s: planner_input(s, 3, *rollback_state(s)),
}


def model_request(node_input: dict[str, Any], feedback: Sequence[str] = ()) -> ModelRequest:
    return ModelRequest(
        system=INCIDENT_PLANNER.system_prompt,
        prompt=INCIDENT_PLANNER.render_prompt(node_input, feedback),
        output_schema=INCIDENT_PLANNER.output_model.model_json_schema(),
        schema_name=INCIDENT_PLANNER.schema_name,
        timeout_seconds=60,
        contract=INCIDENT_PLANNER.key,
        input=node_input,
        feedback=tuple(feedback),
        workflow_id="incident-INC-4711",
    )


async def answer(provider: OfflineProvider, request: ModelRequest) -> PlannerOutput:
    """The model's answer as a plan: schema-valid, whatever validate_plan says of it."""
    return PlannerOutput.model_validate(json.loads((await provider.complete(request)).text))


def problems(plan: PlannerOutput) -> list[str]:
    return validate_plan(plan, CATALOG, INCIDENT_POLICY)


@pytest.mark.parametrize("state", sorted(STATES))
@pytest.mark.parametrize("kind", sorted(INTENDED))
async def test_plan_fault_makes_the_plan_invalid_and_feedback_recovers(
    kind: str, state: str
) -> None:
    provider = OfflineProvider([OfflineFault(kind=kind, contract=INCIDENT_PLANNER.key)])
    node_input = STATES[state](CHECKOUT)

    faulty = await answer(provider, model_request(node_input))
    found = problems(faulty)
    assert any(INTENDED[kind] in r for r in found), (kind, state, found)
    assert kind in faulty.summary  # the injection is not hidden

    reasons = found
    recovered = await answer(provider, model_request(node_input, reasons))
    assert problems(recovered) == []
    assert recovered.tasks == (await answer(OfflineProvider(), model_request(node_input))).tasks


async def test_too_many_tasks_counts_past_the_policy() -> None:
    provider = OfflineProvider([OfflineFault(kind="plan_too_many_tasks")])
    plan = await answer(provider, model_request(planner_input(CHECKOUT, 1)))
    assert len(plan.tasks) == INCIDENT_POLICY.max_tasks_per_plan + 1
    found = problems(plan)
    assert found[0] == (
        f"the plan has {len(plan.tasks)} tasks; the policy allows at most "
        f"{INCIDENT_POLICY.max_tasks_per_plan}"
    )
    # The padding is parallel reads, so the plan is also wider than the policy allows.
    assert found[1:] == [
        f"{len(plan.tasks)} tasks would run in parallel; the policy allows at most "
        f"{INCIDENT_POLICY.max_fanout_width}"
    ]


async def test_added_rollback_uses_the_deploy_in_the_findings() -> None:
    s = SEARCH
    provider = OfflineProvider([OfflineFault(kind="plan_ungated_side_effect")])
    # After the rollback the plan is only update-incident: a rollback task is added.
    plan = await answer(provider, model_request(planner_input(s, 3, *rollback_state(s))))
    added = next(t for t in plan.tasks if t.tool == "rollback_deploy")
    assert added.gate is None and added.compensation is not None
    assert added.input["deploy_id"] == "cfg-late"  # the newest deploy in the findings
    assert problems(plan) == [
        f"task {added.ref!r}: tool 'rollback_deploy' has side effects and needs a human gate"
    ]


async def test_rounds_filter_picks_the_planning_round() -> None:
    provider = OfflineProvider([OfflineFault(kind="plan_cycle", rounds=[2])])
    round_1 = await answer(provider, model_request(planner_input(CHECKOUT, 1)))
    round_2 = await answer(provider, model_request(planner_input(CHECKOUT, 2, round_one(CHECKOUT))))
    assert problems(round_1) == []
    assert any("cycle" in r for r in problems(round_2))


async def test_faults_still_honour_agent_attempts() -> None:
    provider = OfflineProvider([OfflineFault(kind="plan_cycle", agent_attempts=[2])])
    request = model_request(planner_input(CHECKOUT, 1))
    assert problems(await answer(provider, request)) == []


async def test_plan_fault_leaves_answers_that_are_not_plans_alone() -> None:
    fault = OfflineFault(kind="plan_unknown_tool")
    request = ModelRequest(
        system="",
        prompt="",
        output_schema={},
        schema_name="risk_classifier_v1",
        timeout_seconds=10,
        contract="risk-classifier@1",
        input={"clauses": [], "annual_value_usd": 10_000, "jurisdiction": "Delaware"},
    )
    faulty = await OfflineProvider([fault]).complete(request)
    clean = await OfflineProvider().complete(request)
    assert faulty.text == clean.text


def test_offline_faults_parse_plan_kinds_and_rounds() -> None:
    fault = OfflineFault.model_validate(
        {"kind": "plan_missing_compensation", "rounds": [2, 3], "contract": "incident-planner@1"}
    )
    assert fault.rounds == [2, 3]
    assert OfflineFault(kind="malformed_json").rounds is None
