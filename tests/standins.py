"""Test seams for planned work: a scripted planner (a keel.testing FunctionModel) and
stand-in tool activities registered under the real activity names (no monkeypatching)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from keel.contracts.tools import CATALOG, EffectReceipt, ToolCall, ToolResult, tool_activity_name
from keel.testing import FunctionModel, ModelRequest

SERVICE = "checkout-api"
INPUTS: dict[str, dict[str, Any]] = {
    "metrics_lookup": {"service": SERVICE, "metric": "p99_latency_ms", "window_minutes": 60},
    "deploy_history": {"service": SERVICE, "since_hours": 24},
    "alert_correlation": {"service": SERVICE, "window_minutes": 60},
    "rollback_deploy": {"service": SERVICE, "deploy_id": "d-142", "to_version": "1.41.3"},
    "roll_forward_deploy": {"service": SERVICE, "to_version": "1.42.0"},
    "update_incident": {"incident_id": "INC-1", "status": "mitigated", "note": "rolled back"},
}
ROLL_FORWARD = {"tool": "roll_forward_deploy", "input": INPUTS["roll_forward_deploy"]}


def task(
    ref: str,
    tool: str,
    *,
    after: Sequence[str] = (),
    gate: str | None = None,
    compensation: dict[str, Any] | None = None,
    **input_overrides: Any,
) -> dict[str, Any]:
    """A planned task with valid input for ``tool`` unless overridden."""
    planned: dict[str, Any] = {
        "ref": ref,
        "tool": tool,
        "input": {**INPUTS.get(tool, {}), **input_overrides},
        "depends_on": list(after),
        "purpose": f"test task {ref}",
    }
    if gate:
        planned["gate"] = {"title": gate}
    if compensation:
        planned["compensation"] = compensation
    return planned


def rollback(ref: str, *, after: Sequence[str] = ()) -> dict[str, Any]:
    return task(
        ref, "rollback_deploy", after=after, gate=f"Approve {ref}", compensation=ROLL_FORWARD
    )


def plan(
    *tasks: dict[str, Any],
    done: bool = False,
    summary: str = "scripted",
    conclusion: str | None = "mitigated",
) -> dict[str, Any]:
    return {
        "done": done,
        "conclusion": conclusion if done else None,
        "summary": summary,
        "tasks": list(tasks),
        "confidence": 0.9,
    }


class ScriptedPlanner(FunctionModel):
    """The planner contract answered from a script, one plan per call; a finished plan once
    the script ends. Every request is kept in ``requests``."""

    name = "scripted"

    def __init__(self, *plans: dict[str, Any]) -> None:
        self.plans = list(plans)
        super().__init__(self._next_plan, model="script-1")

    def _next_plan(self, request: ModelRequest) -> dict[str, Any]:
        return self.plans.pop(0) if self.plans else plan(done=True, summary="script ended")


class StandInTools:
    """Every catalog tool as an activity that records its calls.

    Args:
        fail: task refs whose tool fails permanently.
        together: task refs that must be running at the same time (a barrier: if they run
            one after another, they fail).
    """

    def __init__(self, *, fail: Sequence[str] = (), together: Sequence[str] = ()) -> None:
        self.log: list[tuple[str, str]] = []
        self.fail = set(fail)
        self.together = set(together)
        self._arrived: set[str] = set()
        self._all_arrived = asyncio.Event()

    def started(self) -> list[str]:
        return [ref for event, ref in self.log if event == "start"]

    def activities(self) -> list[Callable[..., Any]]:
        return [self._activity(name) for name in CATALOG.names()]

    def _activity(self, name: str) -> Callable[..., Any]:
        @activity.defn(name=tool_activity_name(name))
        async def run(call: ToolCall) -> ToolResult:
            return await self._run(call)

        return run

    async def _run(self, call: ToolCall) -> ToolResult:
        parts = call.idempotency_key.split("/")
        ref = "/".join(parts[2:]) if len(parts) > 2 else parts[-1]  # "<ref>" or "<ref>/compensate"
        self.log.append(("start", ref))
        if ref in self.together:
            self._arrived.add(ref)
            if self._arrived >= self.together:
                self._all_arrived.set()
            try:
                await asyncio.wait_for(self._all_arrived.wait(), timeout=10)
            except TimeoutError:
                raise ApplicationError(
                    "tasks did not run in parallel", non_retryable=True
                ) from None
        if ref in self.fail:
            self.log.append(("fail", ref))
            raise ApplicationError(
                f"stand-in {call.tool} failed", type="DeployConflict", non_retryable=True
            )
        self.log.append(("end", ref))
        spec = CATALOG.get(call.tool)
        effect = None
        if spec is not None and spec.side_effects:
            effect = EffectReceipt(
                idempotency_key=call.idempotency_key,
                provider_id=f"fake-{len(self.log)}",
                replayed=False,
            )
        return ToolResult(tool=call.tool, output={"ref": ref, **call.input}, effect=effect)
