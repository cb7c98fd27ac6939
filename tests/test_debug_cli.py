"""``keel debug ID NODE``: one recorded agent-node attempt re-run from its recorded input,
under the same or another model or contract version, judged as the workflow judges, diffed
against the recorded decision; and the execution left exactly as it was.

The command runs in-process (``keel.cli.main``'s parser and handler) against the session's
time-skipping server; the other models are a local server speaking OpenAI's wire format.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from keel.cli import debug
from keel.cli.ledgers import RunLedger, execution_runs
from keel.cli.main import build_parser, rpc_failure, run
from keel.cli.node_history import HistoryLookup
from keel.cli.output import CliError, report
from keel.contracts.agent_node import AGENT_NODE_ACTIVITY
from keel.contracts.ledger import AgentDecided
from keel.offline import OfflineFault
from keel.progress.activities import ProgressActivities
from keel.progress.stream import ProgressStream
from keel.scenarios.contract_review.contracts import RiskClassifierInput
from keel.scenarios.ingestion import APP as INGESTION
from keel.scenarios.ingestion import SupplierIngestionWorkflow
from keel.scenarios.ingestion.fixtures import job
from keel.settings import KeelSettings
from keel.testing import keel_worker as kit_worker
from keel.testing import offline_settings
from keel.workers.codec import ENCODING, codec_keyring
from keel.workers.runtime import keel_data_converter
from tests.apps.debug_contracts import V2_PROMPT_OPENING
from tests.conftest import codec_settings, keel_worker
from tests.fake_model_server import FakeModelServer, Reply
from tests.helpers import decide, review, start_review, wait_for_gate
from tests.probe_contracts import RAW_PII
from tests.probe_workflows import AgentNodeProbe
from tests.samples import load_sample
from tests.test_archive import Deployment, delete_from_temporal
from tests.test_ingestion import fast_pages
from tests.test_ingestion import stream as stream  # the fixture

NODE = "classify-risk"
OTHER_ANSWER = {
    "risk_level": "high",
    "clause_refs": ["3"],
    "rationale": "The liability cap is too low for this data.",
    "confidence": 0.42,
}


@dataclass(frozen=True)
class Recorded:
    """The executions the tests debug, recorded once for the module."""

    low: str
    """A low-risk review, auto-approved on the first attempt."""
    retried: str
    """A low-risk review whose first answer came back under the threshold (a fault)."""
    reassessed: str
    """A high-risk review a reviewer rejected: the classifier ran twice."""


@pytest.fixture(scope="module")
async def recorded(ts_env: WorkflowEnvironment) -> Recorded:
    client = ts_env.client
    low_confidence = [OfflineFault(kind="low_confidence", agent_attempts=[1])]
    async with keel_worker(client) as tq:
        low = await start_review(client, tq, "low", prefix="debug-low")
        await low.result()
        high = await start_review(client, tq, "high", prefix="debug-reassessed")
        await wait_for_gate(high, "general-counsel")
        comment = "Clause 4 hides a penalty schedule; reassess"
        await decide(high, review("general-counsel", "reject", "gc.morgan", comment=comment))
        await wait_for_gate(high, "general-counsel-2")
        await decide(high, review("general-counsel-2", "approve", "gc.morgan"))
        await decide(high, review("general-counsel-2", "approve", "deputy-gc.alex"))
        await high.result()
    async with keel_worker(client, faults=low_confidence) as tq:
        retried = await start_review(client, tq, "low", prefix="debug-retried")
        await retried.result()
    return Recorded(low.id, retried.id, high.id)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def record(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.out)
        return parsed


async def keel_debug(
    client: Client,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    settings: KeelSettings | None = None,
) -> Run:
    """``keel debug ARGV`` as ``keel.cli.main`` runs it, in this process, on ``client``."""
    args = build_parser().parse_args(["debug", *argv])
    try:
        code = await debug.cmd_debug(client, settings or offline_settings(), args)
    except CliError as exc:
        code = report(args, exc.message, exc.code)
    except RPCError as exc:
        failure = rpc_failure(exc, client, args.workflow_id)
        code = report(args, failure.message, failure.code)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


@pytest.fixture
def fake_openai() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


def openai_settings(server: FakeModelServer) -> KeelSettings:
    return offline_settings(openai_base_url=server.base_url_openai, openai_api_key="sk-fake")


async def decisions(client: Client, workflow_id: str) -> list[AgentDecided]:
    runs = await execution_runs(client, offline_settings(), workflow_id)
    return [
        AgentDecided.model_validate(e)
        for r in runs
        for e in r.events
        if e["type"] == "AgentDecided"
    ]


async def test_the_same_model_reproduces_the_recorded_decision_with_an_empty_diff(
    ts_env: WorkflowEnvironment, recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    [decided] = await decisions(ts_env.client, recorded.low)
    run = await keel_debug(ts_env.client, capsys, recorded.low, NODE, "-o", "json")
    assert run.code == 0, run.err
    record = run.record
    assert record["input_source"] == "history"
    assert record["model"]["used"] == "offline"
    assert record["contract"]["used"] == decided.contract == "risk-classifier@1"
    assert record["prompt_matches"] and record["prompt_sha256"] == decided.prompt_sha256
    assert record["answer"]["output"] == decided.output
    assert record["same_output"] and record["diff"] == ""
    assert record["verdict"]["accepted"] and record["recorded_verdict"]["accepted"]
    assert record["confidence"] == {"recorded": decided.confidence, "now": decided.confidence}
    text = await keel_debug(ts_env.client, capsys, recorded.low, NODE)
    assert text.code == 0
    assert "input     from Temporal's history" in text.out
    assert "Vendor: Brightline Analytics LLC" in text.out  # the re-rendered prompt
    assert "(no difference)" in text.out and "now         accepted" in text.out


@pytest.mark.allow_model_requests
async def test_another_model_s_answer_is_judged_and_diffed_against_the_recorded_one(
    ts_env: WorkflowEnvironment,
    recorded: Recorded,
    capsys: pytest.CaptureFixture[str],
    fake_openai: FakeModelServer,
) -> None:
    fake_openai.script(Reply.json(OTHER_ANSWER))
    run = await keel_debug(
        ts_env.client,
        capsys,
        recorded.low,
        NODE,
        "--model",
        "openai:gpt-debug",
        "-o",
        "json",
        settings=openai_settings(fake_openai),
    )
    assert run.code == 0, run.err
    record = run.record
    sent = fake_openai.requests[-1].body
    assert sent["model"] == "gpt-debug"
    assert sent["messages"][-1]["content"] == record["prompt"]  # the prompt shown is the one sent
    assert record["model"]["used"] == "openai:gpt-debug"
    assert record["answer"]["output"] == OTHER_ANSWER
    assert json.loads(record["answer"]["raw_response"]) == OTHER_ANSWER
    assert not record["same_output"]
    assert '-  "risk_level": "low"' in record["diff"]
    assert '+  "risk_level": "high"' in record["diff"]
    assert record["verdict"]["kind"] == "confidence" and not record["verdict"]["accepted"]
    assert (
        "confidence 0.42 is below the contract's threshold 0.70" in record["verdict"]["reasons"][0]
    )
    assert record["recorded_verdict"]["accepted"]
    assert record["confidence"]["now"] == 0.42


@pytest.mark.allow_model_requests
async def test_a_malformed_answer_gets_the_parse_verdict(
    ts_env: WorkflowEnvironment,
    recorded: Recorded,
    capsys: pytest.CaptureFixture[str],
    fake_openai: FakeModelServer,
) -> None:
    fake_openai.script(Reply.content('{"risk_level": "low", \x1b[2J'))
    run = await keel_debug(
        ts_env.client,
        capsys,
        recorded.low,
        NODE,
        "--model",
        "openai:gpt-debug",
        settings=openai_settings(fake_openai),
    )
    assert run.code == 0, run.err
    assert "now         rejected (parse): the answer is not valid JSON" in run.out
    assert "+(no parsed output)" in run.out
    assert "\x1b" not in run.out and "\\x1b[2J" in run.out  # the answer cannot drive the terminal


async def test_a_new_contract_version_re_renders_the_prompt_under_it(
    ts_env: WorkflowEnvironment, recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    run = await keel_debug(
        ts_env.client,
        capsys,
        recorded.low,
        NODE,
        "--app",
        "tests.apps.debug_contracts",
        "--contract",
        "risk-classifier@2",
        "-o",
        "json",
    )
    assert run.code == 0, run.err
    record = run.record
    assert record["contract"]["used"] == "risk-classifier@2"
    assert record["contract"]["recorded"] == "risk-classifier@1"
    assert record["prompt"].startswith(V2_PROMPT_OPENING)
    assert "Vendor: Brightline Analytics LLC (Delaware law)" in record["prompt"]
    assert not record["prompt_matches"]
    assert (
        record["prompt_note"] == "risk-classifier@2 renders another prompt than risk-classifier@1"
    )
    assert record["verdict"]["accepted"] and record["same_output"]  # the offline rule agrees


async def test_a_contract_version_whose_input_model_refuses_the_recorded_input_says_so(
    ts_env: WorkflowEnvironment, recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    app = ("--app", "tests.apps.debug_contracts")
    run = await keel_debug(
        ts_env.client, capsys, recorded.low, NODE, *app, "--contract", "risk-classifier@3"
    )
    assert run.code == 1
    assert "risk-classifier@3's input model does not accept the recorded input" in run.err
    assert "counterparty_rating: Field required" in run.err
    unknown = await keel_debug(
        ts_env.client, capsys, recorded.low, NODE, *app, "--contract", "risk-classifier@9"
    )
    assert unknown.code == 1
    assert "--contract risk-classifier@9 is not registered in this process" in unknown.err
    assert "risk-classifier@2" in unknown.err  # what is registered
    malformed = await keel_debug(ts_env.client, capsys, recorded.low, NODE, "--contract", "v2")
    assert malformed.code == 2 and "--contract takes NAME@VERSION" in malformed.err


async def test_each_attempt_is_re_run_with_its_own_feedback(
    ts_env: WorkflowEnvironment, recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = await decisions(ts_env.client, recorded.retried)
    assert (first.attempt, second.attempt) == (1, 2) and second.feedback
    run = await keel_debug(ts_env.client, capsys, recorded.retried, NODE, "-o", "json")
    record = run.record
    # The fault is not injected here: the same model now answers above the threshold.
    assert record["recorded_verdict"]["kind"] == "confidence"
    assert record["verdict"]["accepted"]
    assert record["confidence"]["recorded"] == first.confidence != record["confidence"]["now"]
    assert '-  "confidence":' in record["diff"] and '+  "confidence":' in record["diff"]
    assert "Your previous answer was not accepted" not in record["prompt"]
    again = await keel_debug(
        ts_env.client, capsys, recorded.retried, NODE, "--attempt", "2", "-o", "json"
    )
    record = again.record
    assert record["attempt"] == 2 and record["feedback"] == second.feedback
    assert "Your previous answer was not accepted" in record["prompt"]
    assert record["prompt_matches"] and record["same_output"]
    assert record["recorded_verdict"]["accepted"]


async def test_a_node_that_ran_twice_must_be_picked_and_the_choices_are_listed(
    ts_env: WorkflowEnvironment, recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    ambiguous = await keel_debug(ts_env.client, capsys, recorded.reassessed, NODE)
    assert ambiguous.code == 2
    assert f"agent node '{NODE}' ran 2 times" in ambiguous.err
    assert "--run-index 1: ledger event #" in ambiguous.err
    assert "--run-index 2: ledger event #" in ambiguous.err
    second = await keel_debug(
        ts_env.client, capsys, recorded.reassessed, NODE, "--run-index", "2", "-o", "json"
    )
    assert second.code == 0, second.err
    record = second.record
    assert record["node_run"] == 2 and record["node_runs"] == 2
    assert record["input_source"] == "history"  # the second completed call of the node
    assert "Reviewer gc.morgan rejected the assessment" in record["prompt"]
    assert record["prompt_matches"] and record["same_output"]
    missing = await keel_debug(ts_env.client, capsys, recorded.reassessed, NODE, "--run-index", "3")
    assert missing.code == 1 and "there is no node run 3" in missing.err


async def test_unknown_workflow_node_or_attempt_is_a_clear_error(
    ts_env: WorkflowEnvironment, recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    node = await keel_debug(ts_env.client, capsys, recorded.low, "classify-mood")
    assert node.code == 1
    assert f"no agent node 'classify-mood' decided anything in the ledger of {recorded.low}" in (
        node.err
    )
    assert f"(its agent nodes: {NODE})" in node.err
    attempt = await keel_debug(ts_env.client, capsys, recorded.low, NODE, "--attempt", "3")
    assert attempt.code == 1 and "recorded no attempt 3 (its attempts: 1;" in attempt.err
    workflow = await keel_debug(ts_env.client, capsys, "no-such-review", NODE)
    assert workflow.code == 1 and "workflow 'no-such-review'" in workflow.err
    model = await keel_debug(ts_env.client, capsys, recorded.low, NODE, "--model", "gpt-4")
    assert model.code == 2 and "KEEL_MODEL='gpt-4' is not understood" in model.err
    with pytest.raises(SystemExit) as usage:
        build_parser().parse_args(["debug", recorded.low, NODE, "--attempt", "0"])
    assert usage.value.code == 2


async def test_without_the_history_the_ledger_s_input_is_used_and_said_so(
    ts_env: WorkflowEnvironment,
    recorded: Recorded,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def history_gone(*_: Any) -> HistoryLookup:
        return HistoryLookup(None, "Temporal no longer has run r-1")

    monkeypatch.setattr(debug, "scheduled_request", history_gone)
    run = await keel_debug(ts_env.client, capsys, recorded.low, NODE, "-o", "json")
    assert run.code == 0, run.err
    record = run.record
    assert record["input_source"] == "ledger"
    assert "PII-redacted (history: Temporal no longer has run r-1)" in record["input_note"]
    assert record["prompt_matches"]  # the scrubber already redacted what the model saw
    assert record["same_output"]


async def test_a_run_that_predates_input_recording_without_its_history_cannot_be_re_run(
    ts_env: WorkflowEnvironment,
    recorded: Recorded,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def history_gone(*_: Any) -> HistoryLookup:
        return HistoryLookup(None, "Temporal no longer has run r-1")

    async def without_inputs(*args: Any) -> list[RunLedger]:
        runs = await execution_runs(*args)
        return [
            replace(r, events=[{k: v for k, v in e.items() if k != "input"} for e in r.events])
            for r in runs
        ]

    monkeypatch.setattr(debug, "scheduled_request", history_gone)
    monkeypatch.setattr(debug, "execution_runs", without_inputs)
    run = await keel_debug(ts_env.client, capsys, recorded.low, NODE)
    assert run.code == 1
    assert "the run predates the recording of node inputs in the ledger" in run.err
    assert "Temporal no longer has run r-1" in run.err


async def test_debugging_writes_nothing_to_the_execution_or_the_data_directory(
    ts_env: WorkflowEnvironment,
    recorded: Recorded,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    handle: WorkflowHandle[Any, Any] = ts_env.client.get_workflow_handle(recorded.reassessed)
    before = await handle.fetch_history()
    ledger_before = await execution_runs(ts_env.client, offline_settings(), recorded.reassessed)
    settings = offline_settings(data_dir=tmp_path)
    for index in ("1", "2"):
        run = await keel_debug(
            ts_env.client, capsys, recorded.reassessed, NODE, "--run-index", index,
            settings=settings,
        )  # fmt: skip
        assert run.code == 0, run.err
    after = await handle.fetch_history()
    ledger_after = await execution_runs(ts_env.client, offline_settings(), recorded.reassessed)
    assert len(after.events) == len(before.events)
    # As JSON values: protobuf writes a map's keys (payload metadata) in no fixed order.
    assert json.loads(after.to_json()) == json.loads(before.to_json())
    assert [r.events for r in ledger_after] == [r.events for r in ledger_before]
    assert list(tmp_path.iterdir()) == []  # no side-effect record, no key, no file at all


async def test_the_keel_command_runs_it_end_to_end_and_exits_by_the_outcome(
    ts_env: WorkflowEnvironment,
    recorded: Recorded,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Through ``keel.cli.main.run`` (parser, settings, connection, dispatch), as a user
    types it: JSON on stdout and exit 0; a usage error exits 2, a missing workflow 1."""
    target = ts_env.client.service_client.config.target_host
    for name, value in {"KEEL_MODEL": "offline", "KEEL_CODEC": "off"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KEEL_DATA_DIR", str(tmp_path))
    # This process's settings were read once, before the variables above: read them afresh.
    monkeypatch.setattr(sys.modules["keel.cli.main"], "get_settings", KeelSettings)

    async def keel(*argv: str) -> Run:
        code = await asyncio.to_thread(run, ["debug", "--address", target, *argv])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    ran = await keel(recorded.low, NODE, "-o", "json")
    assert ran.code == 0, ran.err
    assert ran.record["same_output"] and ran.record["input_source"] == "history"
    assert (await keel(recorded.reassessed, NODE)).code == 2
    assert (await keel("no-such-review", NODE)).code == 1


async def test_an_encrypted_history_is_read_with_the_client_s_codec_keys(
    ts_env: WorkflowEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = codec_settings()
    keyring = codec_keyring(settings, target="", embedded=False)
    config = ts_env.client.config()
    config["data_converter"] = keel_data_converter(keyring)
    client = Client(**config)
    async with keel_worker(client) as tq:
        handle = await start_review(client, tq, "low", prefix="debug-encrypted")
        await handle.result()
    history = await ts_env.client.get_workflow_handle(handle.id).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == AGENT_NODE_ACTIVITY
    ]
    [payload] = scheduled[0].input.payloads
    assert payload.metadata["encoding"] == ENCODING  # the request is encrypted in history
    ran = await keel_debug(client, capsys, handle.id, NODE, "-o", "json", settings=settings)
    assert ran.code == 0, ran.err
    assert ran.record["input_source"] == "history" and ran.record["prompt_matches"]
    assert ran.record["input"]["vendor"] == "Brightline Analytics LLC"


@pytest.mark.allow_model_requests
async def test_a_failed_model_call_exits_1_with_the_provider_s_reason_and_no_key(
    ts_env: WorkflowEnvironment,
    recorded: Recorded,
    capsys: pytest.CaptureFixture[str],
    fake_openai: FakeModelServer,
) -> None:
    fake_openai.script(Reply.error(401, "Incorrect API key provided: sk-fake"))
    settings = openai_settings(fake_openai)
    argv = (recorded.low, NODE, "--model", "openai:gpt-debug")
    run = await keel_debug(ts_env.client, capsys, *argv, "-o", "json", settings=settings)
    assert run.code == 1
    failure = run.record["call_failure"]
    assert failure["error_type"] == "ProviderPermanentError"
    assert "HTTP 401" in failure["message"] and "check OPENAI_API_KEY" in failure["message"]
    assert "sk-fake" not in run.out + run.err  # scrubbed, as the activity scrubs it
    assert "the model call failed (ProviderPermanentError)" in run.err
    assert "answer" not in run.record and "verdict" not in run.record


async def test_after_temporal_deleted_the_run_the_archived_ledger_s_input_is_used(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """As retention would: archived, then deleted from Temporal. ``keel debug`` (the real
    command, in a subprocess) reads the ledger from the archive and its recorded input."""
    deployment = Deployment(dev_env, tmp_path / "data", str(tmp_path / "archive.sqlite3"))
    async with deployment.worker(deployment.queues[0]):
        handle = await start_review(deployment.client, deployment.queues[0], "low")
        await handle.result()
        [run] = await execution_runs(deployment.client, deployment.settings, handle.id)
        assert (await deployment.archive_pass()).archived == 1
    await delete_from_temporal(deployment.client, handle.id, [run.run_id])
    out = await deployment.keel("debug", handle.id, NODE, "-o", "json")
    record = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert record["input_source"] == "ledger"
    assert f"Temporal no longer has run {run.run_id}" in record["input_note"]
    assert record["prompt_matches"] and record["same_output"]
    assert record["verdict"]["accepted"] and record["recorded_verdict"]["accepted"]


async def test_the_history_s_input_is_what_the_model_saw_and_the_ledger_s_is_redacted(
    ts_env: WorkflowEnvironment,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = load_sample("contract-medium-risk")
    node_input = {k: raw[k] for k in RiskClassifierInput.model_fields}
    email = "jane.doe@example.com"
    node_input["clauses"][-1]["text"] += f"\nBilling contact {email}."
    async with keel_worker(ts_env.client, extra_workflows=[AgentNodeProbe]) as tq:
        handle = await ts_env.client.start_workflow(
            AgentNodeProbe.run,
            {"contract": RAW_PII.key, "input": node_input},
            id=f"debug-pii-{uuid.uuid4()}",
            task_queue=tq,
        )
        await handle.result()
    exact = await keel_debug(ts_env.client, capsys, handle.id, "probe", "-o", "json")
    assert exact.code == 0, exact.err
    assert exact.record["input_source"] == "history"
    assert email in exact.record["prompt"] and exact.record["prompt_matches"]

    async def history_gone(*_: Any) -> HistoryLookup:
        return HistoryLookup(None, "Temporal no longer has run r-1")

    monkeypatch.setattr(debug, "scheduled_request", history_gone)
    redacted = await keel_debug(ts_env.client, capsys, handle.id, "probe", "-o", "json")
    assert redacted.code == 0, redacted.err
    record = redacted.record
    assert record["input_source"] == "ledger"
    assert email not in record["prompt"] and "[email redacted #1]" in record["prompt"]
    assert not record["prompt_matches"]
    assert record["prompt_note"].startswith("the ledger's copy of the input is PII-redacted")


async def test_a_node_of_a_later_run_is_read_from_that_run_s_history(
    ts_env: WorkflowEnvironment,
    stream: ProgressStream,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An ingestion: two runs (continue-as-new), nodes ten at a time: a record's node of the
    second run is found in its run's history among the others' completed calls."""
    tools = [*fast_pages(tmp_path / "pages"), *ProgressActivities(stream).activities()]
    async with kit_worker(ts_env.client, apps=[INGESTION], activities=tools) as tq:
        handle = await ts_env.client.start_workflow(
            SupplierIngestionWorkflow.run,
            job("debug", "Suppliers", 40, batch_size=10, records_per_run=20),
            id=f"ingest-{uuid.uuid4().hex[:8]}",
            task_queue=tq,
        )
        await handle.result()
        # A continued run's ledger is read by query: its worker stays up.
        first, second = await execution_runs(ts_env.client, offline_settings(), handle.id)
        last = [e for e in second.events if e["type"] == "AgentDecided"][-5]
        ran = await keel_debug(ts_env.client, capsys, handle.id, last["node"], "-o", "json")
    assert ran.code == 0, ran.err
    record = ran.record
    assert record["run_id"] == second.run_id != first.run_id
    assert record["input_source"] == "history" and record["prompt_matches"]
    assert record["input"]["record"]["record_id"] == last["node"]
    assert record["answer"]["output"] == last["output"] and record["same_output"]
