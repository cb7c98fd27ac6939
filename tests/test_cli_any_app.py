"""The ``keel`` CLI works for any Keel app, including one it never imported.

The app (``tests/apps/echo_app.py``) is served by a worker in this process, in a namespace of
its own; ``keel`` runs as a subprocess from a directory where that module cannot be imported
and with ``KEEL_APPS`` naming only a built-in app. Only the commands that need the app's code
(``keel replay``, and ``keel ledger`` for the app's own event lines) get it, through
``--app`` with the repository on ``PYTHONPATH``.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from keel.offline import OfflineProvider
from keel.workers.runtime import build_worker, connect, ensure_search_attributes
from tests.apps.echo_app import APP as ECHO_APP
from tests.conftest import BIN, CODEC_KEYS, REVIEW_ENV, codec_settings, offline_settings

REPO = Path(__file__).resolve().parents[1]
ECHO_MODULE = "tests.apps.echo_app"
UNREACHABLE = "127.0.0.1:1"


class Run:
    """One ``keel`` invocation's exit code and output."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def text(self) -> str:
        return self.out + self.err

    def json(self) -> Any:
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines()]


class Cli:
    """``keel`` as a user runs it, against the echo app's namespace."""

    def __init__(self, client: Client, task_queue: str, tmp: Path) -> None:
        self.client, self.tmp = client, tmp
        self.address, self.namespace = client.service_client.config.target_host, client.namespace
        address, namespace = self.address, self.namespace
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
        env.pop("PYTHONPATH", None)
        self.env = {
            **env,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": namespace,
            "TEMPORAL_CONFIG_FILE": str(tmp / "no-temporal.toml"),
            "KEEL_TASK_QUEUE": task_queue,
            "KEEL_APPS": "keel.scenarios.contract_review",
            **REVIEW_ENV,  # the test kit signs the reviews these processes take
            "KEEL_DATA_DIR": str(tmp / "data"),
            "KEEL_MODEL": "offline",
            "KEEL_CODEC_KEYS": CODEC_KEYS,  # the worker's: history is encrypted
        }

    async def __call__(
        self,
        *args: str,
        expect: int = 0,
        with_app: bool = False,
        env: Mapping[str, str | None] | None = None,
    ) -> Run:
        """Run ``keel ARGS``; ``env`` adds variables (``None`` removes one), ``with_app``
        puts the repository (and so the echo app) on ``PYTHONPATH``."""
        merged = {**self.env, **({"PYTHONPATH": str(REPO)} if with_app else {}), **(env or {})}
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "keel"),
            *args,
            env={k: v for k, v in merged.items() if v is not None},
            cwd=self.tmp,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        run = Run(proc.returncode or 0, out.decode(), err.decode())
        assert run.code == expect, f"keel {' '.join(args)} -> {run.code}:\n{run.text}"
        assert "Traceback" not in run.text, run.text
        return run

    def write(self, name: str, payload: object) -> str:
        path = self.tmp / name
        path.write_text(json.dumps(payload))
        return str(path)

    async def start_echo(self, message: str = "hello from the echo app") -> str:
        workflow_id = f"echo-{uuid.uuid4().hex[:8]}"
        await self(
            "start",
            "--workflow-type",
            "TestEchoReview",
            "--input",
            self.write("echo.json", {"message": message}),
            "--id",
            workflow_id,
        )
        return workflow_id

    async def wait_for_gate(self, workflow_id: str, gate: str) -> list[dict[str, Any]]:
        """``keel gates`` reads visibility, which lags a little behind the workflow."""
        async with asyncio.timeout(30):
            while True:
                rows = (await self("gates", "-o", "json")).json_lines()
                mine = [r for r in rows if r["workflow_id"] == workflow_id and r["gate"] == gate]
                if mine:
                    return mine
                await asyncio.sleep(0.3)

    async def wait_for_ledger(self, workflow_id: str, event_type: str) -> list[dict[str, Any]]:
        async with asyncio.timeout(30):
            while True:
                events = (await self("ledger", workflow_id, "-o", "json")).json_lines()
                if any(e["type"] == event_type for e in events):
                    return events
                await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def echo_client(dev_env: WorkflowEnvironment) -> AsyncIterator[Client]:
    """A client of a namespace of the dev server for the echo app alone."""
    namespace = f"keel-cli-{uuid.uuid4().hex[:8]}"
    await dev_env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86_400)
        )
    )
    address = dev_env.client.service_client.config.target_host
    async with asyncio.timeout(60):
        while True:  # a new namespace is usable once the frontend's cache has it
            try:
                client = await connect(codec_settings(), address=address, namespace=namespace)
                await ensure_search_attributes(client)
                break
            except RPCError:
                await asyncio.sleep(0.5)
    yield client


@pytest.fixture
async def cli(echo_client: Client, tmp_path: Path) -> AsyncIterator[Cli]:
    task_queue = f"echo-{uuid.uuid4()}"
    async with build_worker(
        echo_client,
        offline_settings(),
        apps=[ECHO_APP],
        task_queue=task_queue,
        provider=OfflineProvider(),
    ):
        yield Cli(echo_client, task_queue, tmp_path)


async def test_the_cli_process_cannot_import_the_echo_app(cli: Cli) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "python"),
        "-c",
        f"import {ECHO_MODULE}",
        env=cli.env,
        cwd=cli.tmp,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 1 and b"No module named 'tests'" in err


async def test_start_gates_approve_ledger_export_and_replay_of_an_app_the_cli_never_loaded(
    cli: Cli,
) -> None:
    workflow_id = f"echo-{uuid.uuid4().hex[:8]}"
    echo = cli.write("echo.json", {"message": "four words of echo"})
    by_entry = await cli("start", "echo", "--input", echo, expect=2)
    assert "no loaded app has an entry 'echo'" in by_entry.err
    assert "--workflow-type" in by_entry.err
    started = await cli(
        "start", "--workflow-type", "TestEchoReview", "--input", echo, "--id", workflow_id,
        "-o", "json",
    )  # fmt: skip
    record = started.json()
    assert record["workflow_id"] == workflow_id and record["run_id"]
    assert (
        f"/namespaces/{cli.namespace}/workflows/{workflow_id}/{record['run_id']}"
        in (record["ui_url"])
    )

    rows = await cli.wait_for_gate(workflow_id, "echo-review")
    assert rows[0]["reviewers"] == ["echo.reviewer"] and rows[0]["state"] == "awaiting_approval"
    assert rows[0]["context"] == {"echo": "four words of echo"}
    listing = await cli("gates")
    assert any(workflow_id in line and "echo.reviewer" in line for line in listing.out.splitlines())

    refused = await cli(
        "approve", workflow_id, "echo-review", "--reviewer", "mallory", "-o", "json", expect=2
    )
    assert "'mallory' may not review" in json.loads(refused.err)["error"]
    receipt = (
        await cli(
            "approve", workflow_id, "echo-review", "--reviewer", "echo.reviewer", "-o", "json"
        )
    ).json()
    assert receipt["workflow_id"] == workflow_id and receipt["gate"] == "echo-review"
    assert receipt["state"] == "approved" and receipt["ledger_seq"] > 0

    events = await cli.wait_for_ledger(workflow_id, "WorkflowCompleted")
    noted = [e for e in events if e["type"] == "EchoNoted"]
    assert noted and noted[0]["words"] == 4 and noted[0]["echo"] == "four words of echo"
    assert events[-2]["outcome"] == "approved" and events[-1]["type"] == "ChainHeadSigned"
    text = (await cli("ledger", workflow_id)).out
    assert "EchoNoted" in text and "words=4" in text  # generic: this process lacks the type
    assert f"hash chain verified: {len(events)} events" in text
    described = (await cli("ledger", workflow_id, "--app", ECHO_MODULE, with_app=True)).out
    assert "echoed 4 word(s) back: 'four words of echo'" in described
    assert "hash chain verified" in described

    # Not a Keel workflow: the export skips it and says so.
    other = await cli.client.start_workflow(
        "NotKeel", {}, id=f"other-{uuid.uuid4().hex[:8]}", task_queue="nobody-polls"
    )
    await other.terminate()
    out_file = cli.tmp / "ledgers.jsonl"
    exported = await cli("export", "--out", str(out_file), "-o", "json")
    assert f"keel: skipped {other.id}" in exported.err
    assert json.loads(exported.err.splitlines()[-1])["skipped"] >= 1
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    mine = [e for e in lines if e["workflow_id"] == workflow_id]
    assert [e["event"]["seq"] for e in mine] == [e["seq"] for e in events]
    assert "EchoNoted" in {e["event"]["type"] for e in mine}
    assert json.loads(exported.err.splitlines()[-1])["events"] == len(lines)

    unloaded = await cli("replay", workflow_id, expect=2)
    assert f"{workflow_id} is a TestEchoReview workflow, which no loaded app defines" in (
        unloaded.err
    )
    assert "--app MODULE[:ATTR]" in unloaded.err
    replayed = await cli("replay", workflow_id, "--app", ECHO_MODULE, "-o", "json", with_app=True)
    assert replayed.json() == {
        "workflow_id": workflow_id,
        "workflow_type": "TestEchoReview",
        "events": replayed.json()["events"],
        "deterministic": True,
    }
    text = (await cli("replay", workflow_id, "--app", ECHO_MODULE, with_app=True)).out
    assert f"replayed {workflow_id} (TestEchoReview)" in text and "deterministic" in text


async def test_reject_and_an_invalid_input_started_by_type(cli: Cli) -> None:
    workflow_id = await cli.start_echo()
    await cli.wait_for_gate(workflow_id, "echo-review")
    missing_comment = await cli("reject", workflow_id, "echo-review", "--reviewer", "x", expect=2)
    assert "--comment" in missing_comment.err
    reject = ["reject", workflow_id, "echo-review", "--reviewer", "echo.reviewer"]
    out = await cli(*reject, "--comment", "no", "-o", "json")
    assert out.json()["gate"] == "echo-review" and out.json()["state"] == "rejected"
    await cli.client.get_workflow_handle(workflow_id).result()
    events = (await cli("ledger", workflow_id, "-o", "json")).json_lines()
    assert events[-2]["outcome"] == "rejected"
    again = await cli(*reject, "--comment", "twice", expect=1)
    assert f"keel: workflow '{workflow_id}'" in again.err and "already completed" in again.err

    # The raw input goes to the workflow, which refuses it non-retryably: nothing wedges.
    bad_id = f"echo-bad-{uuid.uuid4().hex[:8]}"
    bad = cli.write("bad.json", {"text": "no message field"})
    await cli("start", "--workflow-type", "TestEchoReview", "--input", bad, "--id", bad_id)
    rejected = await cli.wait_for_ledger(bad_id, "InputRejected")
    assert any("message: Field required" in r for r in rejected[-1]["reasons"])


async def test_replay_of_a_history_file_names_the_workflow_from_the_history(cli: Cli) -> None:
    workflow_id = await cli.start_echo()
    await cli.wait_for_gate(workflow_id, "echo-review")
    await cli("approve", workflow_id, "echo-review", "--reviewer", "echo.reviewer")
    await cli.wait_for_ledger(workflow_id, "WorkflowCompleted")
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "temporal"),
        "workflow", "show", "-w", workflow_id, "--output", "json",
        "--address", cli.address, "--namespace", cli.namespace,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    history, _ = await proc.communicate()
    assert proc.returncode == 0
    saved = cli.tmp / "some-history.json"
    saved.write_bytes(history)

    # A history file needs no server.
    offline = {"TEMPORAL_ADDRESS": UNREACHABLE}
    ok = await cli("replay", str(saved), "--app", ECHO_MODULE, with_app=True, env=offline)
    assert f"replayed {workflow_id} (TestEchoReview)" in ok.out and "deterministic" in ok.out
    missing_app = await cli("replay", str(saved), expect=2, env=offline)
    assert "is a TestEchoReview workflow, which no loaded app defines" in missing_app.err

    changed = json.loads(history)
    for event in changed["events"]:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled:
            scheduled["activityType"]["name"] = "some.other_activity"
    tampered = cli.tmp / "changed.json"
    tampered.write_text(json.dumps(changed))
    failed = await cli(
        "replay", str(tampered), "--app", ECHO_MODULE, "-o", "json", expect=1, with_app=True
    )
    assert failed.json()["deterministic"] is False and failed.json()["workflow_id"] == workflow_id
    assert "replay of" in json.loads(failed.err)["error"]
    text = await cli("replay", str(tampered), "--app", ECHO_MODULE, expect=1, with_app=True)
    assert f"keel: replay of {workflow_id} failed: NondeterminismError" in text.err

    not_history = await cli("replay", cli.write("x.json", {"events": "nope"}), expect=2)
    assert "is not a workflow history" in not_history.err
    absent = await cli("replay", str(cli.tmp / "absent.json"), expect=2)
    assert "cannot read" in absent.err


async def test_a_ledger_whose_hash_chain_does_not_verify_exits_1(cli: Cli) -> None:
    workflow_id = f"tampered-{uuid.uuid4().hex[:8]}"
    empty = cli.write("empty.json", {})
    await cli(
        "start", "--workflow-type", "TestTamperedLedger", "--input", empty, "--id", workflow_id
    )
    await cli.client.get_workflow_handle(workflow_id).result()
    text = await cli("ledger", workflow_id, expect=1)
    assert "echo=changed afterwards" in text.out
    assert "LEDGER BROKEN at event #2: hash does not match the event's content" in text.out
    assert "keel: ledger broken at event 2" in text.err
    as_json = await cli("ledger", workflow_id, "-o", "json", expect=1)
    assert [e["seq"] for e in as_json.json_lines()] == [1, 2, 3]
    assert json.loads(as_json.err)["error"].startswith("ledger broken at event 2")


async def test_exit_codes_for_failures_refusals_and_an_unreachable_server(cli: Cli) -> None:
    unknown = f"nobody-{uuid.uuid4().hex[:8]}"
    missing = await cli("ledger", unknown, expect=1)
    assert f"keel: workflow '{unknown}' in namespace '{cli.namespace}'" in missing.err
    assert "not found" in missing.err
    as_json = await cli("approve", unknown, "g", "--reviewer", "r", "-o", "json", expect=1)
    assert "not found" in json.loads(as_json.err)["error"]

    malformed = cli.tmp / "malformed.json"
    malformed.write_text("{not json")
    out = await cli("start", "--workflow-type", "T", "--input", str(malformed), expect=2)
    assert "is not valid JSON" in out.err
    out = await cli("start", "contract-review", "--input", str(cli.tmp / "absent.json"), expect=2)
    assert "cannot read" in out.err and "No such file" in out.err
    out = await cli("start", "--input", cli.write("e.json", {}), expect=2)
    assert "name the ENTRY to start" in out.err
    out = await cli("export", "--query", "WorkflowType ==== 'x'", expect=2)
    assert out.err.startswith("keel: ")
    out = await cli("ledger", expect=2)  # argparse: the workflow id is required
    assert "workflow_id" in out.err

    for command in (["ledger", "x"], ["gates"], ["export"], ["worker", "--app", "x"]):
        down = await cli(*command, "--address", UNREACHABLE, expect=3)
        assert f"cannot reach Temporal at {UNREACHABLE}" in down.err
    down = await cli("-o", "json", "gates", expect=3, env={"TEMPORAL_ADDRESS": UNREACHABLE})
    assert "cannot reach Temporal" in json.loads(down.err)["error"]


async def test_address_namespace_and_profile_options(cli: Cli) -> None:
    workflow_id = await cli.start_echo()
    await cli.wait_for_gate(workflow_id, "echo-review")
    # Flags win over TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE, before or after the command.
    wrong = {"TEMPORAL_ADDRESS": UNREACHABLE, "TEMPORAL_NAMESPACE": "default"}
    flags = ["--address", cli.address, "--namespace", cli.namespace]
    events = (await cli("ledger", workflow_id, *flags, "-o", "json", env=wrong)).json_lines()
    assert events[0]["type"] == "WorkflowStarted"
    assert workflow_id in (await cli(*flags, "gates", env=wrong)).out
    elsewhere = await cli("ledger", workflow_id, "--namespace", "default", expect=1)
    assert "not found" in elsewhere.err

    config = cli.tmp / "temporal.toml"
    config.write_text(
        f'[profile.echo]\naddress = "{cli.address}"\nnamespace = "{cli.namespace}"\n\n'
        f'[profile.down]\naddress = "{UNREACHABLE}"\n'
    )
    profile_env: dict[str, str | None] = {
        "TEMPORAL_CONFIG_FILE": str(config),
        "TEMPORAL_ADDRESS": None,
        "TEMPORAL_NAMESPACE": None,
    }
    by_profile = await cli("ledger", workflow_id, "--profile", "echo", "--json", env=profile_env)
    assert by_profile.json_lines()[0]["workflow_id"] == workflow_id
    by_env = await cli("gates", env={**profile_env, "TEMPORAL_PROFILE": "echo"})
    assert workflow_id in by_env.out
    down = await cli("gates", "--profile", "down", expect=3, env=profile_env)
    assert f"cannot reach Temporal at {UNREACHABLE}" in down.err
    tls = await cli(
        "gates", "--profile", "echo", expect=3, env={**profile_env, "TEMPORAL_TLS": "true"}
    )
    assert f"cannot reach Temporal at {cli.address}" in tls.err  # TLS against a plain server
    unknown = await cli("gates", "--profile", "nope", expect=2, env=profile_env)
    assert "Profile 'nope' not found" in unknown.err

    # `keel worker` connects the same way: it serves the echo app in the profile's namespace.
    queue = f"echo-worker-{uuid.uuid4()}"
    worker = await asyncio.create_subprocess_exec(
        str(BIN / "keel"),
        "worker",
        "--app",
        ECHO_MODULE,
        "--profile",
        "echo",
        env={
            **{k: v for k, v in cli.env.items() if k not in profile_env},
            "TEMPORAL_CONFIG_FILE": str(config),
            "PYTHONPATH": str(REPO),
            "KEEL_TASK_QUEUE": queue,
        },
        cwd=cli.tmp,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert worker.stdout is not None
        async with asyncio.timeout(30):
            while b"keel worker:" not in (line := await worker.stdout.readline()):
                assert line, "keel worker exited before it was ready"
        assert f"on {cli.address} (namespace {cli.namespace}".encode() in line
        served = f"echo-served-{uuid.uuid4().hex[:8]}"
        echo = cli.write("served.json", {"message": "served by keel worker"})
        await cli(
            "start", "--workflow-type", "TestEchoReview", "--input", echo, "--id", served,
            "--task-queue", queue, "--profile", "echo", env=profile_env,
        )  # fmt: skip
        await cli.wait_for_gate(served, "echo-review")
        await cli("approve", served, "echo-review", "--reviewer", "echo.reviewer")
        events = await cli.wait_for_ledger(served, "WorkflowCompleted")
        assert events[-2]["outcome"] == "approved"
    finally:
        worker.terminate()
        await worker.wait()
    await cli("approve", workflow_id, "echo-review", "--reviewer", "echo.reviewer")
