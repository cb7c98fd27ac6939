"""validate_plan and execution_levels over the incident catalog and policy (no Temporal)."""

from __future__ import annotations

from typing import Any

import pytest

from keel.contracts.plans import (
    PlannerOutput,
    PlanPolicy,
    execution_levels,
    validate_plan,
)
from keel.contracts.tools import CATALOG
from keel.scenarios.incident.contracts import INCIDENT_POLICY

SERVICE = "checkout-api"


def metrics(ref: str, *deps: str, metric: str = "p99_latency_ms") -> dict[str, Any]:
    return {
        "ref": ref,
        "tool": "metrics_lookup",
        "input": {"service": SERVICE, "metric": metric, "window_minutes": 60},
        "depends_on": list(deps),
    }


def rollback(ref: str = "rollback", **overrides: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "ref": ref,
        "tool": "rollback_deploy",
        "input": {"service": SERVICE, "deploy_id": "dep-9f3a", "to_version": "1.41.3"},
        "gate": {"title": "Roll back checkout-api from 1.42.0 to 1.41.3"},
        "compensation": {
            "tool": "roll_forward_deploy",
            "input": {"service": SERVICE, "to_version": "1.42.0"},
        },
    }
    return {**task, **overrides}


def update_incident(ref: str = "update-incident", *deps: str) -> dict[str, Any]:
    return {
        "ref": ref,
        "tool": "update_incident",
        "input": {"incident_id": "INC-4711", "status": "mitigated", "note": "Rolled back."},
        "depends_on": list(deps),
    }


def plan(*tasks: dict[str, Any]) -> PlannerOutput:
    return PlannerOutput.model_validate(
        {"done": False, "summary": "test plan", "tasks": list(tasks), "confidence": 0.8}
    )


def reasons(*tasks: dict[str, Any], policy: PlanPolicy = INCIDENT_POLICY) -> list[str]:
    return validate_plan(plan(*tasks), CATALOG, policy)


def only(found: list[str]) -> str:
    assert len(found) == 1, found
    return found[0]


# --- valid plans ---------------------------------------------------------------------------


def test_valid_fan_out_plan_passes_and_runs_in_one_level() -> None:
    tasks = (
        metrics("metrics"),
        {
            "ref": "deploys",
            "tool": "deploy_history",
            "input": {"service": SERVICE, "since_hours": 24},
        },
        {
            "ref": "alerts",
            "tool": "alert_correlation",
            "input": {"service": SERVICE, "window_minutes": 120},
        },
    )
    assert reasons(*tasks) == []
    assert execution_levels(plan(*tasks).tasks) == [["alerts", "deploys", "metrics"]]


def test_valid_gated_compensated_rollback_then_update_passes() -> None:
    tasks = (rollback(), update_incident("update-incident", "rollback"))
    assert reasons(*tasks) == []
    assert execution_levels(plan(*tasks).tasks) == [["rollback"], ["update-incident"]]


def test_empty_plan_is_valid() -> None:
    assert reasons() == []
    assert execution_levels([]) == []


def test_execution_levels_group_by_depth_and_ignore_outside_refs() -> None:
    tasks = plan(
        metrics("a"),
        metrics("b"),
        metrics("c", "a", "b"),
        metrics("d", "c", "earlier-round"),
        metrics("e", "a"),
    ).tasks
    assert execution_levels(tasks) == [["a", "b"], ["c", "e"], ["d"]]


def test_execution_levels_is_none_on_a_cycle() -> None:
    assert execution_levels(plan(metrics("a", "b"), metrics("b", "a")).tasks) is None


# --- one reason at a time ------------------------------------------------------------------


def test_unknown_tool_is_named_with_the_catalog() -> None:
    reason = only(
        reasons(metrics("metrics"), {"ref": "restart", "tool": "kubectl_exec", "input": {}})
    )
    assert "task 'restart'" in reason
    assert "unknown tool 'kubectl_exec'" in reason
    assert "metrics_lookup" in reason  # the catalog is listed


def test_tool_not_allowed_by_the_policy() -> None:
    read_only = INCIDENT_POLICY.model_copy(
        update={"allowed_tools": ("metrics_lookup", "deploy_history", "alert_correlation")}
    )
    assert reasons(metrics("metrics"), policy=read_only) == []
    reason = only(reasons(metrics("metrics"), rollback(), policy=read_only))
    assert "task 'rollback'" in reason
    assert "'rollback_deploy' is not allowed" in reason
    assert "metrics_lookup, deploy_history, alert_correlation" in reason


def test_input_failing_the_tool_schema_names_the_field() -> None:
    bad = metrics("metrics")
    bad["input"]["window_minutes"] = "two hours"
    reason = only(reasons(bad))
    assert reason.startswith("task 'metrics': input.window_minutes:")


def test_missing_and_extra_input_fields_are_named() -> None:
    task = metrics("metrics")
    del task["input"]["service"]
    task["input"]["namespace"] = "prod"
    found = reasons(task)
    assert len(found) == 2, found
    assert any(r.startswith("task 'metrics': input.service:") for r in found)
    assert any(r.startswith("task 'metrics': input.namespace:") for r in found)


def test_depends_on_a_missing_task() -> None:
    reason = only(reasons(metrics("a"), metrics("b", "a", "baseline-check")))
    assert reason == "task 'b' depends on missing task 'baseline-check'"


def test_self_dependency() -> None:
    assert only(reasons(metrics("a", "a"))) == "task 'a' depends on itself"


def test_duplicate_refs() -> None:
    reason = only(reasons(metrics("metrics"), metrics("metrics", metric="error_rate")))
    assert reason == "task ref 'metrics' is used more than once"


def test_cycle_reason_shows_the_cycle_path() -> None:
    reason = only(reasons(metrics("a", "c"), metrics("b", "a"), metrics("c", "b")))
    assert reason == "the dependencies form a cycle: a -> c -> b -> a"


def test_cycle_path_leaves_out_tasks_that_only_wait_on_it() -> None:
    # 'a' waits on the cycle b <-> c but is not part of it.
    reason = only(reasons(metrics("a", "b"), metrics("b", "c"), metrics("c", "b")))
    assert reason == "the dependencies form a cycle: b -> c -> b"


def test_too_many_tasks() -> None:
    n = INCIDENT_POLICY.max_tasks_per_plan + 1
    # A chain, so only the count is wrong (not the fan-out width).
    tasks = [metrics("t0"), *(metrics(f"t{i}", f"t{i - 1}") for i in range(1, n))]
    reason = only(reasons(*tasks))
    assert reason == (
        f"the plan has {n} tasks; the policy allows at most {INCIDENT_POLICY.max_tasks_per_plan}"
    )


def test_fan_out_wider_than_the_policy_but_a_chain_of_the_same_size_passes() -> None:
    width = INCIDENT_POLICY.max_fanout_width + 1
    assert width <= INCIDENT_POLICY.max_tasks_per_plan
    wide = [metrics(f"t{i}") for i in range(width)]
    reason = only(reasons(*wide))
    assert reason == (
        f"{width} tasks would run in parallel; the policy allows at most "
        f"{INCIDENT_POLICY.max_fanout_width}"
    )
    chain = [metrics("t0"), *(metrics(f"t{i}", f"t{i - 1}") for i in range(1, width))]
    assert reasons(*chain) == []
    assert execution_levels(plan(*chain).tasks) == [[f"t{i}"] for i in range(width)]


def test_fan_out_at_the_limit_passes() -> None:
    assert reasons(*(metrics(f"t{i}") for i in range(INCIDENT_POLICY.max_fanout_width))) == []


def test_side_effecting_task_without_gate() -> None:
    reason = only(reasons(rollback(gate=None)))
    assert (
        reason == "task 'rollback': tool 'rollback_deploy' has side effects and needs a human gate"
    )


def test_gate_exempt_update_incident_passes_ungated() -> None:
    assert "update_incident" in INCIDENT_POLICY.gate_exempt_tools
    assert reasons(update_incident()) == []


def test_update_incident_needs_a_gate_when_not_exempt() -> None:
    strict = INCIDENT_POLICY.model_copy(update={"gate_exempt_tools": ()})
    reason = only(reasons(update_incident(), policy=strict))
    assert "task 'update-incident'" in reason and "needs a human gate" in reason


def test_needs_approval_tool_needs_a_gate_even_when_exempt() -> None:
    lax = INCIDENT_POLICY.model_copy(
        update={"side_effects_require_gate": False, "gate_exempt_tools": ("rollback_deploy",)}
    )
    assert "needs a human gate" in only(reasons(rollback(gate=None), policy=lax))


def test_rollback_without_compensation() -> None:
    reason = only(reasons(rollback(compensation=None)))
    assert reason == "task 'rollback': tool 'rollback_deploy' must declare a compensation"


@pytest.mark.parametrize("tool", ["update_incident", "metrics_lookup", "kubectl_exec"])
def test_compensation_with_a_tool_not_allowed_to_compensate(tool: str) -> None:
    task = rollback(compensation={"tool": tool, "input": {"service": SERVICE}})
    reason = only(reasons(task))
    assert reason == (
        f"task 'rollback': {tool!r} cannot compensate 'rollback_deploy' "
        "(allowed: roll_forward_deploy)"
    )


def test_compensation_on_a_tool_without_compensations() -> None:
    task = {
        **metrics("metrics"),
        "compensation": {"tool": "roll_forward_deploy", "input": {"service": SERVICE}},
    }
    reason = only(reasons(task))
    assert "cannot compensate 'metrics_lookup' (allowed: none)" in reason


def test_compensation_input_failing_its_schema() -> None:
    task = rollback(
        compensation={"tool": "roll_forward_deploy", "input": {"service": SERVICE, "version": "1"}}
    )
    found = reasons(task)
    assert len(found) == 2, found
    assert any(r.startswith("task 'rollback': compensation.input.to_version:") for r in found)
    assert any(r.startswith("task 'rollback': compensation.input.version:") for r in found)


# --- every reason at once ------------------------------------------------------------------


def test_every_reason_is_reported_at_once() -> None:
    bad_input = metrics("metrics")
    bad_input["input"]["metric"] = "latency"
    tasks = (
        bad_input,
        metrics("deploys"),
        metrics("deploys", metric="error_rate"),
        {"ref": "restart", "tool": "kubectl_exec", "input": {}},
        rollback(gate=None, compensation=None),
        metrics("after", "rollback", "ghost"),
        metrics("me", "me"),
    )
    assert len(tasks) > INCIDENT_POLICY.max_tasks_per_plan
    found = reasons(*tasks)
    expected = [
        "the plan has 7 tasks",
        "task ref 'deploys' is used more than once",
        "task 'metrics': input.metric:",
        "task 'restart': unknown tool 'kubectl_exec'",
        "task 'rollback': tool 'rollback_deploy' has side effects and needs a human gate",
        "task 'rollback': tool 'rollback_deploy' must declare a compensation",
        "task 'after' depends on missing task 'ghost'",
        "task 'me' depends on itself",
    ]
    for fragment in expected:
        assert any(fragment in r for r in found), (fragment, found)
    assert len(found) == len(expected), found


def test_every_problem_of_one_task_is_reported() -> None:
    task = rollback(gate=None, compensation=None, depends_on=["ghost"])
    task["input"] = {"service": SERVICE, "deploy_id": ""}
    found = reasons(task)
    assert len(found) == 5, found
    assert all(r.startswith("task 'rollback'") for r in found)


def test_a_cycle_is_reported_with_other_problems() -> None:
    found = reasons(metrics("a", "b"), metrics("b", "a"), metrics("c", "ghost"))
    assert any("cycle" in r for r in found), found


def test_an_unknown_tool_does_not_hide_a_missing_dependency() -> None:
    found = reasons({"ref": "x", "tool": "kubectl", "input": {}, "depends_on": ["nope"]})
    assert any("unknown tool 'kubectl'" in r for r in found), found
    assert any("missing task 'nope'" in r for r in found), found


def test_a_compensation_tool_must_be_allowed_by_the_policy() -> None:
    policy = INCIDENT_POLICY.model_copy(update={"allowed_tools": ("rollback_deploy",)})
    rollback = {
        "ref": "rb",
        "tool": "rollback_deploy",
        "input": {"service": SERVICE, "deploy_id": "d-1", "to_version": "1.41.3"},
        "gate": {"title": "Roll back"},
        "compensation": {
            "tool": "roll_forward_deploy",
            "input": {"service": SERVICE, "to_version": "1.42.0"},
        },
    }
    assert reasons(rollback, policy=policy) == [
        "task 'rb': compensation tool 'roll_forward_deploy' is not allowed here"
    ]
