"""``keel trust``: reviewer verdicts by confidence bucket and the recommendations they
support, from contract reviews run on the time-skipping server with a model whose confidence
the test sets and reviewers the test scripts; each rule is checked on both sides of its
threshold and of the evidence it needs."""

from __future__ import annotations

import argparse
import json
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from keel.activities.providers.base import ModelRequest
from keel.cli.ledgers import execution_runs
from keel.cli.trust import TrustRow, bucket_of, build_rows, cmd_trust, recommend, row_text
from keel.contracts.outcomes import DecisionOutcome, decision_outcomes
from keel.scenarios.contract_review import ContractReviewWorkflow
from keel.testing import FunctionModel
from tests.conftest import keel_worker, offline_settings
from tests.helpers import decide, review, wait_for_gate
from tests.samples import load_sample
from tests.test_cli import Cli
from tests.test_dataset_export import archive_runs, listed, reviewed_on_dev_server
from tests.test_dataset_export import cli as cli  # the fixture

REASSESSED = 0.85
"""The model's confidence when it reassesses after a rejection."""


def answer(request: ModelRequest) -> dict[str, Any]:
    """A medium-risk assessment whose confidence the vendor's name carries ("Vendor c95")."""
    found = re.search(r"c(\d\d)$", str(request.input["vendor"]))
    confidence = int(found[1]) / 100 if found else 0.5
    if request.feedback:
        confidence = REASSESSED
    return {
        "risk_level": "medium",
        "clause_refs": ["1"],
        "rationale": "Payroll data and an automatic renewal need a lawyer's look.",
        "confidence": confidence,
    }


@dataclass
class Run:
    """One scripted review: the model's confidence and what the reviewer does."""

    confidence: int
    verdict: str  # "approve", or "reject" (the reassessment is then approved)


async def review_once(client: Client, task_queue: str, run: Run) -> list[DecisionOutcome]:
    sample = {**load_sample("contract-medium-risk"), "vendor": f"Vendor c{run.confidence}"}
    handle = await client.start_workflow(
        ContractReviewWorkflow.run, sample, id=f"trust-{uuid.uuid4()}", task_queue=task_queue
    )
    await wait_for_gate(handle, "standard-review")
    if run.verdict == "approve":
        await decide(handle, review("standard-review", "approve", "legal.priya"))
    else:
        comment = "the renewal clause is the real risk"
        await decide(handle, review("standard-review", "reject", "legal.priya", comment=comment))
        await wait_for_gate(handle, "standard-review-2")
        await decide(handle, review("standard-review-2", "approve", "legal.sam"))
    return decision_outcomes((await handle.result()).ledger)


RUNS = {
    "confident": [Run(95, "approve")] * 5,
    "confident-rejected": [Run(95, "reject")],
    "middling": [Run(75, "approve")] * 3 + [Run(75, "reject")] * 2,
}


STRICT_RUNS = {
    # Under the threshold first (0.60 < 0.70), the same answer at 0.85 on the retry.
    "turned-back": [Run(60, "approve")] * 3,
    "turned-back-rejected": [Run(60, "reject")],
}


@pytest.fixture(scope="module")
async def executions(ts_env: WorkflowEnvironment) -> dict[str, list[list[DecisionOutcome]]]:
    """Each group's executions' decision outcomes, from real runs."""
    groups: dict[str, list[list[DecisionOutcome]]] = {}
    async with keel_worker(ts_env.client, provider=FunctionModel(answer)) as tq:
        for name, runs in {**RUNS, **STRICT_RUNS}.items():
            groups[name] = [await review_once(ts_env.client, tq, run) for run in runs]
    return groups


@pytest.fixture(scope="module")
def outcomes(
    executions: dict[str, list[list[DecisionOutcome]]],
) -> dict[str, list[DecisionOutcome]]:
    """The first groups' outcomes, each group's in one list."""
    return {name: [o for run in executions[name] for o in run] for name in RUNS}


def row_of(outcomes: Sequence[DecisionOutcome]) -> TrustRow:
    """The one row of decisions of one node (none of them turned back by the threshold, so
    they may come from several executions in one list)."""
    [row] = build_rows([list(outcomes)])
    return row


def first_pass(outcomes: Sequence[DecisionOutcome]) -> list[DecisionOutcome]:
    """The first assessments only (not the reassessments after a rejection)."""
    return [o for o in outcomes if o.node_run == 1]


def test_buckets_have_inclusive_lower_bounds() -> None:
    assert [bucket_of(c) for c in (0.49, 0.5, 0.69, 0.7, 0.8, 0.9, 1.0, None)] == [
        "<0.5",
        "0.5-0.7",
        "0.5-0.7",
        "0.7-0.8",
        "0.8-0.9",
        ">=0.9",
        ">=0.9",
        "unknown",
    ]


def test_counts_by_bucket_and_outcome(outcomes: dict[str, list[DecisionOutcome]]) -> None:
    row = row_of([o for group in outcomes.values() for o in group])
    assert (row.contract, row.node, row.threshold) == ("risk-classifier@1", "classify-risk", 0.7)
    assert dict(row.at(">=0.9")) == {"approved": 5, "rejected": 1}
    assert dict(row.at("0.8-0.9")) == {"approved": 3}  # the reassessments
    assert dict(row.at("0.7-0.8")) == {"approved": 3, "rejected": 2}
    assert row.reviewed == 14
    record = row.record(recommend(row))
    assert record["buckets"][">=0.9"]["approved"] == 5 and record["reviewed"] == 14


def test_a_gate_could_become_a_rule_when_every_confident_answer_was_approved(
    outcomes: dict[str, list[DecisionOutcome]],
) -> None:
    row = row_of(outcomes["confident"])
    [advice] = recommend(row, min_evidence=5)
    assert (advice.kind, advice.evidence, advice.threshold) == ("gate-to-rule", 5, 0.9)
    assert advice.text == (
        "at confidence >=0.9, 5/5 approved unchanged: a gate could become a rule above 0.9 (n=5)"
    )
    # One review fewer than the evidence needed: no rule, and it says why.
    [short] = recommend(row, min_evidence=6)
    assert short.kind == "not-enough-evidence" and "(n=5, needs 6)" in short.text


def test_one_change_among_confident_answers_keeps_the_gate(
    outcomes: dict[str, list[DecisionOutcome]],
) -> None:
    row = row_of(first_pass(outcomes["confident"] + outcomes["confident-rejected"]))
    [advice] = recommend(row, min_evidence=5)
    assert (advice.kind, advice.evidence) == ("keep-gate", 6)
    assert "reviewers changed 1/6 (17%)" in advice.text


def test_the_rule_extends_down_while_every_answer_was_approved(
    outcomes: dict[str, list[DecisionOutcome]],
) -> None:
    reassessed = [o for o in outcomes["middling"] if o.node_run == 2]
    row = row_of(outcomes["confident"] + reassessed)  # 5 at 0.95, 2 at 0.85: all approved
    [advice] = recommend(row, min_evidence=7)
    assert (advice.kind, advice.threshold, advice.evidence) == ("gate-to-rule", 0.8, 7)
    assert "a gate could become a rule above 0.8 (n=7)" in advice.text


def test_many_changes_in_a_bucket_raise_the_threshold(
    outcomes: dict[str, list[DecisionOutcome]],
) -> None:
    middling = first_pass(outcomes["middling"])  # 3 approved, 2 rejected at 0.75
    row = row_of(middling)
    advice = {a.kind: a for a in recommend(row, min_evidence=5)}
    raise_it = advice["raise-threshold"]
    assert (raise_it.bucket, raise_it.threshold, raise_it.evidence) == ("0.7-0.8", 0.8, 5)
    assert raise_it.text == (
        "in bucket 0.7-0.8, 2/5 modified or rejected (40%): raise the confidence threshold "
        "to 0.8 (n=5)"
    )
    assert "keep-gate" in advice  # and the gate stays
    [short] = [a for a in recommend(row, min_evidence=6) if a.kind != "keep-gate"]
    assert short.kind == "not-enough-evidence" and "move the threshold" in short.text


def test_few_changes_in_a_bucket_leave_the_threshold(
    outcomes: dict[str, list[DecisionOutcome]],
) -> None:
    middling = first_pass(outcomes["middling"])
    one_rejection = [o for o in middling if o.kind == "approved"] + [
        o for o in middling if o.kind == "rejected"
    ][:1]
    row = row_of(one_rejection)  # 1/4 = 25%: under the rate
    assert not [a for a in recommend(row, min_evidence=4) if a.kind == "raise-threshold"]


def test_a_threshold_already_at_the_bucket_top_is_not_raised_again(
    outcomes: dict[str, list[DecisionOutcome]],
) -> None:
    row = row_of(first_pass(outcomes["middling"]))
    row.threshold = 0.8  # a contract whose threshold is already 0.8
    assert not [a for a in recommend(row, min_evidence=5) if a.kind == "raise-threshold"]


def test_a_node_nobody_reviewed_has_not_enough_evidence(
    outcomes: dict[str, list[DecisionOutcome]],
) -> None:
    unreviewed = [
        o.model_copy(update={"kind": "accepted_by_rule", "gates": []})
        for o in outcomes["confident"]
    ]
    row = row_of(unreviewed)
    [advice] = recommend(row, min_evidence=5)
    assert advice.kind == "not-enough-evidence" and advice.evidence == 0
    text = "\n".join(row_text(row, [advice]))
    assert "risk-classifier@1 / classify-risk (threshold 0.70)" in text
    assert "by rule" in text and "not enough evidence: 0 reviewed decisions" in text


def test_a_contract_filter_keeps_only_its_rows(outcomes: dict[str, list[DecisionOutcome]]) -> None:
    everything = [[o for group in outcomes.values() for o in group]]
    assert build_rows(everything, contract="risk-classifier") != []
    assert build_rows(everything, contract="risk-classifier@1") != []
    assert build_rows(everything, contract="support-reply") == []
    [merged] = build_rows(everything, by="contract")
    assert merged.node is None and merged.reviewed == 14


async def test_keel_trust_reads_temporal_and_prints_json_and_text(cli: Cli) -> None:
    prefix = f"trust-cli-{uuid.uuid4().hex[:8]}"
    await reviewed_on_dev_server(cli, prefix, ["approve", "reject"])
    query = f"WorkflowId STARTS_WITH '{prefix}'"
    await listed(cli, query, 2)
    args = ("trust", "--source", "temporal", "--query", query, "--min-evidence", "2")
    report = json.loads(await cli(*args, "-o", "json"))
    assert (report["executions"], report["decisions"], report["min_evidence"]) == (2, 3, 2)
    [row] = report["rows"]
    assert (row["contract"], row["node"], row["threshold"], row["reviewed"]) == (
        "risk-classifier@1",
        "classify-risk",
        0.7,
        3,
    )
    counted: Counter[str] = Counter()
    for counts in row["buckets"].values():
        counted.update({k: n for k, n in counts.items() if n})
    assert counted == {"approved": 2, "rejected": 1}
    assert [r["kind"] for r in row["recommendations"]] and all(
        r["evidence"] >= 0 and r["text"] for r in row["recommendations"]
    )
    text = await cli(*args)
    assert "risk-classifier@1 / classify-risk (threshold 0.70)" in text
    assert "approved modified rejected" in text
    bad = await cli("trust", "--source", "temporal", "--query", "WorkflowId ==", expect=2)
    assert bad.startswith("keel: Temporal:") and "Traceback" not in bad


async def test_keel_trust_from_the_archive_alone_needs_no_temporal(cli: Cli) -> None:
    cli.env["TEMPORAL_ADDRESS"] = "127.0.0.1:9"  # nothing listens: the archive is enough
    text = await cli("trust", "--source", "archive")
    assert "trust report: 0 executions" in text and "no agent decisions" in text


async def test_keel_trust_reads_the_archive(
    ts_env: WorkflowEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_settings(data_dir=tmp_path)
    async with keel_worker(ts_env.client, provider=FunctionModel(answer)) as tq:
        ids = []
        for _ in range(2):
            sample = {**load_sample("contract-medium-risk"), "vendor": "Vendor c95"}
            handle = await ts_env.client.start_workflow(
                ContractReviewWorkflow.run, sample, id=f"trust-{uuid.uuid4()}", task_queue=tq
            )
            await wait_for_gate(handle, "standard-review")
            await decide(handle, review("standard-review", "approve", "legal.priya"))
            await handle.result()
            ids.append(handle.id)
    for workflow_id in ids:
        await archive_runs(
            config, workflow_id, await execution_runs(ts_env.client, config, workflow_id)
        )
    args = argparse.Namespace(
        source="archive",
        query=None,
        workflow_type=None,
        contract="risk-classifier",
        by="node",
        min_evidence=2,
        output="json",
        app=None,
    )
    assert await cmd_trust(config, args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["executions"] == 2
    [row] = report["rows"]
    assert row["buckets"][">=0.9"]["approved"] == 2
    [advice] = row["recommendations"]
    assert (advice["kind"], advice["evidence"], advice["threshold"]) == ("gate-to-rule", 2, 0.9)


def test_answers_the_threshold_turned_back_and_people_approved_lower_it(
    executions: dict[str, list[list[DecisionOutcome]]],
) -> None:
    turned_back = executions["turned-back"]
    failed = [o for run in turned_back for o in run if o.kind == "failed_validation"]
    assert [(o.validation, o.confidence) for o in failed] == [("confidence", 0.6)] * 3
    [row] = build_rows(turned_back)
    assert (row.rechecked, row.confirmed) == (3, [0.6, 0.6, 0.6])
    [advice] = [a for a in recommend(row, min_evidence=3) if a.kind == "lower-threshold"]
    assert (advice.evidence, advice.bucket, advice.threshold) == (3, "0.5-0.7", 0.5)
    assert advice.text.startswith(
        "3/3 answers the confidence threshold turned back came back the same"
    )
    [short] = [a for a in recommend(row, min_evidence=4) if "lower the threshold" in a.text]
    assert short.kind == "not-enough-evidence" and "(n=3, needs 4)" in short.text


def test_a_turned_back_answer_people_then_rejected_keeps_the_threshold(
    executions: dict[str, list[list[DecisionOutcome]]],
) -> None:
    [row] = build_rows(executions["turned-back"] + executions["turned-back-rejected"])
    assert (row.rechecked, len(row.confirmed)) == (4, 3)  # 75%: under the rate
    assert not [a for a in recommend(row, min_evidence=4) if a.kind == "lower-threshold"]
