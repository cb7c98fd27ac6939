"""The README's commands, run as a user runs them, against the session's test server.

(``keel gates`` lists executions through visibility, which the time-skipping server does
not implement; Keel's own CLI tests cover it on a dev server.)"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from conftest import DeskFactory
from keel.testing import kit_review_env, wait_for_gate
from temporalio.testing import WorkflowEnvironment

HERE = Path(__file__).parent.parent
KEEL = Path(sys.executable).parent / "keel"


async def keel(env: WorkflowEnvironment, *args: str) -> str:
    """``keel ARGS`` in this folder; its output, once it exited 0."""
    proc = await asyncio.create_subprocess_exec(
        str(KEEL),
        *args,
        cwd=HERE,
        env={
            **os.environ,
            "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            # The kit's test server keeps history in plaintext (keel.testing), so does the CLI.
            "KEEL_CODEC": "off",
            # keel approve signs with a reviewer key; in a test, the kit's (its workers
            # trust it); a reviewer's own comes from `keel keys reviewer`.
            **kit_review_env(),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_start_approve_and_ledger_as_the_readme_shows(
    open_desk: DeskFactory, keel_env: WorkflowEnvironment
) -> None:
    async with open_desk() as desk:
        app, queue = ("--app", "expense_approval"), ("--task-queue", desk.task_queue)
        workflow_id = f"readme-{desk.task_queue}"
        start = ("start", "expense-approval", "--input", "sample.json", "--id", workflow_id)
        started = await keel(keel_env, *start, *app, *queue)
        handle = keel_env.client.get_workflow_handle(workflow_id)
        await wait_for_gate(handle, "manager-approval")
        decision = ("--reviewer", "manager.kim", "--comment", "customer workshop")
        approved = await keel(keel_env, "approve", workflow_id, "manager-approval", *decision)
        await handle.result()
        ledger = await keel(keel_env, "ledger", workflow_id, *app)

    assert started.startswith(f"started {workflow_id}")
    assert "manager-approval: approved" in approved
    assert "Routed" in ledger and "-> manager-approval" in ledger
    assert "PayoutRecorded" in ledger and "hash chain verified" in ledger
