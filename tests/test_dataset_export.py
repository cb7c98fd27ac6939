"""``keel export --dataset``: chat and preference examples from real runs, re-rendered
prompts, PII redacted, every skipped decision counted with its reason."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from keel.activities.archive_store import OfferedRun
from keel.activities.providers.base import ModelReply, ModelRequest
from keel.archive import ArchiveStore
from keel.cli.dataset import (
    DatasetSummary,
    ExampleRedactor,
    ExecutionDecisions,
    Selected,
    examples_of,
    selected_ledgers,
    temporal_query,
    write_dataset,
)
from keel.cli.ledgers import RunLedger, execution_runs
from keel.contracts.guardrails import pii_marker, redact_pii
from keel.contracts.outcomes import decision_outcomes
from keel.contracts.registry import ContractRegistry
from keel.offline import OfflineFault, OfflineProvider
from keel.scenarios.contract_review import ContractReviewWorkflow
from keel.scenarios.contract_review.contracts import RISK_CLASSIFIER
from keel.settings import KeelSettings
from keel.workers.runtime import connect
from tests.conftest import codec_settings, keel_worker, offline_settings
from tests.helpers import decide, review, start_review, wait_for_gate
from tests.samples import load_sample
from tests.test_cli import Cli, serving_cli
from tests.test_support_workflow import Recording, start, support_worker

EMAIL = "jane.doe@northwind.example"
IBAN = "DE89 3704 0044 0532 0130 00"
CARD = "4111 1111 1111 1111"
COMMENT_CARD = "5555 5555 5555 4444"
COMMENT = (
    f"Clause 1 sends salaries via {IBAN}; ask {EMAIL} to remove the card {COMMENT_CARD} "
    "from the annex before we sign"
)
RAW_PII = (EMAIL, IBAN, IBAN.replace(" ", ""), CARD, CARD.replace(" ", ""), COMMENT_CARD)


def settings(tmp: Path) -> KeelSettings:
    return offline_settings(data_dir=tmp)


async def selection(
    client: Client, settings: KeelSettings, workflow_ids: Sequence[str]
) -> AsyncIterator[Selected]:
    """The executions named, read as every reader reads them (``execution_runs``): the
    time-skipping server has no visibility listing."""
    for workflow_id in workflow_ids:
        yield Selected(workflow_id, "temporal", await execution_runs(client, settings, workflow_id))


async def export(
    env: WorkflowEnvironment, tmp: Path, kind: Any, workflow_ids: Sequence[str], **kw: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], DatasetSummary]:
    out, meta = io.StringIO(), io.StringIO()
    config = settings(tmp)
    chosen = selection(env.client, config, workflow_ids)
    summary = await write_dataset(chosen, config, kind, out, meta, **kw)
    examples = [json.loads(line) for line in out.getvalue().splitlines()]
    metadata = [json.loads(line) for line in meta.getvalue().splitlines()]
    assert len(examples) == len(metadata) == summary.examples
    return examples, metadata, summary


def assert_chat_line(example: dict[str, Any]) -> None:
    """OpenAI's chat fine-tuning line: ``messages`` only, system, user, assistant, text."""
    assert set(example) == {"messages"}
    roles = [m["role"] for m in example["messages"]]
    assert roles == ["system", "user", "assistant"]
    for message in example["messages"]:
        assert set(message) == {"role", "content"}
        assert isinstance(message["content"], str) and message["content"]
    json.loads(example["messages"][-1]["content"])  # the answer is the contract's JSON


def assert_preference_line(example: dict[str, Any]) -> None:
    """OpenAI's preference (DPO) line: input messages, one preferred and one not."""
    assert set(example) == {"input", "preferred_output", "non_preferred_output"}
    assert [m["role"] for m in example["input"]["messages"]] == ["system", "user"]
    for key in ("preferred_output", "non_preferred_output"):
        [message] = example[key]
        assert message["role"] == "assistant" and isinstance(message["content"], str)
    assert example["preferred_output"] != example["non_preferred_output"]


def pii_contract() -> dict[str, Any]:
    sample = load_sample("contract-medium-risk")
    first = dict(sample["clauses"][0])
    first["text"] += f" Salary file contact {EMAIL}, account {IBAN}, corporate card {CARD}."
    return {**sample, "clauses": [first, *sample["clauses"][1:]]}


class Reassessing(OfflineProvider):
    """The offline model, answering a reviewer's rejection with a revised rationale."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        reply = await super().complete(request)
        if not any("rejected the assessment" in item for item in request.feedback):
            return reply
        answer = json.loads(reply.text)
        answer["rationale"] += " Reassessed: the payroll data clause needs a DPA."
        return ModelReply(text=json.dumps(answer), provider=reply.provider, model=reply.model)


async def rejected_then_approved(env: WorkflowEnvironment) -> str:
    """A medium-risk review with PII in a clause, rejected with a comment holding PII, the
    reassessment approved."""
    async with keel_worker(env.client, provider=Reassessing()) as tq:
        handle = await env.client.start_workflow(
            ContractReviewWorkflow.run, pii_contract(), id=f"ds-{uuid.uuid4()}", task_queue=tq
        )
        await wait_for_gate(handle, "standard-review")
        await decide(handle, review("standard-review", "reject", "legal.priya", comment=COMMENT))
        await wait_for_gate(handle, "standard-review-2")
        await decide(handle, review("standard-review-2", "approve", "legal.sam"))
        await handle.result()
    return handle.id


async def test_chat_examples_are_the_accepted_answers_with_re_rendered_redacted_prompts(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    workflow_id = await rejected_then_approved(ts_env)
    examples, metadata, summary = await export(ts_env, tmp_path, "chat", [workflow_id])
    [example] = examples  # the rejected first assessment trains nothing
    assert_chat_line(example)
    system, user, answer = (m["content"] for m in example["messages"])
    assert system == RISK_CLASSIFIER.system_prompt
    assert "Northwind Payroll Services" in user and pii_marker("email", 1) in user
    assert "Your previous answer was not accepted" in user  # the reassessment's feedback
    assert json.loads(answer)["risk_level"] == "medium"
    text = json.dumps([examples, metadata])
    assert not any(value in text for value in RAW_PII), "raw PII reached the dataset"
    recorded, feedback = user.split("not accepted", 1)  # the comment, redacted, as feedback
    assert pii_marker("card", 1) in recorded
    # The workflow redacted the comment before the model saw it (and before the ledger
    # recorded it as feedback), numbering its markers on their own: the export has no
    # raw value left to renumber.
    assert pii_marker("card", 1) in feedback and pii_marker("iban", 1) in feedback
    [meta] = metadata
    assert (meta["workflow_id"], meta["outcome"], meta["node"]) == (
        workflow_id,
        "approved",
        "classify-risk",
    )
    assert meta["gates"] == [{"gate": "standard-review-2", "state": "approved"}]
    assert summary.skipped == {
        "rejected: no answer to train towards (see the preference format)": 1
    }
    assert (summary.executions, summary.decisions) == (1, 2)


async def test_a_rejection_pairs_the_reassessment_over_the_rejected_answer(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    workflow_id = await rejected_then_approved(ts_env)
    examples, metadata, summary = await export(ts_env, tmp_path, "preference", [workflow_id])
    [pair] = examples
    assert_preference_line(pair)
    user = pair["input"]["messages"][1]["content"]
    assert "Your previous answer was not accepted" not in user  # the rejected one's prompt
    [meta] = metadata
    assert meta["outcome"] == "rejected"
    assert meta["comment"] == redact_pii(COMMENT) and pii_marker("card", 1) in meta["comment"]
    outcomes = decision_outcomes(
        [
            e
            for run in await execution_runs(ts_env.client, settings(tmp_path), workflow_id)
            for e in _parsed(run.events)
        ]
    )
    rejected, approved = outcomes
    assert json.loads(pair["non_preferred_output"][0]["content"]) == rejected.output
    assert json.loads(pair["preferred_output"][0]["content"]) == approved.output
    assert "Reassessed" in pair["preferred_output"][0]["content"]
    assert not any(value in json.dumps(examples + metadata) for value in RAW_PII)
    assert summary.skipped == {"approved: no better answer to prefer": 1}


def _parsed(raw: list[Any]) -> list[Any]:
    from keel.contracts.ledger import parse_ledger

    return parse_ledger(raw)


async def test_a_modified_refund_trains_the_persons_version_and_pairs_it_over_the_draft(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with support_worker(ts_env, tmp_path, Recording()) as (tq, _sink):
        handle = await start(ts_env, tq, "support-refund")
        await wait_for_gate(handle, "approve-refund")
        mods = {"refund_usd": 60.0}
        await decide(
            handle, review("approve-refund", "modify", "support.lead.chen", modifications=mods)
        )
        await handle.result()
    chat, chat_meta, _ = await export(ts_env, tmp_path, "chat", [handle.id])
    for example in chat:
        assert_chat_line(example)
    assert [m["outcome"] for m in chat_meta] == ["accepted", "modified"]
    draft = json.loads(chat[1]["messages"][-1]["content"])
    assert draft["refund_usd"] == 60.0  # the person's version is the target
    assert "maya.lindqvist@example.com" not in json.dumps(chat)
    pairs, pair_meta, _ = await export(ts_env, tmp_path, "preference", [handle.id])
    [pair] = pairs
    assert_preference_line(pair)
    assert json.loads(pair["preferred_output"][0]["content"])["refund_usd"] == 60.0
    assert json.loads(pair["non_preferred_output"][0]["content"])["refund_usd"] == 89.0
    assert pair_meta[0]["outcome"] == "modified"


async def test_a_failed_attempt_is_the_rejected_side_of_a_pair_and_no_chat_example(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1])]
    async with keel_worker(ts_env.client, faults=faults) as tq:
        handle = await start_review(ts_env.client, tq, "low")
        await handle.result()
    chat, _, chat_summary = await export(ts_env, tmp_path, "chat", [handle.id])
    assert len(chat) == 1 and chat_summary.skipped == {
        "failed_validation: no answer to train towards (see the preference format)": 1
    }
    pairs, meta, _ = await export(ts_env, tmp_path, "preference", [handle.id])
    [pair] = pairs
    assert_preference_line(pair)
    with pytest.raises(json.JSONDecodeError):  # what the model said: not JSON
        json.loads(pair["non_preferred_output"][0]["content"])
    assert json.loads(pair["preferred_output"][0]["content"])["risk_level"] == "low"
    assert (meta[0]["outcome"], meta[0]["validation"]) == ("failed_validation", "parse")
    assert meta[0]["reasons"] and meta[0]["prompt_matches_record"] is True


async def test_decisions_that_cannot_be_examples_are_counted_with_their_reason(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "low")
        await handle.result()
    # The contract version not loaded: no registry holds it.
    _, _, summary = await export(ts_env, tmp_path, "chat", [handle.id], registry=ContractRegistry())
    assert (summary.examples, summary.skipped) == (
        0,
        {"contract version not loaded (load its app: --app or KEEL_APPS)": 1},
    )
    runs = await execution_runs(ts_env.client, settings(tmp_path), handle.id)
    [outcome] = decision_outcomes(_parsed([e for run in runs for e in run.events]))
    older = ExecutionDecisions(
        handle.id, "ContractReview", [outcome.model_copy(update={"input": None})]
    )
    changed = ExecutionDecisions(
        handle.id, "ContractReview", [outcome.model_copy(update={"contract_fingerprint": "0" * 64})]
    )
    counted = DatasetSummary()
    assert list(examples_of(older, "chat", counted)) == []
    assert list(examples_of(changed, "chat", counted)) == []
    assert counted.skipped == {
        "no recorded input (the run predates input recording)": 1,
        "contract code differs from the version recorded (fingerprint)": 1,
    }


async def test_a_ledger_that_does_not_verify_gives_no_examples(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "low")
        await handle.result()
    config = settings(tmp_path)
    runs = list(await execution_runs(ts_env.client, config, handle.id))
    for event in runs[0].events:
        if event.get("type") == "AgentDecided":
            event["output"]["risk_level"] = "high"  # a forged answer

    async def forged() -> AsyncIterator[Selected]:
        yield Selected(handle.id, "archive", list(runs))

    out = io.StringIO()
    summary = await write_dataset(forged(), config, "chat", out)
    assert out.getvalue() == "" and summary.executions == 0
    assert summary.skipped == {"execution whose ledger does not verify": 1}


@pytest.fixture
async def cli(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Cli]:
    """``keel`` in subprocesses against the dev server, with a worker of every app."""
    async with serving_cli(dev_env, tmp_path, "dataset") as running:
        yield running


async def reviewed_on_dev_server(cli: Cli, prefix: str, verdicts: Sequence[str]) -> list[str]:
    """Medium-risk reviews (with PII in a clause), each approved, or rejected with a comment
    holding PII and its reassessment approved; their workflow ids once finished."""
    client = await connect(codec_settings(), address=cli.env["TEMPORAL_ADDRESS"])
    ids = []
    for n, verdict in enumerate(verdicts):
        handle = await client.start_workflow(
            ContractReviewWorkflow.run,
            pii_contract(),
            id=f"{prefix}-{n}",
            task_queue=cli.env["KEEL_TASK_QUEUE"],
        )
        await wait_for_gate(handle, "standard-review")
        if verdict == "approve":
            await decide(handle, review("standard-review", "approve", "legal.priya"))
        else:
            await decide(
                handle, review("standard-review", "reject", "legal.priya", comment=COMMENT)
            )
            await wait_for_gate(handle, "standard-review-2")
            await decide(handle, review("standard-review-2", "approve", "legal.sam"))
        await handle.result()
        ids.append(handle.id)
    return ids


async def listed(cli: Cli, query: str, count: int) -> None:
    """Wait until visibility lists ``count`` executions for ``query`` (it lags a little)."""
    client = await connect(codec_settings(), address=cli.env["TEMPORAL_ADDRESS"])
    async with asyncio.timeout(30):
        while len([e async for e in client.list_workflows(query)]) < count:
            await asyncio.sleep(0.2)


async def test_keel_export_dataset_writes_valid_lines_and_a_json_summary(cli: Cli) -> None:
    prefix = f"dataset-cli-{uuid.uuid4().hex[:8]}"
    await reviewed_on_dev_server(cli, prefix, ["approve", "reject"])
    query = f"WorkflowId STARTS_WITH '{prefix}'"
    await listed(cli, query, 2)
    out, meta = cli.tmp / "chat.jsonl", cli.tmp / "chat.meta.jsonl"
    text = await cli(
        "export",
        "--dataset",
        "chat",
        "--query",
        query,
        "--out",
        str(out),
        "--metadata",
        str(meta),
        "--source",
        "temporal",
        "-o",
        "json",
    )
    summary = json.loads(text.strip().splitlines()[-1])
    assert (summary["executions"], summary["decisions"], summary["examples"]) == (2, 3, 2)
    assert summary["skipped"] == {
        "rejected: no answer to train towards (see the preference format)": 1
    }
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for line in lines:
        assert_chat_line(line)
    assert not any(value in out.read_text() + meta.read_text() for value in RAW_PII)
    assert len(meta.read_text().splitlines()) == len(lines) == 2
    pairs = cli.tmp / "pairs.jsonl"
    text = await cli(
        "export",
        "--dataset",
        "preference",
        "--query",
        query,
        "--out",
        str(pairs),
        "--source",
        "temporal",
    )
    assert "wrote 0 preference examples" in text  # the offline model reassesses the same
    assert "the preferred answer is the same text" in text
    refused = await cli("export", "--metadata", str(meta), "--query", query, expect=2)
    assert "--metadata goes with --dataset" in refused
    # --source and --workflow-type select for a plain export too: here the CLI's archive
    # holds nothing.
    plain = await cli("export", "--source", "archive", "--out", str(cli.tmp / "plain.jsonl"))
    assert "exported 0 ledger events of 0 executions" in plain
    nowhere = str(cli.tmp / "missing" / "chat.jsonl")
    unwritable = await cli("export", "--dataset", "chat", "--out", nowhere, expect=2)
    assert "cannot write" in unwritable and "Traceback" not in unwritable


async def archive_runs(
    settings: KeelSettings, workflow_id: str, runs: Sequence[RunLedger], **forge: Any
) -> None:
    """Offer ``runs`` to the settings' archive as the archiver does (``forge``: an event
    field to change in every ``AgentDecided`` first)."""
    async with ArchiveStore.open(settings) as archive:
        for index, run in enumerate(runs):
            events = json.loads(json.dumps(run.events))
            for event in events:
                if event.get("type") == "AgentDecided":
                    event.update(forge)
            offered = OfferedRun(
                workflow_id=workflow_id,
                run_id=run.run_id,
                workflow_type=run.workflow_type,
                task_queue="keel",
                status=run.status,
                close_time=datetime(2026, 12, 1, 12, 0, index, tzinfo=UTC),
                events=events,
            )
            await archive.archive(offered, None)


async def test_archived_executions_are_exported_and_a_forged_archived_ledger_is_skipped(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    config = settings(tmp_path)
    async with keel_worker(ts_env.client) as tq:
        honest = await start_review(ts_env.client, tq, "low")
        forged = await start_review(ts_env.client, tq, "low")
        await honest.result()
        await forged.result()
    await archive_runs(config, honest.id, await execution_runs(ts_env.client, config, honest.id))
    forged_runs = await execution_runs(ts_env.client, config, forged.id)
    await archive_runs(config, forged.id, forged_runs, model="forged-model")
    out = io.StringIO()
    selection = selected_ledgers(None, config, source="archive")
    summary = await write_dataset(selection, config, "chat", out)
    [example] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert_chat_line(example)
    assert summary.executions == 1
    assert summary.skipped == {"execution whose ledger does not verify": 1}


def test_an_examples_markers_never_give_two_values_one_number() -> None:
    redact = ExampleRedactor()
    prompt = redact(f"contact {pii_marker('email', 1)} or {pii_marker('email', 2)}; mail {EMAIL}")
    assert prompt.endswith(f"mail {pii_marker('email', 3)}")
    assert prompt.startswith(f"contact {pii_marker('email', 1)} or {pii_marker('email', 2)}")
    answer = redact(f"write to other@example.org, card {CARD}, or {pii_marker('email', 1)}")
    assert answer == (
        f"write to {pii_marker('email', 4)}, card {pii_marker('card', 1)}, or "
        f"{pii_marker('email', 1)}"
    )
    # A text holding the placeholders' delimiter cannot smuggle a marker or break the redactor.
    assert redact("\x00a\x00 and \x00zz\x00") == "\ufffda\ufffd and \ufffdzz\ufffd"


def test_the_temporal_selection_combines_the_query_and_the_workflow_type() -> None:
    assert temporal_query(None, None) == "WorkflowType != 'KeelToolTask'"
    assert temporal_query("StartTime > '2026-12-01'", None) == "StartTime > '2026-12-01'"
    assert temporal_query(None, "Contract'Review") == "WorkflowType = 'ContractReview'"
    assert temporal_query("ExecutionStatus = 'Completed'", "SupportEmail") == (
        "(ExecutionStatus = 'Completed') AND WorkflowType = 'SupportEmail'"
    )
