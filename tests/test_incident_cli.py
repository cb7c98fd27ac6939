"""The incident scenario through the CLI with real worker processes: one is killed with
SIGKILL mid-plan, a second finishes the investigation without re-running finished tasks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.conftest import CODEC_KEYS, REVIEW_ENV
from tests.helpers import run_keel, start_keel_worker
from tests.samples import load_sample


class Stack:
    def __init__(self, dev_env: WorkflowEnvironment, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {
            **os.environ,
            "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "KEEL_TASK_QUEUE": f"incident-cli-{uuid.uuid4()}",
            **REVIEW_ENV,  # the test kit signs the reviews these processes take
            "KEEL_DATA_DIR": str(tmp / "data"),
            "KEEL_MODEL": "offline",
            "KEEL_CODEC_KEYS": CODEC_KEYS,  # worker and CLI share the history keys
        }

    async def keel(self, *args: str, expect: int = 0) -> str:
        return await run_keel(*args, env=self.env, expect=expect)

    async def worker(self) -> asyncio.subprocess.Process:
        return await start_keel_worker(self.env)

    async def until(self, workflow_id: str, text: str, *args: str) -> str:
        async with asyncio.timeout(60):
            while text not in (out := await self.keel(*args)):
                await asyncio.sleep(0.3)
        return out


async def test_incident_survives_a_killed_worker(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    stack = Stack(dev_env, tmp_path)
    page = tmp_path / "page.json"
    page.write_text(json.dumps(load_sample("incident-page")))
    workflow_id = f"inc-{uuid.uuid4().hex[:8]}"

    first = await stack.worker()
    started = await stack.keel("start", "incident", "--input", str(page), "--id", workflow_id)
    assert f"started {workflow_id}" in started
    listing = await stack.until(workflow_id, "approve-rollback", "gates")
    assert "oncall.lead, sre.manager" in listing
    first.kill()  # SIGKILL, mid-plan: round 1 done, round 2 waiting at its gate
    assert await first.wait() == -signal.SIGKILL

    second = await stack.worker()
    try:
        approved = await stack.keel(
            "approve",
            workflow_id,
            "approve-rollback",
            "--reviewer",
            "oncall.lead",
            "--comment",
            "spike follows the deploy",
        )
        assert "approve-rollback: approved" in approved
        text = await stack.until(workflow_id, "WorkflowCompleted", "ledger", workflow_id)
        events = [
            json.loads(line)
            for line in (await stack.keel("ledger", workflow_id, "--json")).splitlines()
        ]
        assert "replayed" in await stack.keel("replay", workflow_id)
        assert "deterministic" in await stack.keel("replay", f"{workflow_id}/r2/rollback")
    finally:
        second.send_signal(signal.SIGINT)
        await asyncio.wait_for(second.wait(), timeout=30)

    assert "hash chain verified" in text
    assert "PlanProposed      round 2" in text and "[gated] [undo: roll_forward_deploy]" in text
    completed = [e["ref"] for e in events if e["type"] == "TaskCompleted"]
    assert sorted(completed) == sorted(
        ["metrics", "deploys", "alerts", "rollback", "update-incident"]
    )
    assert events[-2]["type"] == "WorkflowCompleted" and events[-2]["outcome"] == "mitigated"
    decided = next(e for e in events if e["type"] == "GateDecided")
    assert (decided["reviewer"], decided["gate"]) == ("oncall.lead", "approve-rollback")

    # The side-effect record and the fake deploy system saw each effect once.
    db = sqlite3.connect(tmp_path / "data" / "effects.sqlite3")
    effects = db.execute(
        "SELECT idempotency_key, tool, status, attempts FROM keel_effects"
        " WHERE idempotency_key LIKE ? ORDER BY idempotency_key",
        (f"{workflow_id}/%",),
    ).fetchall()
    assert effects == [
        (f"{workflow_id}/r2/rollback", "rollback_deploy", "performed", 1),
        (f"{workflow_id}/r3/update-incident", "update_incident", "performed", 1),
    ]
    (rollbacks,) = db.execute("SELECT count(*) FROM keel_fake_deploys").fetchone()
    (notes,) = db.execute("SELECT count(*) FROM keel_fake_incident_notes").fetchone()
    assert (rollbacks, notes) == (1, 1)
