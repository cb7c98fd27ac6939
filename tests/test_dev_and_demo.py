"""``keel demo`` and ``keel dev`` as a user runs them: embedded server, UI, persistence."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import urllib.request
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.conftest import BIN, REVIEW_ENV, free_port


def stack_env(tmp: Path, port: int, ui_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "KEEL_UI_PORT": str(ui_port),
        "KEEL_UI_URL": f"http://127.0.0.1:{ui_port}",
        **REVIEW_ENV,  # the test kit signs the reviews these processes take
        "KEEL_DATA_DIR": str(tmp / "data"),
        "KEEL_MODEL": "offline",
        "KEEL_SMTP_PORT": str(free_port()),
    }


def sample_file(tmp: Path, app: str, sample: str) -> Path:
    """A copy of a built-in app's sample in ``tmp``, as a user's input file."""
    source = Path(__file__).parents[1] / "keel/scenarios" / app / "samples" / f"{sample}.json"
    copy = tmp / f"{sample}.json"
    copy.write_text(source.read_text())
    return copy


async def keel(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "keel"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    return proc.returncode or 0, out.decode()


class DevStack:
    """``keel dev`` in the background, stopped with Ctrl-C (SIGINT)."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.env = env
        self.args = args
        self.ready = ""
        """The line ``keel dev`` prints once it is up."""
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> DevStack:
        self.proc = await asyncio.create_subprocess_exec(
            str(BIN / "keel"),
            "dev",
            *self.args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            while b"keel dev:" not in (line := await self.proc.stdout.readline()):
                assert line, "keel dev exited before it was ready"
        self.ready = line.decode()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(self.proc.wait(), timeout=60) == 0


async def test_demo_runs_every_route_and_dev_reopens_its_executions(tmp_path: Path) -> None:
    env = stack_env(tmp_path, free_port(), free_port())
    code, out = await keel(env, "demo")
    assert code == 0, out
    assert "starting the embedded dev server" in out
    # The scripted reviewers sign in to the demo's inbox and decide through its API.
    assert "legal.priya signs in and sends:" in out and "/standard-review/decisions" in out
    assert "gc.morgan signs in and sends:" in out
    assert '/general-counsel/decisions {"action": "reject"' in out
    assert out.count("hash chain verified") == 7
    assert "ValidationFailed" in out and "(provider call 2)" in out  # recovery paths shown
    assert "PlanRejected" in out and "unknown tool 'kubectl_exec'" in out
    assert "oncall.lead signs in and sends:" in out and "/approve-rollback/decisions" in out
    links = re.findall(r"--- UI: http://127\.0\.0\.1:\d+/namespaces/default/workflows/", out)
    assert len(links) == 7
    summary = out.split("Summary", 1)[1]
    assert re.search(r"low risk +approved +C-2026-0101, by rule:contract-risk-routing@1", summary)
    assert re.search(r"medium risk +approved +C-2026-0102, by legal.priya", summary)
    assert re.search(r"high risk +approved +C-2026-0103, by deputy-gc.alex", summary)
    assert re.search(
        r"latency page +mitigated +INC-2026-1121, 3 rounds, tasks r1/metrics, r1/deploys, "
        r"r1/alerts, r2/rollback, r3/update-incident",
        summary,
    )
    # Support: the draft broke policy and was repaired; the refund was approved; one email.
    assert "draft-reply attempt 1 [rule]: the reply quotes order 'AB-000000'" in out
    assert "support.lead.chen signs in and sends:" in out and "/approve-refund/decisions" in out
    assert "SMTP server received 1 message(s) with that Message-ID" in out
    assert re.search(
        r"refund request +replied +refund, AB-104233, reply <[0-9a-f]{32}@keel>", summary
    )
    assert re.search(r"injection +denied +untriaged, no order", summary)
    assert re.search(r"20 suppliers +ingested +suppliers-demo, 20 of 20 enriched, 2 runs", summary)
    assert "triage prompt-injection: deny" in out
    high_id = re.search(r"(demo-\S+-contract-high)", out)
    assert high_id is not None

    async with DevStack(env):
        code, ledger = await keel(env, "ledger", high_id.group(1))
        assert code == 0 and "WorkflowCompleted" in ledger and "RolledBack" in ledger
        ui = urllib.request.urlopen(env["KEEL_UI_URL"], timeout=10)
        assert ui.status == 200


async def test_dev_keeps_the_stack_up_and_persists_executions(tmp_path: Path) -> None:
    env = stack_env(tmp_path, free_port(), free_port())
    contract = sample_file(tmp_path, "contract_review", "contract-low-risk")
    async with DevStack(env):
        code, out = await keel(
            env, "start", "contract-review", "--input", str(contract), "--id", "persisted-1"
        )
        assert code == 0, out
        async with asyncio.timeout(30):
            while "WorkflowCompleted" not in (await keel(env, "ledger", "persisted-1"))[1]:
                await asyncio.sleep(0.2)
    async with DevStack(env):  # same data dir: the execution is still there
        code, out = await keel(env, "ledger", "persisted-1")
        assert code == 0 and "approved (decided_by=rule:contract-risk-routing@1" in out


async def test_dev_serves_the_apps_it_is_given_or_no_worker_at_all(tmp_path: Path) -> None:
    env = stack_env(tmp_path, free_port(), free_port())
    contract = sample_file(tmp_path, "contract_review", "contract-low-risk")
    async with DevStack(env, "--app", "keel.scenarios.contract_review") as stack:
        assert "worker for contract-review;" in stack.ready, stack.ready
        code, out = await keel(env, "start", "contract-review", "--input", str(contract))
        assert code == 0, out
        workflow_id = re.search(r"started (\S+)", out)
        assert workflow_id is not None
        async with asyncio.timeout(30):
            while "WorkflowCompleted" not in (await keel(env, "ledger", workflow_id[1]))[1]:
                await asyncio.sleep(0.2)
    async with DevStack(env, "--no-worker") as stack:
        assert "no worker;" in stack.ready, stack.ready
        # A completed execution's ledger comes from its result: no worker needed.
        code, out = await keel(env, "ledger", workflow_id[1])
        assert code == 0 and "hash chain verified" in out, out


async def test_support_email_through_the_cli_sends_one_reply(tmp_path: Path) -> None:
    env = stack_env(tmp_path, free_port(), free_port())
    email = sample_file(tmp_path, "support_email", "support-refund")
    async with DevStack(env):
        code, out = await keel(
            env, "start", "support-email", "--input", str(email), "--id", "mail-1"
        )
        assert code == 0, out
        async with asyncio.timeout(30):
            while "approve-refund" not in (await keel(env, "gates"))[1]:
                await asyncio.sleep(0.3)
        code, out = await keel(
            env, "approve", "mail-1", "approve-refund", "--reviewer", "support.lead.chen"
        )
        assert code == 0 and "approve-refund: approved" in out, out
        async with asyncio.timeout(30):
            while "WorkflowCompleted" not in (ledger := (await keel(env, "ledger", "mail-1"))[1]):
                await asyncio.sleep(0.2)
    assert "replied" in ledger and "send-reply send_email effect <" in ledger
    mailbox = [
        json.loads(line) for line in (tmp_path / "data" / "mailbox.jsonl").read_text().splitlines()
    ]
    assert len(mailbox) == 1 and mailbox[0]["rcpt_tos"] == ["maya.lindqvist@example.com"]


async def test_demo_uses_a_running_server(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    env = stack_env(tmp_path, 0, free_port())
    env["TEMPORAL_ADDRESS"] = dev_env.client.service_client.config.target_host
    code, out = await keel(env, "demo")
    assert code == 0, out
    assert "Using the Temporal server at" in out and "embedded" not in out
    assert out.count("hash chain verified") == 7
