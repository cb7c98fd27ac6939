"""On-call incident investigation: a planner proposes work each round; Keel validates it,
runs it as child workflows, feeds results back, and compensates on failure."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from keel.contracts.agent import canonical_json
    from keel.contracts.ledger import (
        ContinuedAsNew,
        LedgerContinued,
        PlanProposed,
        PlanRejected,
        WorkflowCompleted,
    )
    from keel.contracts.plans import PlannerOutput, validate_plan
    from keel.contracts.tools import CATALOG, ToolResult
    from keel.scenarios.incident.contracts import (
        INCIDENT_PLANNER,
        INCIDENT_POLICY,
        MAX_PAGE_BYTES,
        Finding,
        IncidentCarry,
        IncidentPage,
        IncidentPlannerInput,
        IncidentResult,
    )

from keel.workflows.base import KeelWorkflow
from keel.workflows.plan_executor import CompletedTask, PlanExecutor

Outcome = Literal["mitigated", "handed-over", "round-limit", "compensated"]


@workflow.defn(name="IncidentInvestigation")
class IncidentInvestigationWorkflow(KeelWorkflow):
    """Input: ``{"page": IncidentPage}`` (``"carry": null`` allowed); a continued run's input
    is the sealed state of ``KeelWorkflow.continue_as_new``, ``{"page", "carry"}`` inside."""

    def __init__(self) -> None:
        super().__init__()
        self.findings: list[Finding] = []
        self.actions: list[str] = []
        self.tasks_run: list[str] = []
        self.executor = PlanExecutor(self.ledger, self.gate_book, CATALOG, INCIDENT_POLICY)
        self.run_no = 1

    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> IncidentResult:
        """Investigate the page in ``raw_input`` (resuming from ``carry``, if any)."""
        return await self.settle(self._investigate(raw_input))

    async def _investigate(self, raw_input: Any) -> IncidentResult:
        state = await self.resume(raw_input)
        carry = self._resume(state["carry"]) if state is not None else None
        self.start(raw_input)
        given = state if state is not None else raw_input
        fields = given if isinstance(given, dict) else {}
        if state is None and fields.get("carry") is not None:
            self.reject_input(
                ["carry comes only from Keel's own continue-as-new, never from a caller"]
            )
        page = self.ingest(
            IncidentPage,
            fields.get("page") if isinstance(given, dict) else given,
            max_bytes=MAX_PAGE_BYTES,
        )
        first_round = carry.rounds_done + 1 if carry else 1
        for round_no in range(first_round, INCIDENT_POLICY.max_rounds + 1):
            if self._should_continue(page, round_no - first_round):
                await self._continue_as_new(page, round_no - 1)
            plan, source = await self._plan(round_no, page)
            if plan is None:
                return self._finish(page, "handed-over", source, round_no)
            if plan.tasks:
                run = await self.executor.run_plan(round_no, plan)
                for task in plan.tasks:  # plan order, not completion order
                    if task.ref in run.results:
                        self._learn(round_no, task.ref, run.results[task.ref])
                if run.outcome == "failed":
                    undone = await self.executor.compensate(run.failure or "a task failed")
                    return self._finish(page, "compensated", run.failure or "", round_no, undone)
            if plan.done:
                mitigated = source == "agent" and plan.conclusion == "mitigated"
                outcome: Outcome = "mitigated" if mitigated else "handed-over"
                return self._finish(page, outcome, plan.summary, round_no)
        return self._finish(
            page,
            "round-limit",
            f"no conclusion after {INCIDENT_POLICY.max_rounds} rounds",
            INCIDENT_POLICY.max_rounds,
        )

    async def _plan(self, round_no: int, page: IncidentPage) -> tuple[PlannerOutput | None, str]:
        """Ask the planner; a plan that fails validation is recorded and fed back, bounded.

        Returns the plan and who made it, or ``None`` and why there is no plan.
        """
        feedback: list[str] = []
        for rejection in range(1, INCIDENT_POLICY.max_plan_rejections + 2):
            outcome = await self.agents.run(
                "plan",
                INCIDENT_PLANNER,
                IncidentPlannerInput(
                    incident=page.model_dump(mode="json", exclude={"continue_after_rounds"}),
                    round=round_no,
                    findings=self.findings,
                    actions=self.actions,
                    tools=[CATALOG.get(n).describe() for n in INCIDENT_POLICY.allowed_tools],  # type: ignore[union-attr]
                    policy=INCIDENT_POLICY.model_dump(mode="json"),
                ),
                feedback=feedback,
            )
            plan = outcome.output
            if plan is None:  # a guardrail denied the call, or the escalation ended unanswered
                return None, outcome.note
            digest = hashlib.sha256(canonical_json(plan.model_dump(mode="json")).encode())
            tasks = [_task_view(t.model_dump(mode="json")) for t in plan.tasks]
            reasons = validate_plan(plan, CATALOG, INCIDENT_POLICY)
            if not reasons:
                self.ledger.record(
                    PlanProposed(
                        round=round_no,
                        planner=INCIDENT_PLANNER.key,
                        source=outcome.source,
                        plan_sha256=digest.hexdigest(),
                        done=plan.done,
                        summary=plan.summary,
                        tasks=tasks,
                    )
                )
                return plan, outcome.source
            self.ledger.record(
                PlanRejected(
                    round=round_no,
                    rejection=rejection,
                    plan_sha256=digest.hexdigest(),
                    reasons=reasons,
                    tasks=tasks,
                )
            )
            feedback = [f"The plan was rejected: {reason}" for reason in reasons]
        return None, "every plan this round was rejected"

    def _learn(self, round_no: int, ref: str, result: ToolResult) -> None:
        self.tasks_run.append(f"r{round_no}/{ref}")
        self.findings.append(
            Finding(round=round_no, ref=ref, tool=result.tool, output=result.output)
        )
        if result.effect is not None:
            out = result.output
            detail = ", ".join(f"{k}={v}" for k, v in out.items() if not isinstance(v, list | dict))
            self.actions.append(f"{result.tool}: {detail} ({result.effect.provider_id})")

    def _resume(self, raw_carry: Any) -> IncidentCarry | None:
        if raw_carry is None:
            return None
        carry = IncidentCarry.model_validate(raw_carry)
        self.ledger.continue_from(carry.ledger_head, carry.ledger_seq)
        self.findings = list(carry.findings)
        self.actions = list(carry.actions)
        self.run_no = carry.runs + 1
        self.executor.completed = [CompletedTask.model_validate(c) for c in carry.completed]
        self.ledger.record(
            LedgerContinued(
                previous_run_id=carry.previous_run_id,
                previous_head=carry.ledger_head,
                run=self.run_no,
                rounds_done=carry.rounds_done,
            )
        )
        return carry

    def _should_continue(self, page: IncidentPage, rounds_this_run: int) -> bool:
        if rounds_this_run == 0:
            return False
        if page.continue_after_rounds and rounds_this_run >= page.continue_after_rounds:
            return True
        return workflow.info().is_continue_as_new_suggested()

    async def _continue_as_new(self, page: IncidentPage, rounds_done: int) -> None:
        reason = (
            f"{page.continue_after_rounds} rounds per run"
            if page.continue_after_rounds
            else "Temporal suggested it (history size)"
        )
        last = await self.ledger.record_signed(
            ContinuedAsNew(reason=reason, rounds_done=rounds_done), "continue-as-new"
        )
        carry = IncidentCarry(
            ledger_head=last.hash,
            ledger_seq=last.seq,
            previous_run_id=workflow.info().run_id,
            runs=self.run_no,
            rounds_done=rounds_done,
            findings=self.findings,
            actions=self.actions,
            completed=[c.model_dump(mode="json") for c in self.executor.completed],
        )
        await self.continue_as_new(
            {"page": page.model_dump(mode="json"), "carry": carry.model_dump(mode="json")}
        )

    def _finish(
        self,
        page: IncidentPage,
        outcome: Outcome,
        summary: str,
        rounds: int,
        compensated: list[str] | None = None,
    ) -> IncidentResult:
        self.ledger.record(
            WorkflowCompleted(
                outcome=outcome,
                summary={"summary": summary, "rounds": rounds, "compensated": compensated or []},
            )
        )
        workflow.set_current_details(f"Finished: **{outcome}** after {rounds} round(s)")
        return IncidentResult(
            incident_id=page.incident_id,
            outcome=outcome,
            summary=summary,
            rounds=rounds,
            runs=self.run_no,
            tasks_run=self.tasks_run,
            compensated=compensated or [],
            ledger=list(self.ledger.events),
            ledger_genesis=self.ledger.genesis,
            ledger_head=self.ledger.head_hash,
        )


def _task_view(task: dict[str, Any]) -> dict[str, Any]:
    """A plan task as the ledger shows it."""
    return {
        "ref": task["ref"],
        "tool": task["tool"],
        "input": task["input"],
        "depends_on": task["depends_on"],
        "gate": (task.get("gate") or {}).get("title"),
        "compensation": (task.get("compensation") or {}).get("tool"),
    }
