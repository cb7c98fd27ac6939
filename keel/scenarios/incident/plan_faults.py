"""Plan faults of the offline model: a valid plan made invalid in one specific way.

Each fault mimics a mistake a real planner makes (an invented tool, a dependency cycle, a
malformed input, ...). The offline provider applies them only to a first answer, without
feedback, so a demo shows the plan rejected, the reasons fed back and a valid re-plan.
When the plan has no task the fault can bend, a task is added, so the fault always
produces the violation it names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any

from pydantic import ValidationError

from keel.scenarios.incident.contracts import INCIDENT_POLICY, Deploy, DeployHistoryOutput

UNKNOWN_TOOL = "kubectl_exec"
MISSING_REF = "baseline-check"
# Field -> a value its tool's schema refuses (the type or the range is wrong).
_BAD_VALUES: tuple[tuple[str, Any], ...] = (
    ("window_minutes", "two hours"),
    ("since_hours", 0),
    ("status", "fixed"),
    ("to_version", ""),
)
_EXTRA_METRICS = ("error_rate", "cpu_percent", "p99_latency_ms")

Task = dict[str, Any]


def corrupt_plan(
    kind: str, output: dict[str, Any], node_input: Mapping[str, Any]
) -> dict[str, Any]:
    """``output`` with its plan made invalid the way ``kind`` says; unchanged when ``output``
    is not a plan (has no ``tasks`` list) or ``kind`` is not a plan fault."""
    if kind not in PLAN_FAULT_KINDS or not isinstance(output.get("tasks"), list):
        return output
    plan = copy.deepcopy(output)
    tasks: list[Task] = plan["tasks"]
    _MUTATIONS[kind](tasks, _service(tasks, node_input), node_input)
    plan["summary"] = f"{plan.get('summary', '')} [offline fault injected: {kind}]".strip()
    return plan


def _unknown_tool(tasks: list[Task], service: str, node_input: Mapping[str, Any]) -> None:
    tasks.append(
        {
            "ref": _fresh_ref(tasks, "restart-pods"),
            "tool": UNKNOWN_TOOL,
            "input": {"command": f"kubectl rollout restart deployment/{service}"},
            "purpose": "Restart the pods (a tool the catalog does not have).",
        }
    )


def _cycle(tasks: list[Task], service: str, node_input: Mapping[str, Any]) -> None:
    while len(tasks) < 2:
        tasks.append(_read_task(tasks, service, len(tasks)))
    first, second = tasks[0], tasks[1]
    first["depends_on"] = [*first.get("depends_on", []), second["ref"]]
    second["depends_on"] = [*second.get("depends_on", []), first["ref"]]


def _bad_input(tasks: list[Task], service: str, node_input: Mapping[str, Any]) -> None:
    if not tasks:
        tasks.append(_read_task(tasks, service, 0))
    for field, bad in _BAD_VALUES:
        for task in tasks:
            if field in task["input"]:
                task["input"][field] = bad
                return
    tasks[0]["input"]["namespace"] = "production"  # every tool input forbids extra fields


def _too_many_tasks(tasks: list[Task], service: str, node_input: Mapping[str, Any]) -> None:
    i = 0
    while len(tasks) <= INCIDENT_POLICY.max_tasks_per_plan:
        tasks.append(_read_task(tasks, service, i))
        i += 1


def _missing_dependency(tasks: list[Task], service: str, node_input: Mapping[str, Any]) -> None:
    if not tasks:
        tasks.append(_read_task(tasks, service, 0))
    tasks[-1]["depends_on"] = [*tasks[-1].get("depends_on", []), MISSING_REF]


def _ungated_side_effect(tasks: list[Task], service: str, node_input: Mapping[str, Any]) -> None:
    _rollback_task(tasks, service, node_input)["gate"] = None


def _missing_compensation(tasks: list[Task], service: str, node_input: Mapping[str, Any]) -> None:
    _rollback_task(tasks, service, node_input)["compensation"] = None


_MUTATIONS: dict[str, Callable[[list[Task], str, Mapping[str, Any]], None]] = {
    "plan_unknown_tool": _unknown_tool,
    "plan_cycle": _cycle,
    "plan_bad_input": _bad_input,
    "plan_too_many_tasks": _too_many_tasks,
    "plan_missing_dependency": _missing_dependency,
    "plan_ungated_side_effect": _ungated_side_effect,
    "plan_missing_compensation": _missing_compensation,
}


# --- helpers ---------------------------------------------------------------------------------


def _rollback_task(tasks: list[Task], service: str, node_input: Mapping[str, Any]) -> Task:
    """The plan's rollback task, or a new, gated and compensated one after the others."""
    for task in tasks:
        if task.get("tool") == "rollback_deploy":
            return task
    deploy_id, version, previous = _latest_deploy(node_input, service)
    task = {
        "ref": _fresh_ref(tasks, "rollback"),
        "tool": "rollback_deploy",
        "input": {"service": service, "deploy_id": deploy_id, "to_version": previous},
        "depends_on": [t["ref"] for t in tasks],
        "gate": {"title": f"Roll back {service} from {version} to {previous}"},
        "compensation": {
            "tool": "roll_forward_deploy",
            "input": {"service": service, "to_version": version},
        },
        "purpose": "Roll back the latest deploy.",
    }
    tasks.append(task)
    return task


def _latest_deploy(node_input: Mapping[str, Any], service: str) -> tuple[str, str, str]:
    """(deploy id, version, previous version) of the newest deploy in the findings."""
    deploys: list[Deploy] = []
    for finding in node_input.get("findings") or []:
        if not isinstance(finding, Mapping) or finding.get("tool") != "deploy_history":
            continue
        try:
            history = DeployHistoryOutput.model_validate(finding.get("output") or {})
        except ValidationError:
            continue
        if history.service == service:
            deploys += history.deploys
    if not deploys:
        return "latest", "current", "previous"
    newest = max(deploys, key=lambda d: d.at.replace(tzinfo=d.at.tzinfo or UTC).timestamp())
    return newest.deploy_id, newest.version, newest.previous_version


def _read_task(tasks: list[Task], service: str, i: int) -> Task:
    """A valid, independent metrics read (varied, so repeated reads differ)."""
    metric = _EXTRA_METRICS[i % len(_EXTRA_METRICS)]
    return {
        "ref": _fresh_ref(tasks, f"extra-{metric.replace('_', '-')}"),
        "tool": "metrics_lookup",
        "input": {"service": service, "metric": metric, "window_minutes": 60 + 30 * i},
        "purpose": f"Also look at {metric}.",
    }


def _service(tasks: list[Task], node_input: Mapping[str, Any]) -> str:
    incident = node_input.get("incident") or {}
    if isinstance(incident, Mapping) and incident.get("service"):
        return str(incident["service"])
    for task in tasks:
        if isinstance(task.get("input"), Mapping) and task["input"].get("service"):
            return str(task["input"]["service"])
    return "unknown-service"


def _fresh_ref(tasks: list[Task], base: str) -> str:
    refs = {t.get("ref") for t in tasks}
    if base not in refs:
        return base
    n = 2
    while f"{base}-{n}" in refs:
        n += 1
    return f"{base}-{n}"


PLAN_FAULT_KINDS = frozenset(_MUTATIONS)
"""The plan faults this app registers with the offline model (``plan_unknown_tool``, ...)."""


def plan_fault(kind: str) -> Callable[[dict[str, Any], Mapping[str, Any]], dict[str, Any]]:
    """The offline-model fault function of plan fault ``kind``."""
    return lambda output, node_input: corrupt_plan(kind, output, node_input)
