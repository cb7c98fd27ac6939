"""Decision outcomes from real ledgers: every ``AgentDecided`` of the built-in scenarios,
run on the time-skipping server, paired with what happened downstream."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from keel.cli.commands import full_chain
from keel.contracts.ledger import AgentDecided, GateOpened, parse_ledger
from keel.contracts.outcomes import DecisionOutcome, decision_outcomes
from keel.offline import OfflineFault
from keel.progress.activities import ProgressActivities
from keel.progress.stream import ProgressStream
from keel.scenarios.ingestion import APP as INGESTION
from keel.scenarios.ingestion import SupplierIngestionWorkflow
from keel.scenarios.ingestion.fixtures import job
from keel.testing import events_of, ledger_of
from keel.testing import keel_worker as kit_worker
from tests.conftest import keel_worker
from tests.helpers import decide, review, start_review, wait_for_gate
from tests.probe_workflows import AgentNodeProbe
from tests.standins import ScriptedPlanner, StandInTools, plan, rollback
from tests.test_agent_node_default import CONTRACT as DEFAULTING_CONTRACT
from tests.test_agent_node_default import probe_input
from tests.test_incident_workflow import start_incident
from tests.test_ingestion import fast_pages
from tests.test_ingestion import stream as stream  # the fixture
from tests.test_support_workflow import AlwaysOverpromising, Recording, start, support_worker


def kinds(outcomes: list[DecisionOutcome]) -> list[tuple[str, str]]:
    return [(o.node, o.kind) for o in outcomes]


async def test_low_risk_is_accepted_by_the_routing_rule(ts_env: WorkflowEnvironment) -> None:
    async with keel_worker(ts_env.client) as tq:
        result = await (await start_review(ts_env.client, tq, "low")).result()
    [outcome] = decision_outcomes(result.ledger)
    assert (outcome.kind, outcome.rule, outcome.route) == (
        "accepted_by_rule",
        "contract-risk-routing@1",
        "auto-approve",
    )
    assert outcome.contract == "risk-classifier@1" and outcome.gates == []
    assert outcome.input is not None and outcome.input["vendor"]  # the recorded node input


async def test_a_rejection_labels_the_first_assessment_and_pairs_the_reassessment(
    ts_env: WorkflowEnvironment,
) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium")
        await wait_for_gate(handle, "standard-review")
        comment = "clause 7 caps liability far too low"
        await decide(handle, review("standard-review", "reject", "legal.priya", comment=comment))
        await wait_for_gate(handle, "standard-review-2")
        await decide(handle, review("standard-review-2", "approve", "legal.sam"))
        result = await handle.result()
    first, second = decision_outcomes(result.ledger)
    assert (first.kind, first.comment, first.node_run) == ("rejected", comment, 1)
    assert [(g.gate, g.state, g.reviewers) for g in first.gates] == [
        ("standard-review", "rejected", ["legal.priya"])
    ]
    assert first.superseded_by == second.seq  # the re-invocation replaced it
    assert (second.kind, second.node_run, second.superseded_by) == ("approved", 2, None)
    assert [g.gate for g in second.gates] == ["standard-review-2"]
    assert comment in " ".join(second.feedback)  # re-invoked with the reviewer's comment
    assert second.input == first.input  # each node run records its input


async def test_two_approvals_with_conditions_approve_the_assessment_unchanged(
    ts_env: WorkflowEnvironment,
) -> None:
    conditions = {"conditions": ["cap liability at 12 months of fees"]}
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "high")
        await wait_for_gate(handle, "general-counsel")
        await decide(
            handle, review("general-counsel", "modify", "gc.morgan", modifications=conditions)
        )
        await decide(handle, review("general-counsel", "approve", "deputy-gc.alex", comment="ok"))
        result = await handle.result()
    [outcome] = decision_outcomes(result.ledger)
    # Conditions are not fields of the agent's answer: the assessment itself was approved.
    assert (outcome.kind, outcome.person_output) == ("approved", None)
    [gate] = outcome.gates
    assert (gate.state, gate.reviewers) == ("modified", ["gc.morgan", "deputy-gc.alex"])
    assert gate.modifications == conditions and outcome.comment == "ok"


async def test_an_unanswered_gate_is_pending_then_expired(ts_env: WorkflowEnvironment) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium")
        await wait_for_gate(handle, "standard-review")
        [waiting] = decision_outcomes(await ledger_of(handle))
        assert waiting.kind == "pending"
        result = await handle.result()  # time skips past both SLAs
    [outcome] = decision_outcomes(result.ledger)
    assert outcome.kind == "expired"
    assert outcome.gates[0].default_decision == "reject"


async def test_a_failed_attempt_is_labelled_and_superseded_by_the_retry(
    ts_env: WorkflowEnvironment,
) -> None:
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1])]
    async with keel_worker(ts_env.client, faults=faults) as tq:
        result = await (await start_review(ts_env.client, tq, "low")).result()
    failed, accepted = decision_outcomes(result.ledger)
    assert (failed.kind, failed.validation, failed.retried) == ("failed_validation", "parse", True)
    assert failed.reasons and failed.superseded_by == accepted.seq
    assert accepted.kind == "accepted_by_rule" and accepted.attempt == 2
    assert accepted.input == failed.input  # the retry's input is the node run's


async def test_a_modified_refund_is_the_persons_version_of_the_draft(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with support_worker(ts_env, tmp_path, Recording()) as (tq, _sink):
        handle = await start(ts_env, tq, "support-refund")
        await wait_for_gate(handle, "approve-refund")
        await decide(
            handle,
            review(
                "approve-refund",
                "modify",
                "support.lead.chen",
                comment="partial refund: the lid only",
                modifications={"refund_usd": 60.0},
            ),
        )
        result = await handle.result()
    triage, draft = decision_outcomes(result.ledger)
    assert (triage.node, triage.kind) == ("triage", "accepted")  # no gate, no rule
    assert (draft.node, draft.kind, draft.comment) == (
        "draft-reply",
        "modified",
        "partial refund: the lid only",
    )
    assert draft.output is not None and draft.output["refund_usd"] == 89.0
    assert draft.person_output == {**draft.output, "refund_usd": 60.0}


async def test_a_reply_a_person_wrote_after_every_draft_failed_is_their_answer(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    written = {
        "subject": "Re: your order AB-104233",
        "body": "Hello Maya, we will refund $89.00 for order AB-104233 within 5 days.",
        "order_number": "AB-104233",
        "refund_usd": 89.0,
    }
    async with support_worker(ts_env, tmp_path, AlwaysOverpromising()) as (tq, _sink):
        handle = await start(ts_env, tq, "support-refund")
        await wait_for_gate(handle, "write-reply")
        await decide(
            handle, review("write-reply", "modify", "support.agent.ana", modifications=written)
        )
        await wait_for_gate(handle, "approve-refund")
        await decide(handle, review("approve-refund", "approve", "support.lead.chen"))
        result = await handle.result()
    outcomes = decision_outcomes(result.ledger)
    assert kinds(outcomes) == [("triage", "accepted")] + [("draft-reply", "failed_validation")] * 3
    *retried, last = outcomes[1:]
    assert all(o.retried and o.validation == "rule" for o in retried)
    assert not last.retried and last.person_output == {"confidence": 1.0, **written}
    assert [(g.gate, g.link, g.state) for g in last.gates] == [
        ("write-reply", "escalation", "modified")
    ]
    # The refund gate reviewed the person's reply, not an agent's decision.
    gates = {g.gate for o in outcomes for g in o.gates}
    assert "approve-refund" not in gates
    assert "approve-refund" in {e.gate for e in events_of(result.ledger, GateOpened)}


async def test_planned_task_gates_review_the_plan_one_rejection_rejects_it(
    ts_env: WorkflowEnvironment,
) -> None:
    planner = ScriptedPlanner(plan(rollback("first"), rollback("second", after=["first"])))
    tools = StandInTools()
    async with keel_worker(ts_env.client, provider=planner, tools=tools.activities()) as tq:
        handle = await start_incident(ts_env.client, tq)
        await wait_for_gate(handle, "approve-first")
        await decide(handle, review("approve-first", "approve", "oncall.lead"))
        await wait_for_gate(handle, "approve-second")
        await decide(handle, review("approve-second", "reject", "oncall.lead", comment="too risky"))
        result = await handle.result()
    first = decision_outcomes(result.ledger)[0]
    assert (first.node, first.kind, first.comment) == ("plan", "rejected", "too risky")
    assert [(g.task, g.link, g.state) for g in first.gates] == [
        ("first", "plan-task", "approved"),
        ("second", "plan-task", "rejected"),
    ]


async def test_a_modified_planned_task_changes_that_task_in_the_persons_version(
    ts_env: WorkflowEnvironment,
) -> None:
    planner = ScriptedPlanner(plan(rollback("first")))
    tools = StandInTools()
    async with keel_worker(ts_env.client, provider=planner, tools=tools.activities()) as tq:
        handle = await start_incident(ts_env.client, tq)
        await wait_for_gate(handle, "approve-first")
        mods = {"to_version": "1.41.2"}
        await decide(handle, review("approve-first", "modify", "oncall.lead", modifications=mods))
        result = await handle.result()
    first = decision_outcomes(result.ledger)[0]
    assert first.kind == "modified" and first.person_output is not None
    [task] = first.person_output["tasks"]
    assert task["input"]["to_version"] == "1.41.2"
    assert first.output is not None and first.output["tasks"][0]["input"] != task["input"]


async def test_an_exhausted_node_is_overridden_by_its_default(ts_env: WorkflowEnvironment) -> None:
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1, 2])]
    async with keel_worker(ts_env.client, faults=faults, extra_workflows=[AgentNodeProbe]) as tq:
        raw = await ts_env.client.execute_workflow(
            AgentNodeProbe.run,
            {"contract": DEFAULTING_CONTRACT.key, "input": probe_input()},
            id=f"probe-{uuid.uuid4()}",
            task_queue=tq,
        )
    first, last = decision_outcomes(parse_ledger(raw["ledger"]))
    assert (first.kind, first.retried, first.superseded_by) == ("failed_validation", True, None)
    assert last.kind == "default_applied" and last.default_output is not None
    assert last.default_output["risk_level"] == "high"
    assert "assume high risk" in last.reasons[-1]


def test_an_empty_or_decision_free_ledger_has_no_outcomes() -> None:
    assert decision_outcomes([]) == []
    orphan = AgentDecided(
        node="n",
        contract="c@1",
        contract_fingerprint="f",
        provider="p",
        model="m",
        prompt_sha256="0" * 64,
        raw_response="{}",
        output={"confidence": 0.9},
        confidence=0.9,
        latency_ms=1.0,
        attempt=1,
        activity_attempt=1,
    )
    [outcome] = decision_outcomes([orphan])  # no checkpoint before it: still its own run
    assert (outcome.kind, outcome.node_run, outcome.input) == ("accepted", 1, None)


async def test_ingestion_decisions_in_parallel_batches_and_runs_are_each_their_nodes(
    ts_env: WorkflowEnvironment, stream: ProgressStream, tmp_path: Path
) -> None:
    tools = [*fast_pages(tmp_path / "pages"), *ProgressActivities(stream).activities()]
    async with kit_worker(ts_env.client, apps=[INGESTION], activities=tools) as tq:
        handle = await ts_env.client.start_workflow(
            SupplierIngestionWorkflow.run,
            job("outcomes", "Suppliers", 40, batch_size=10, records_per_run=20),
            id=f"ingest-{uuid.uuid4().hex[:8]}",
            task_queue=tq,
        )
        result = await handle.result()
        chain = await full_chain(ts_env.client, handle.id)
    outcomes = decision_outcomes(chain)  # two runs, batches of ten nodes interleaved
    final = {o.node: o for o in outcomes}  # each record's last decision
    assert len(final) == 40 - result.denied
    counted = Counter(o.kind for o in final.values())
    assert counted["accepted"] == result.enriched and counted["default_applied"] == result.defaulted
    assert set(counted) <= {"accepted", "default_applied"}
    assert all(o.gates == [] and o.input is not None for o in outcomes)
    assert all(o.input["record"]["record_id"] == o.node for o in outcomes)  # type: ignore[index]
