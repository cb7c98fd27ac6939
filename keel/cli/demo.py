"""``keel demo``: every scenario end to end, with a scripted reviewer and printed ledgers.

Starts the embedded dev server if no Temporal server answers at ``TEMPORAL_ADDRESS``, runs a
worker on its own task queue (so its fault injection applies only to its executions), and
decides gates as its scripted reviewers through an inbox of its own: each signs in and
decides through the HTTP API, so every decision is signed and names an authenticated
reviewer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import AsyncExitStack
from typing import Any

from temporalio.client import Client, WorkflowHandle

from keel.activities.providers import ModelProvider
from keel.cli import commands
from keel.cli.render import ledger_text, ui_link
from keel.contracts.gates import GateView
from keel.contracts.integrity import verify_ledger
from keel.contracts.ledger import GENESIS_HASH, parse_ledger
from keel.inbox.demo_reviewer import ApiReviewer, demo_reviewers
from keel.offline import OfflineFault, OfflineProvider
from keel.settings import KeelSettings
from keel.workers.app import App, DemoReview, DemoRun
from keel.workers.devstack import dev_server
from keel.workers.keys import trusted_keyring
from keel.workers.runtime import connect, ensure_search_attributes, running_worker
from keel.workers.smtp_sink import SmtpSink

DEMO_QUEUE = "keel-demo"


async def run_demo(settings: KeelSettings, apps: list[App]) -> int:
    """Run every demo run of ``apps`` on a worker of its own; exit code 0 when all finish
    and every ledger verifies as stored, signatures included."""
    # Failed attempts that Temporal retries are shown in the ledger; keep tracebacks out.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    async with AsyncExitStack() as stack:
        try:
            client = await asyncio.wait_for(connect(settings, embedded=True), timeout=3)
            print(f"Using the Temporal server at {settings.temporal_address}")
        except (RuntimeError, TimeoutError, OSError):
            print("No Temporal server answered; starting the embedded dev server ...")
            env = await stack.enter_async_context(dev_server(settings))
            client = env.client
            print(f"Dev server up; UI at {settings.ui_url}, data in {settings.data_dir}")
        await ensure_search_attributes(client)
        # Reviewers sign in to an inbox of the demo's own and decide through its HTTP API.
        reviewers = await stack.enter_async_context(demo_reviewers(settings, client))
        print(f"Inbox: {reviewers.url} (scripted reviewers decide through its API)")
        tag = time.strftime("%Y%m%d-%H%M%S")
        # With the offline model, inject faults so the recovery paths show in the ledgers.
        runs = [(app, run, f"demo-{tag}-{_slug(run)}") for app in apps for run in app.demo]
        provider: ModelProvider | None = (
            OfflineProvider(demo_faults(runs)) if settings.resolved_model == "offline" else None
        )
        print(f"Model: {settings.resolved_model}")
        # Replies go over SMTP to a local server that keeps what it receives.
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        sink = stack.enter_context(SmtpSink(mailbox=settings.data_dir / "mailbox.jsonl"))
        settings = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": sink.port})
        print(f"SMTP: 127.0.0.1:{sink.port}, mailbox {sink.mailbox}\n")
        results = []
        broken = []
        # The fake deploy and incident systems get a namespace per demo run, so each run
        # starts from the scenario's initial state.
        async with running_worker(
            client,
            settings,
            apps=apps,
            task_queue=DEMO_QUEUE,
            provider=provider,
            scope=f"demo-{tag}",
        ):
            for app, run, workflow_id in runs:
                result, verified = await _run(client, settings, reviewers, app, run, workflow_id)
                results.append(result)
                if not verified:
                    broken.append(workflow_id)
                if message_id := results[-1].get("reply_message_id"):
                    received = sink.count(message_id)
                    print(f"--- SMTP server received {received} message(s) with that Message-ID\n")
    print("Summary")
    for (app, run, _), result in zip(runs, results, strict=True):
        print(f"  {run.label:<24} {result.get('outcome', '?'):<10} {_who(app, result)}")
    print(f"\nBrowse them: `keel dev`, then {settings.ui_url}")
    if broken:
        print(f"LEDGERS THAT DO NOT VERIFY: {', '.join(broken)}")
        return 1
    return 0


def _slug(run: DemoRun) -> str:
    return run.sample.removesuffix("-risk")


def demo_faults(runs: list[tuple[App, DemoRun, str]]) -> list[OfflineFault]:
    """Each demo run's faults, scoped to that run's workflow id: they show the recovery
    paths (a rate limit, a malformed answer, an invalid plan, a draft that breaks policy)."""
    return [
        fault.model_copy(update={"workflow_id_prefix": workflow_id})
        for _, run, workflow_id in runs
        for fault in run.faults
    ]


def _who(app: App, result: dict[str, Any]) -> str:
    return app.summarize(result) if app.summarize else ""


async def _run(
    client: Client,
    settings: KeelSettings,
    reviewers: ApiReviewer,
    app: App,
    run: DemoRun,
    workflow_id: str,
) -> tuple[dict[str, Any], bool]:
    payload = app.sample(run.sample)
    entry = app.entry(run.entry)
    if entry is None:
        raise RuntimeError(f"app {app.name}: demo run {run.label!r} names no entry {run.entry!r}")
    title = payload.get("title") or payload.get("summary") or payload.get("subject")
    print(f"=== {run.label}: {title}")
    handle: WorkflowHandle[Any, Any] = await commands.start(
        client, settings, entry, payload, workflow_id=workflow_id, task_queue=DEMO_QUEUE
    )
    result_task = asyncio.create_task(handle.result())
    decided: set[str] = set()
    while not result_task.done():
        for gate in await handle.query("gates", result_type=list[GateView]):
            if gate.state.open and gate.gate not in decided:
                await _decide(reviewers, workflow_id, gate, run.reviews.get(gate.gate))
                decided.add(gate.gate)
        await asyncio.wait([result_task], timeout=0.2)
    result: dict[str, Any] = result_task.result()
    reason = result.get("reason") or result.get("summary", "")
    print(f"--- outcome: {result.get('outcome')}, {_who(app, result)} ({reason})")
    if result.get("last_event_id"):
        print(f"--- progress stream: `keel watch {workflow_id}` shows it again, from the start")
    stored = result.get("ledger", [])
    events = parse_ledger(stored)
    # Verified as stored, signatures included, against this machine's trusted keys (the
    # demo's worker key is among them): what `keel verify` would say of this run.
    report = verify_ledger(
        stored,
        keyring=trusted_keyring(settings),
        closed=True,
        genesis=result.get("ledger_genesis") or GENESIS_HASH,
        first_seq=events[0].seq if events else 1,
    )
    print(ledger_text(events, report=report, status="COMPLETED"))
    print(
        f"--- UI: {ui_link(settings.ui_url, client.namespace, workflow_id, handle.result_run_id)}\n"
    )
    return result, report.ok


async def _decide(
    reviewers: ApiReviewer, workflow_id: str, gate: GateView, review: DemoReview | None
) -> None:
    if review is None:  # not scripted: a reviewer would send it back
        who = gate.reviewers[0] if gate.reviewers else "legal.priya"
        review = DemoReview(who, "reject", "unscripted")
    body: dict[str, Any] = {"action": "modify" if review.modifications else review.decision}
    body |= {"comment": review.comment}
    if review.modifications:
        body["modifications"] = review.modifications
    deciders = ", ".join([*gate.reviewers, *(f"role {r}" for r in gate.roles)])
    print(f"  gate {gate.gate!r} is waiting for {deciders}; {review.reviewer} signs in and sends:")
    print(f"  POST /api/gates/{workflow_id}/{gate.gate}/decisions {json.dumps(body)}")
    for who, receipt in await reviewers.decide(
        workflow_id,
        gate,
        reviewer=review.reviewer,
        decision=review.decision,
        comment=review.comment,
        modifications=review.modifications,
    ):
        print(
            f"  -> {who}: gate {receipt.state.value} "
            f"({receipt.approvals} of {receipt.approvals_needed} approvals)"
        )
