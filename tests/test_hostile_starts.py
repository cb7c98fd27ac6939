"""Hostile starts: an input of any shape or size ends its run, non-retryably, with a reason
of bounded size, in a ledger of bounded size; an input the worker cannot even decode ends
the run FAILED instead of leaving it "running" forever."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from keel.cli.ledgers import MAX_RUNS, full_chain
from keel.cli.output import CliError
from keel.contracts.ledger import InputRejected, LedgerContinued
from keel.offline import OfflineProvider
from keel.scenarios.contract_review.contracts import MAX_INPUT_BYTES
from keel.testing import events_of
from keel.workers.apps import resolve_apps, workflows_of
from keel.workers.runtime import WORKER_DATA_CONVERTER, build_worker
from tests.conftest import keel_worker, offline_settings
from tests.helpers import ledger_of
from tests.samples import load_sample
from tests.test_cli import Cli

REJECTION_LIMIT = 16_000
"""Bytes of JSON an ``InputRejected`` event may take at most, whatever the input."""
MESSAGE_LIMIT = 5_000
"""Characters a run's failure message may take at most."""


async def start_raw(client: Client, task_queue: str, payload: Any) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        "ContractReview", payload, id=f"hostile-start-{uuid.uuid4()}", task_queue=task_queue
    )


async def invalid_input_failure(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.non_retryable
    return cause


def rejection_of(ledger: list[Any]) -> InputRejected:
    [rejected] = events_of(ledger, InputRejected)
    assert len(json.dumps(rejected.model_dump(mode="json")).encode()) < REJECTION_LIMIT
    return rejected


async def test_an_input_over_the_size_limit_is_refused_by_size_before_validation(
    ts_env: WorkflowEnvironment,
) -> None:
    payload = {f"{i:04d}" + "k" * 1020: "v" for i in range(300)}  # 300 keys of 1 KB
    async with keel_worker(ts_env.client) as tq:
        handle = await start_raw(ts_env.client, tq, payload)
        cause = await invalid_input_failure(handle)
        ledger = await ledger_of(handle)
    assert cause.type == "InvalidInput"
    assert f"the limit is {MAX_INPUT_BYTES}" in cause.message
    assert rejection_of(ledger).reasons == [cause.message.split(": ", 1)[1]]


async def test_thousands_of_wrong_fields_and_long_keys_leave_a_bounded_rejection(
    ts_env: WorkflowEnvironment,
) -> None:
    payload: dict[str, Any] = {f"{i}" + "K" * 20_000: "v" for i in range(5)}  # 20 KB keys
    payload.update(load_sample("contract-low-risk"))
    payload.update({f"x{i}": i for i in range(5000)})  # 5,000 unknown fields
    payload["annual_value_usd"] = "a" * 50_000
    assert len(json.dumps(payload).encode()) < MAX_INPUT_BYTES
    async with keel_worker(ts_env.client) as tq:
        handle = await start_raw(ts_env.client, tq, payload)
        cause = await invalid_input_failure(handle)
        ledger = await ledger_of(handle)
    assert cause.type == "InvalidInput"
    assert len(cause.message) < MESSAGE_LIMIT
    reasons = rejection_of(ledger).reasons
    assert len(reasons) <= 21
    assert reasons[-1].startswith("and ") and reasons[-1].endswith(" more problems")
    assert "annual_value_usd: Input should be a valid number" in reasons[0]
    long_keys = [r for r in reasons if "…(20001 chars): Extra inputs are not permitted" in r]
    assert len(long_keys) == 5
    assert all(len(reason) <= 600 for reason in reasons)


def raw(data: bytes, encoding: bytes = b"json/plain") -> RawValue:
    """A payload sent as is, past the client's converter."""
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


UNDECODABLE = {
    "JSON nested 2,000 levels": raw(b"[" * 2000 + b"]" * 2000),
    "an object nested 2,000 levels": raw(b'{"a":' * 2000 + b"1" + b"}" * 2000),
    "invalid JSON": raw(b"{not json"),
    "invalid UTF-8": raw(b'{"title": "\xff\xfe"}'),
    "an unknown encoding": raw(b"{}", encoding=b"binary/weird"),
    "a JSON list": raw(b"[1, 2, 3]"),  # the run takes an object
    "raw bytes": raw(b"\x00\x01", encoding=b"binary/plain"),
}


async def ends_failed(client: Client, handle: WorkflowHandle[Any, Any], timeout: float) -> str:
    """The failure message of the run, once it has ended FAILED within ``timeout`` s."""
    async with asyncio.timeout(timeout):
        while (await handle.describe()).status is WorkflowExecutionStatus.RUNNING:
            await asyncio.sleep(0.2)
    assert (await handle.describe()).status is WorkflowExecutionStatus.FAILED
    async for event in handle.fetch_history_events():
        if event.event_type is EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            failure = event.workflow_execution_failed_event_attributes.failure
            assert failure.application_failure_info.non_retryable
            return failure.message
    raise AssertionError("no failure event")


async def test_every_undecodable_start_ends_failed_with_a_reason(
    ts_env: WorkflowEnvironment,
) -> None:
    async with keel_worker(ts_env.client) as tq:
        handles = {
            name: await start_raw(ts_env.client, tq, payload)
            for name, payload in UNDECODABLE.items()
        }
        messages = {
            name: await ends_failed(ts_env.client, handle, timeout=20)
            for name, handle in handles.items()
        }
    for name, message in messages.items():
        expected = "invalid input: " if name == "raw bytes" else "undecodable input: "
        assert message.startswith(expected), (name, message)
        assert len(message) < MESSAGE_LIMIT, name


# The CLI: files no start should read whole, and ledgers whose continue-as-new links lie.


@workflow.defn(name="ForgedLinkProbe", sandboxed=False)
class ForgedLinkProbe:
    """Completes at once with a ledger whose first event links back to ``previous_run_id``
    (``"self"``: this very run)."""

    @workflow.run
    async def run(self, previous_run_id: str) -> dict[str, Any]:
        info = workflow.info()
        link = LedgerContinued(
            previous_run_id=info.run_id if previous_run_id == "self" else previous_run_id,
            previous_head="0" * 64,
            run=2,
            rounds_done=1,
        )
        return {"ledger": [link.model_dump(mode="json")]}


@pytest.fixture
async def cli(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Cli]:
    task_queue = f"hostile-cli-{uuid.uuid4()}"
    async with build_worker(
        dev_env.client,
        offline_settings(),
        apps=resolve_apps(),
        task_queue=task_queue,
        provider=OfflineProvider(),
        workflows=[ForgedLinkProbe],
    ):
        yield Cli(dev_env.client.service_client.config.target_host, task_queue, tmp_path)


def assert_clear_refusal(output: str, *needles: str) -> None:
    assert "Traceback" not in output, output
    assert output.startswith("keel: "), output
    for needle in needles:
        assert needle in output, output


async def test_keel_start_refuses_a_deeply_nested_file_without_a_traceback(cli: Cli) -> None:
    nested = cli.tmp / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)  # 200 KB: within every size limit
    for args in (("contract-review",), ("--workflow-type", "ContractReview")):
        output = await cli("start", *args, "--input", str(nested), expect=2)
        assert_clear_refusal(output, "nested too deeply")


async def test_keel_start_refuses_a_huge_file_by_its_size_without_reading_it(cli: Cli) -> None:
    huge = cli.tmp / "huge.json"
    with huge.open("wb") as file:
        file.truncate(50 * 1024**3)  # 50 GB, sparse: reading it would take minutes
    for args in (("contract-review",), ("--workflow-type", "ContractReview")):
        output = await cli("start", *args, "--input", str(huge), expect=2)
        assert_clear_refusal(output, f"is {50 * 1024**3} bytes; the limit is")


async def test_keel_start_escapes_control_characters_in_what_it_quotes(cli: Cli) -> None:
    contract = load_sample("contract-low-risk")
    contract["bad\nkeel: forged line\x1b[2J"] = 1
    output = await cli(
        "start", "contract-review", "--input", cli.write("c.json", contract), expect=2
    )
    assert_clear_refusal(output, "bad\\nkeel: forged line\\x1b[2J")
    assert "\x1b" not in output and "\nkeel: forged" not in output


async def test_keel_ledger_refuses_continue_as_new_links_to_nowhere_or_in_a_loop(
    cli: Cli, dev_env: WorkflowEnvironment
) -> None:
    cases = {
        "self": "a run already read",
        str(uuid.uuid4()): "which does not exist",
        "not a run id\nkeel: forged": "which does not exist",
    }
    for previous, verdict in cases.items():
        handle = await dev_env.client.start_workflow(
            ForgedLinkProbe.run,
            previous,
            id=f"forged-{uuid.uuid4()}",
            task_queue=cli.env["KEEL_TASK_QUEUE"],
        )
        await handle.result()
        output = await cli("ledger", handle.id, expect=1)
        assert_clear_refusal(output, verdict)
        assert "\nkeel: forged" not in output


class FakeRuns:
    """A stand-in client over made-up runs of one workflow id: run id -> (type, ledger)."""

    def __init__(self, latest: str, runs: dict[str, tuple[str, list[dict[str, Any]]]]) -> None:
        self.latest = latest
        self.runs = runs
        self.reads = 0

    def get_workflow_handle(self, workflow_id: str, *, run_id: str | None = None) -> FakeRuns.Run:
        return FakeRuns.Run(self, run_id or self.latest)

    class Run:
        def __init__(self, runs: FakeRuns, run_id: str) -> None:
            self.runs = runs
            self.run_id = run_id

        async def describe(self) -> SimpleNamespace:
            if self.run_id not in self.runs.runs:
                raise RPCError("workflow execution not found", RPCStatusCode.NOT_FOUND, b"")
            self.runs.reads += 1
            return SimpleNamespace(
                run_id=self.run_id,
                workflow_type=self.runs.runs[self.run_id][0],
                status=WorkflowExecutionStatus.COMPLETED,
                task_queue="q",
            )

        async def result(self) -> dict[str, Any]:
            return {"ledger": self.runs.runs[self.run_id][1]}


def link(previous: str) -> dict[str, Any]:
    return LedgerContinued(
        previous_run_id=previous, previous_head="0" * 64, run=2, rounds_done=1
    ).model_dump(mode="json")


async def chain_of(runs: FakeRuns) -> list[Any]:
    return await full_chain(cast(Client, runs), "wf")


async def test_the_ledger_reader_follows_honest_links_oldest_first() -> None:
    runs = FakeRuns(
        "r3",
        {
            "r1": ("Incident", []),
            "r2": ("Incident", [link("r1")]),
            "r3": ("Incident", [link("r2")]),
        },
    )
    chain = await chain_of(runs)
    assert [e.previous_run_id for e in chain] == ["r1", "r2"]


async def test_the_ledger_reader_refuses_a_link_to_a_run_of_another_workflow_type() -> None:
    runs = FakeRuns("r2", {"r1": ("ContractReview", []), "r2": ("Incident", [link("r1")])})
    with pytest.raises(CliError, match="another workflow type") as info:
        await chain_of(runs)
    assert info.value.code == 1


async def test_the_ledger_reader_detects_a_loop_of_links_and_stops() -> None:
    runs = FakeRuns(
        "r3",
        {
            "r1": ("Incident", [link("r3")]),
            "r2": ("Incident", [link("r1")]),
            "r3": ("Incident", [link("r2")]),
        },
    )
    with pytest.raises(CliError, match="loop"):
        await chain_of(runs)
    assert runs.reads == 3


async def test_the_ledger_reader_follows_at_most_max_runs_runs() -> None:
    count = MAX_RUNS + 5
    runs = FakeRuns(
        f"r{count}",
        {f"r{i}": ("Incident", [link(f"r{i - 1}")]) for i in range(1, count + 1)},
    )
    with pytest.raises(CliError, match=f"more than {MAX_RUNS} runs"):
        await chain_of(runs)
    assert runs.reads == MAX_RUNS


async def test_the_history_of_an_undecodable_start_replays_with_the_worker_converter(
    ts_env: WorkflowEnvironment,
) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_raw(ts_env.client, tq, UNDECODABLE["an unknown encoding"])
        await ends_failed(ts_env.client, handle, timeout=20)
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=workflows_of(resolve_apps()), data_converter=WORKER_DATA_CONVERTER
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
