"""``keel demo``: every scenario end to end, with a scripted reviewer and printed ledgers.

Starts the embedded dev server if no Temporal server answers at ``TEMPORAL_ADDRESS``, runs a
worker on its own task queue (so its fault injection applies only to its executions), and
decides gates through the same code path as ``keel approve`` and ``keel reject``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowHandle

from keel.activities.providers import ModelProvider, OfflineProvider
from keel.activities.tools.smtp_sink import SmtpSink
from keel.contracts.contract_review import ContractReviewResult
from keel.contracts.gates import GateView
from keel.contracts.support import SupportResult
from keel.samples import load_sample
from keel.settings import KeelSettings, OfflineFault
from keel.workers import commands
from keel.workers.devstack import dev_server
from keel.workers.render import ledger_text, ui_link
from keel.workers.runtime import connect, ensure_search_attributes, running_worker

DEMO_QUEUE = "keel-demo"

# What the scripted reviewer does at each gate: (reviewer, decision, comment, modifications).
REVIEWER_SCRIPT: dict[str, tuple[str, str, str, dict[str, Any] | None]] = {
    "standard-review": ("legal.priya", "approve", "DPA for payroll data is attached.", None),
    "general-counsel": (
        "gc.morgan",
        "reject",
        "Clause 4 fees hide a penalty schedule for early exit; reassess with that in mind.",
        None,
    ),
    "general-counsel-2": (
        "gc.morgan",
        "approve",
        "Approved with conditions.",
        {"conditions": ["cap customer liability at 12 months of fees", "drop exclusivity"]},
    ),
    "approve-refund": (
        "support.lead.chen",
        "approve",
        "Damage is plausible for this model; refund approved.",
        None,
    ),
    "approve-rollback": (
        "oncall.lead",
        "approve",
        "Latency spike starts two minutes after the deploy; roll back.",
        None,
    ),
    "risk-classification": (
        "legal.sam",
        "approve",
        "Classified by hand.",
        {"risk_level": "medium", "clause_refs": [], "rationale": "Classified by a human reviewer."},
    ),
}


def demo_faults(tag: str) -> list[OfflineFault]:
    """Faults that show the recovery paths: a rate limit, a malformed answer, an invalid plan
    (rejected, fed back, re-planned) and a reply draft that breaks policy (repaired)."""
    return [
        OfflineFault(
            kind="rate_limit",
            workflow_id_prefix=f"demo-{tag}-contract-low",
            activity_attempts=[1],
            retry_after_seconds=1,
        ),
        OfflineFault(kind="malformed_json", workflow_id_prefix=f"demo-{tag}-contract-medium"),
        OfflineFault(
            kind="plan_unknown_tool", workflow_id_prefix=f"demo-{tag}-incident", rounds=[1]
        ),
        OfflineFault(
            kind="reply_policy_violation",
            workflow_id_prefix=f"demo-{tag}-support-refund",
            contract="support-reply@1",
        ),
    ]


async def run_demo(settings: KeelSettings) -> int:
    # Failed attempts that Temporal retries are shown in the ledger; keep tracebacks out.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    async with AsyncExitStack() as stack:
        try:
            client = await asyncio.wait_for(connect(settings), timeout=3)
            print(f"Using the Temporal server at {settings.temporal_address}")
        except (RuntimeError, TimeoutError, OSError):
            print("No Temporal server answered; starting the embedded dev server ...")
            env = await stack.enter_async_context(dev_server(settings))
            client = env.client
            print(f"Dev server up; UI at {settings.ui_url}, data in {settings.data_dir}")
        await ensure_search_attributes(client)
        tag = time.strftime("%Y%m%d-%H%M%S")
        # With the offline model, inject faults so the recovery paths show in the ledgers.
        provider: ModelProvider | None = (
            OfflineProvider(demo_faults(tag)) if settings.resolved_model == "offline" else None
        )
        print(f"Model: {settings.resolved_model}")
        # Replies go over SMTP to a local server that keeps what it receives.
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        sink = stack.enter_context(SmtpSink(mailbox=settings.data_dir / "mailbox.jsonl"))
        settings = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": sink.port})
        print(f"SMTP: 127.0.0.1:{sink.port}, mailbox {sink.mailbox}\n")
        results = []
        # The fake deploy and incident systems get a namespace per demo run, so each run
        # starts from the scenario's initial state.
        async with running_worker(
            client,
            settings,
            task_queue=DEMO_QUEUE,
            provider=provider,
            world_namespace=f"demo-{tag}",
        ):
            for run in DEMO_RUNS:
                results.append(await _run(client, settings, tag, run))
                if isinstance(result := results[-1], SupportResult) and result.reply_message_id:
                    received = sink.count(result.reply_message_id)
                    print(f"--- SMTP server received {received} message(s) with that Message-ID\n")
    print("Summary")
    for run, result in zip(DEMO_RUNS, results, strict=True):
        print(f"  {run.label:<24} {result.outcome:<10} {_who(result)}")
    print(f"\nBrowse them: `keel dev`, then {settings.ui_url}")
    return 0


@dataclass(frozen=True)
class DemoRun:
    label: str
    scenario: str
    sample: str
    slug: str


DEMO_RUNS = (
    DemoRun("contract, low risk", "contract-review", "contract-low-risk", "contract-low"),
    DemoRun("contract, medium risk", "contract-review", "contract-medium-risk", "contract-medium"),
    DemoRun("contract, high risk", "contract-review", "contract-high-risk", "contract-high"),
    DemoRun("incident, latency page", "incident", "incident-page", "incident"),
    DemoRun("support, refund request", "support-email", "support-refund", "support-refund"),
    DemoRun("support, injection", "support-email", "support-injection", "support-injection"),
)


def _who(result: Any) -> str:
    if isinstance(result, ContractReviewResult):
        return f"{result.contract_id}, by {result.decided_by}"
    if isinstance(result, SupportResult):
        sent = f", reply {result.reply_message_id}" if result.reply_message_id else ""
        return f"{result.intent or 'untriaged'}, {result.order_number or 'no order'}{sent}"
    return f"{result.incident_id}, {result.rounds} rounds, tasks {', '.join(result.tasks_run)}"


async def _run(client: Client, settings: KeelSettings, tag: str, run: DemoRun) -> Any:
    payload = load_sample(run.sample)
    workflow_id = f"demo-{tag}-{run.slug}"
    title = payload.get("title") or payload.get("summary") or payload.get("subject")
    print(f"=== {run.label}: {title}")
    handle: WorkflowHandle[Any, Any] = await commands.start(
        client, settings, run.scenario, payload, workflow_id=workflow_id, task_queue=DEMO_QUEUE
    )
    result_task = asyncio.create_task(handle.result())
    decided: set[str] = set()
    while not result_task.done():
        for gate in await handle.query("gates", result_type=list[GateView]):
            if gate.state.open and gate.gate not in decided:
                await _decide(client, settings, workflow_id, gate)
                decided.add(gate.gate)
        await asyncio.wait([result_task], timeout=0.2)
    result = result_task.result()
    reason = getattr(result, "reason", None) or getattr(result, "summary", "")
    print(f"--- outcome: {result.outcome}, {_who(result)} ({reason})")
    print(ledger_text(result.ledger, genesis=getattr(result, "ledger_genesis", None)))
    print(
        f"--- UI: {ui_link(settings.ui_url, client.namespace, workflow_id, handle.result_run_id)}\n"
    )
    return result


async def _decide(client: Client, settings: KeelSettings, workflow_id: str, gate: GateView) -> None:
    reviewer, decision, comment, modifications = REVIEWER_SCRIPT.get(
        gate.gate, (gate.reviewers[0] if gate.reviewers else "demo", "reject", "unscripted", None)
    )
    argv = ["keel", decision, workflow_id, gate.gate, "--reviewer", reviewer, "--comment", comment]
    if modifications:
        argv += ["--modify", json.dumps(modifications)]
    print(f"  gate {gate.gate!r} is waiting for {', '.join(gate.reviewers)}; as a reviewer would:")
    print(f"  $ {shlex.join(argv)}")
    args = argparse.Namespace(
        command=decision,
        workflow_id=workflow_id,
        gate=gate.gate,
        reviewer=reviewer,
        comment=comment,
        device="keel-demo",
        modify=json.dumps(modifications) if modifications else None,
    )
    code = await commands.cmd_review(client, settings, args)
    if code != 0:
        raise RuntimeError(f"the review of {gate.gate} was refused")
