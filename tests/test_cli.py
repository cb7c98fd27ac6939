"""The ``keel`` CLI end to end against a real Temporal dev server, in subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from keel.offline import OfflineProvider
from keel.workers.apps import resolve_apps
from keel.workers.runtime import build_worker, connect
from tests.conftest import BIN, CODEC_KEYS, REVIEW_ENV, codec_settings, offline_settings
from tests.helpers import run_keel
from tests.samples import load_sample


class Cli:
    """Runs ``keel`` as a user would, against one server and task queue."""

    def __init__(self, address: str, task_queue: str, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {
            **os.environ,
            "TEMPORAL_ADDRESS": address,
            "KEEL_TASK_QUEUE": task_queue,
            **REVIEW_ENV,  # the test kit signs the reviews these processes take
            "KEEL_DATA_DIR": str(tmp / "data"),
            "KEEL_MODEL": "offline",
            "KEEL_CODEC_KEYS": CODEC_KEYS,  # the worker's: history is encrypted
        }

    async def __call__(self, *args: str, expect: int = 0) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "keel"),
            *args,
            env=self.env,
            cwd=self.tmp,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        text = out.decode() + err.decode()
        assert proc.returncode == expect, f"keel {' '.join(args)} -> {proc.returncode}:\n{text}"
        return text

    def write(self, name: str, payload: object) -> str:
        path = self.tmp / name
        path.write_text(json.dumps(payload))
        return str(path)

    async def wait_for_listed_gate(self, workflow_id: str, gate: str) -> str:
        """``keel gates`` reads visibility, which lags a little behind the workflow."""
        async with asyncio.timeout(30):
            while True:
                listing = await self("gates")
                if any(
                    workflow_id in line and f" {gate} " in line for line in listing.splitlines()
                ):
                    return listing
                await asyncio.sleep(0.3)


@asynccontextmanager
async def serving_cli(
    dev_env: WorkflowEnvironment, tmp_path: Path, prefix: str = "cli"
) -> AsyncIterator[Cli]:
    """``keel`` in subprocesses against the dev server, with a worker of every app on a fresh
    task queue (history encrypted under the session's keys)."""
    task_queue = f"{prefix}-{uuid.uuid4()}"
    address = dev_env.client.service_client.config.target_host
    async with build_worker(
        await connect(codec_settings(), address=address),
        offline_settings(),
        apps=resolve_apps(),
        task_queue=task_queue,
        provider=OfflineProvider(),
    ):
        yield Cli(address, task_queue, tmp_path)


@pytest.fixture
async def cli(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Cli]:
    async with serving_cli(dev_env, tmp_path) as running:
        yield running


async def test_start_gates_approve_and_ledger(cli: Cli) -> None:
    workflow_id = f"cli-medium-{uuid.uuid4().hex[:8]}"
    contract = cli.write("contract.json", load_sample("contract-medium-risk"))
    started = await cli("start", "contract-review", "--input", contract, "--id", workflow_id)
    assert f"started {workflow_id}" in started
    assert f"/namespaces/default/workflows/{workflow_id}/" in started

    listing = await cli.wait_for_listed_gate(workflow_id, "standard-review")
    assert "legal.priya, legal.sam" in listing and "awaiting_approval" in listing
    as_json = [json.loads(line) for line in (await cli("gates", "--json")).splitlines()]
    mine = [row for row in as_json if row["workflow_id"] == workflow_id]
    assert mine[0]["gate"] == "standard-review" and mine[0]["context"]["risk_level"] == "medium"

    refused = await cli(
        "approve", workflow_id, "standard-review", "--reviewer", "mallory", expect=2
    )
    assert "refused" in refused and "'mallory' may not review" in refused
    approved = await cli(
        "approve",
        workflow_id,
        "standard-review",
        "--reviewer",
        "legal.priya",
        "--comment",
        "looks fine",
    )
    assert "standard-review: approved" in approved

    text = await cli("ledger", workflow_id)
    assert "GateDecided" in text and "approve by legal.priya via update" in text
    assert "from keel-cli@" in text
    assert "risk-classifier@1" in text and "offline/offline-rules-v1" in text
    assert "hash chain verified" in text
    lines = (await cli("ledger", workflow_id, "--json")).splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all({"seq", "type", "at", "hash"} <= set(e) for e in events)
    assert events[-2]["type"] == "WorkflowCompleted" and events[-2]["outcome"] == "approved"
    assert events[-1]["type"] == "ChainHeadSigned" and events[-1]["covers_seq"] == events[-2]["seq"]


async def test_reject_reinvokes_the_agent_then_modify_approves(cli: Cli) -> None:
    workflow_id = f"cli-high-{uuid.uuid4().hex[:8]}"
    contract = cli.write("contract.json", load_sample("contract-high-risk"))
    await cli("start", "contract-review", "--input", contract, "--id", workflow_id)
    await cli.wait_for_listed_gate(workflow_id, "general-counsel")
    await cli(
        "reject",
        workflow_id,
        "general-counsel",
        "--reviewer",
        "gc.morgan",
        "--comment",
        "Clause 4 hides penalties",
    )
    await cli.wait_for_listed_gate(workflow_id, "general-counsel-2")
    out = await cli(
        "approve",
        workflow_id,
        "general-counsel-2",
        "--reviewer",
        "gc.morgan",
        "--modify",
        '{"conditions": ["cap liability"]}',
    )
    assert "general-counsel-2: awaiting_approval (1 of 2 approvals" in out
    out = await cli("approve", workflow_id, "general-counsel-2", "--reviewer", "deputy-gc.alex")
    assert "general-counsel-2: modified" in out
    text = await cli("ledger", workflow_id)
    assert "RolledBack" in text
    assert "Reviewer gc.morgan rejected the assessment: Clause 4 hides penalties" in text
    assert "modifications {'conditions': ['cap liability']}" in text


async def test_cli_refuses_bad_input_and_starts_nothing(cli: Cli) -> None:
    bad = load_sample("contract-low-risk")
    del bad["vendor"]
    path = cli.write("bad.json", bad)
    workflow_id = f"cli-bad-{uuid.uuid4().hex[:8]}"
    out = await cli("start", "contract-review", "--input", path, "--id", workflow_id, expect=2)
    assert "vendor: Field required" in out and "nothing was started" in out
    missing = await cli("ledger", workflow_id, expect=1)
    assert "not found" in missing.lower()
    huge = load_sample("contract-low-risk")
    huge["clauses"] = [
        {"id": str(i), "heading": "Padding", "text": "x" * 19_000} for i in range(20)
    ]
    out = await cli("start", "contract-review", "--input", cli.write("huge.json", huge), expect=2)
    assert "the limit is 262144" in out
    out = await cli("approve", "no-such-workflow", "g", "--reviewer", "r", expect=1)
    assert "not found" in out.lower()
    out = await cli("reject", "x", "g", "--reviewer", "r", expect=2)
    assert "--comment" in out


async def test_replay_and_export(cli: Cli) -> None:
    workflow_id = f"cli-low-{uuid.uuid4().hex[:8]}"
    contract = cli.write("contract.json", load_sample("contract-low-risk"))
    await cli("start", "contract-review", "--input", contract, "--id", workflow_id)
    async with asyncio.timeout(30):
        while "WorkflowCompleted" not in await cli("ledger", workflow_id):
            await asyncio.sleep(0.2)
    assert "deterministic" in await cli("replay", workflow_id)
    out_file = cli.tmp / "ledgers.jsonl"
    await cli("export", "--query", f"WorkflowId = '{workflow_id}'", "--out", str(out_file))
    exported = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert {e["workflow_id"] for e in exported} == {workflow_id}
    assert [e["event"]["type"] for e in exported][-2:] == ["WorkflowCompleted", "ChainHeadSigned"]
    assert {e["status"] for e in exported} == {"COMPLETED"}


async def test_a_ledger_this_client_cannot_decode_is_a_clear_error_and_a_counted_skip(
    cli: Cli,
) -> None:
    """Encrypted history read without its keys: ``keel ledger`` says how to configure them,
    ``keel export`` skips the execution with that reason (no traceback either way)."""
    workflow_id = f"c-undecodable-{uuid.uuid4().hex[:8]}"
    contract = cli.write("contract.json", load_sample("contract-low-risk"))
    await cli("start", "contract-review", "--input", contract, "--id", workflow_id)
    await cli("ledger", workflow_id)  # completed: the ledger is in its result
    keyless = {k: v for k, v in cli.env.items() if k != "KEEL_CODEC_KEYS"} | {"KEEL_CODEC": "off"}
    out = await run_keel("ledger", workflow_id, env=keyless, expect=1)
    assert "cannot be decoded" in out and "KEEL_CODEC_KEYS" in out and "Traceback" not in out
    query = f"WorkflowId = '{workflow_id}'"
    exported = await run_keel(
        "export", "--query", query, "--source", "temporal", env=keyless, expect=0
    )
    assert "skipped" in exported and "cannot be decoded" in exported
    assert "Traceback" not in exported
