"""Throughput of the support scenario: Keel's ``SupportEmail`` against a bare Temporal workflow.

Usage: ``.venv/bin/python benchmarks/support_throughput.py [--batch N] [--blocks B] [--warmup W]``

On one local dev server, one worker (``build_worker``'s concurrency settings, Keel's sandbox
runner for Keel's workflow and Temporal's stock one for the bare workflow, pydantic data
converter, one task queue) and one local SMTP sink (``SmtpSink``), it
starts batches of N order-status emails at once (variants of ``support-injection.json`` with
the benign body "Where is my order AB-104871?" from tom.okafor@example.com, each with its own
Message-ID) and waits for every result, for two workflows:

* ``SupportEmail`` (Keel, offline model, no approval gate: the offline triage says
  ``order_status``, the draft has no refund): triage agent node, order lookup and refund policy
  as two local activities, draft agent node under the reply guard, then ``send_email`` through
  the side-effect record (SQLite, as ``running_worker`` wires it) to the sink;
* ``BenchBareSupport`` (bare Temporal, defined here): the same shape and the same number of
  activities, counted from a Keel run's history (two activities that return a constant triage
  and reply at once, two local activities that return a constant order and policy at once, and
  one activity that sends the reply over real SMTP to the same sink, without a record).

It reports workflows per second (N / wall time of the batch), p50/p99 latency (start to
result) within a batch, and CPU per workflow of the worker process and of the dev server, as
the median of blocks that alternate the variants (A B B A ...), plus the shape of each
variant's history. The report goes to stdout and to ``benchmarks/results/support_throughput.md``.
"""

# ruff: noqa: E402  (imports follow the sys.path set-up below)
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import gc
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any
from unittest import mock

HERE = Path(__file__).resolve().parent
# Runnable from a checkout without installing Keel; the worker imports this file as a module.
sys.path[:0] = [str(HERE.parent), str(HERE)]

from measure import (
    BareOnStockRunner,
    keel_client,
    percentile,
    process_cpu,
    run_and_exit,
    server_cpu,
    server_pid,
)
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from keel.activities.providers import close_provider
from keel.activities.tools.email import EmailSender, build_message, smtp_send
from keel.contracts.email import SendEmailInput, SendEmailOutput, message_id_for
from keel.contracts.names import SEARCH_ATTRIBUTES
from keel.scenarios.support_email import APP, SupportEmailWorkflow
from keel.scenarios.support_email.contracts import (
    SUPPORT_REPLY,
    SUPPORT_TRIAGE,
    Order,
    RefundPolicy,
    Reply,
    ReplyInput,
    SupportEmail,
    SupportResult,
    Triage,
    TriageInput,
)
from keel.scenarios.support_email.tools import SupportDesk
from keel.scenarios.support_email.workflow import SEND_RETRIES
from keel.settings import KeelSettings
from keel.workers import runtime
from keel.workers.apps import resolve_apps
from keel.workers.devstack import DEV_SERVER_STARTUP, server_limit_args
from keel.workers.runtime import agent_node_activities, build_worker
from keel.workers.smtp_sink import SmtpSink

BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "support_throughput.md"
MODULE = "support_throughput"
"""This file's module name: the worker registers the bare workflow from ``import
support_throughput`` (not ``__main__``, which the sandbox would re-run per workflow) and
passes it through the sandbox, as Keel's runner passes ``keel`` through."""

BODY = "Where is my order AB-104871?"
CUSTOMER = "tom.okafor@example.com"

BARE_TRIAGE = "bench.support.triage"
BARE_LOOKUP_ORDER = "bench.support.lookup_order"
BARE_REFUND_POLICY = "bench.support.refund_policy"
BARE_DRAFT = "bench.support.draft_reply"
BARE_SEND = "bench.support.send_email"
BARE_SIGN = "bench.support.sign"

# --- the bare Temporal variant -------------------------------------------------------------

TRIAGE = Triage(
    intent="order_status",
    risk="low",
    order_number="AB-104871",
    summary="constant triage of the bare benchmark activity",
    confidence=0.9,
)
ORDER = Order.model_validate(APP.sample("support-world")["orders"]["AB-104871"])
POLICY = RefundPolicy.model_validate(APP.sample("support-world")["refund_policy"])
REPLY = Reply(
    subject="Re: your order AB-104871",
    body=(
        "Hello,\n\nYour order AB-104871 is currently in_transit. You will get an email with "
        "tracking details as soon as it moves.\n\nKind regards,\nCustomer Support"
    ),
    order_number="AB-104871",
    confidence=0.85,
)


def _agent_retries(attempts: int) -> RetryPolicy:
    """The retry policy of Keel's agent-node activity."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
        maximum_attempts=attempts,
    )


@workflow.defn(name="BenchBareSupport")
class BenchBareSupport:
    """Triage, order and policy in parallel (local), draft, send: plain Temporal calls with
    the timeouts and retry policies of ``SupportEmail``, no ledger, guard or record."""

    @workflow.run
    async def run(self, email: SupportEmail) -> SupportResult:
        triage: Triage = await workflow.execute_activity(
            BARE_TRIAGE,
            TriageInput(subject=email.subject, body=email.body),
            result_type=Triage,
            start_to_close_timeout=SUPPORT_TRIAGE.time_budget,
            retry_policy=_agent_retries(SUPPORT_TRIAGE.provider_attempts),
        )
        order, policy = await asyncio.gather(
            workflow.execute_local_activity(
                BARE_LOOKUP_ORDER,
                triage.order_number,
                result_type=Order,
                start_to_close_timeout=timedelta(seconds=10),
            ),
            workflow.execute_local_activity(
                BARE_REFUND_POLICY,
                result_type=RefundPolicy,
                start_to_close_timeout=timedelta(seconds=10),
            ),
        )
        reply: Reply = await workflow.execute_activity(
            BARE_DRAFT,
            ReplyInput(
                customer_text=email.body,
                triage=triage.model_dump(mode="json"),
                order=order.model_dump(mode="json"),
                policy=policy.model_dump(mode="json"),
            ),
            result_type=Reply,
            start_to_close_timeout=SUPPORT_REPLY.time_budget,
            retry_policy=_agent_retries(SUPPORT_REPLY.provider_attempts),
        )
        sent: SendEmailOutput = await workflow.execute_activity(
            BARE_SEND,
            SendEmailInput(
                to=email.from_address,
                subject=reply.subject,
                body=reply.body,
                in_reply_to=email.message_id,
            ),
            result_type=SendEmailOutput,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=SEND_RETRIES,
        )
        # Keel signs the ledger's head in a local activity at the end: the same round trip.
        await workflow.execute_local_activity(
            BARE_SIGN, start_to_close_timeout=timedelta(seconds=10)
        )
        return SupportResult(
            message_id=email.message_id,
            outcome="replied",
            reason="reply sent",
            intent=triage.intent,
            order_number=triage.order_number,
            reply_message_id=sent.message_id,
            ledger=[],
            ledger_head="",
        )


@activity.defn(name=BARE_TRIAGE)
async def bare_triage(node_input: TriageInput) -> Triage:
    return TRIAGE


@activity.defn(name=BARE_LOOKUP_ORDER)
async def bare_lookup_order(order_number: str | None) -> Order:
    return ORDER


@activity.defn(name=BARE_REFUND_POLICY)
async def bare_refund_policy() -> RefundPolicy:
    return POLICY


@activity.defn(name=BARE_DRAFT)
async def bare_draft(node_input: ReplyInput) -> Reply:
    return REPLY


@activity.defn(name=BARE_SIGN)
async def bare_sign() -> str:
    return "a constant in place of the ledger head's signature"


class BareSender:
    """One real SMTP exchange per call, as ``EmailSender`` does it, without the record."""

    def __init__(self, host: str, port: int, sender: str) -> None:
        self.host, self.port, self.sender = host, port, sender

    @activity.defn(name=BARE_SEND)
    async def send(self, args: SendEmailInput) -> SendEmailOutput:
        message_id = message_id_for(f"{activity.info().workflow_id}/send-reply")
        message = build_message(
            args, sender=self.sender, message_id=message_id, date=datetime.now(UTC)
        )
        reply = await asyncio.to_thread(
            smtp_send, self.host, self.port, 20.0, self.sender, args.to, message
        )
        return SendEmailOutput(
            message_id=message_id, accepted_at=datetime.now(UTC), smtp_response=reply
        )


# --- measurement ---------------------------------------------------------------------------


@dataclass
class Variant:
    label: str
    run: Callable[..., Awaitable[SupportResult]]
    typed_input: bool
    """The bare workflow takes a ``SupportEmail``; Keel's takes the raw dict and validates it."""
    client: Client | None = None
    """The client that starts it (default the benchmark's): Keel's carries ``EngineMemo``."""
    throughput: list[float] = field(default_factory=list)
    """Workflows per second of each block."""
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """CPU ms per workflow of this process (worker, client, SMTP sink), each block."""
    server_cpu: list[float] = field(default_factory=list)
    """CPU ms per workflow of the dev server, each block (Linux only)."""
    history: Counter[str] = field(default_factory=Counter)
    history_bytes: int = 0
    sent: int = 0


def email(n: int) -> dict[str, Any]:
    """The ``support-injection`` sample with a benign order-status body and its own id."""
    raw = APP.sample("support-injection")
    raw["from_address"] = CUSTOMER
    raw["body"] = BODY
    raw["message_id"] = f"<bench-{n}-{uuid.uuid4().hex[:12]}@mail.example.com>"
    return raw


async def start(client: Client, queue: str, variant: Variant, n: int) -> WorkflowHandle[Any, Any]:
    raw = email(n)
    return await (variant.client or client).start_workflow(
        variant.run,
        SupportEmail.model_validate(raw) if variant.typed_input else raw,
        id=f"bench-support-{uuid.uuid4()}",
        task_queue=queue,
    )


async def one(client: Client, queue: str, variant: Variant, n: int) -> float:
    """Start one workflow and wait for its result; the latency in ms."""
    started = time.perf_counter()
    handle = await start(client, queue, variant, n)
    result = await handle.result()
    elapsed = (time.perf_counter() - started) * 1000
    if not isinstance(result, SupportResult) or result.outcome != "replied":
        raise RuntimeError(f"{variant.label} did not reply: {result!r}")
    return elapsed


async def batch(client: Client, queue: str, variant: Variant, n: int) -> tuple[float, list[float]]:
    """N workflows started at once; the wall time (ms) and each one's latency (ms)."""
    started = time.perf_counter()
    latencies = await asyncio.gather(*(one(client, queue, variant, i) for i in range(n)))
    variant.sent += n
    return (time.perf_counter() - started) * 1000, list(latencies)


async def history_shape(client: Client, queue: str, variant: Variant) -> None:
    """Run one workflow and count its history's events by type (and its size)."""
    handle = await start(client, queue, variant, 0)
    result = await handle.result()
    if result.outcome != "replied":
        raise RuntimeError(f"{variant.label} did not reply: {result!r}")
    variant.sent += 1
    history = await handle.fetch_history()
    variant.history = Counter(
        EventType.Name(event.event_type).removeprefix("EVENT_TYPE_") for event in history.events
    )
    variant.history["(events)"] = len(history.events)
    # Local activities, told apart from patch markers (which cost no round trip).
    variant.history["LOCAL_ACTIVITIES"] = sum(
        event.marker_recorded_event_attributes.marker_name == "core_local_activity"
        for event in history.events
    )
    variant.history_bytes = len(history.to_json().encode())


def abba(variants: tuple[Variant, Variant], blocks: int) -> list[Variant]:
    """A B B A A B ...: each variant goes first in half of the pairs."""
    order: list[Variant] = []
    for block in range(blocks):
        first, second = variants if block % 2 == 0 else variants[::-1]
        order += [first, second]
    return order


SHAPE = ("ACTIVITY_TASK_SCHEDULED", "LOCAL_ACTIVITIES", "WORKFLOW_TASK_STARTED")


async def measure(client: Client, queue: str, args: argparse.Namespace) -> tuple[Variant, Variant]:
    from support_throughput import BenchBareSupport

    bare = Variant("bare Temporal", BenchBareSupport.run, typed_input=True)
    keel = Variant(
        "Keel SupportEmail", SupportEmailWorkflow.run, typed_input=False, client=keel_client(client)
    )
    variants = (bare, keel)

    for variant in variants:
        await history_shape(client, queue, variant)
    if [keel.history[k] for k in SHAPE[:2]] != [bare.history[k] for k in SHAPE[:2]]:
        raise RuntimeError(
            f"the variants differ in activities or local activities: Keel {keel.history}, "
            f"bare {bare.history}"
        )

    for variant in abba(variants, 1):  # warm-up: caches, connections, the sandbox
        if args.warmup:
            await batch(client, queue, variant, args.warmup)

    server = server_pid()
    for variant in abba(variants, args.blocks):
        gc.collect()
        cpu, srv = process_cpu(), server_cpu(server)
        wall, latencies = await batch(client, queue, variant, args.batch)
        variant.cpu.append((process_cpu() - cpu) * 1000 / args.batch)
        variant.server_cpu.append((server_cpu(server) - srv) * 1000 / args.batch)
        variant.throughput.append(args.batch / (wall / 1000))
        variant.p50.append(percentile(latencies, 50))
        variant.p99.append(percentile(latencies, 99))
    return bare, keel


# --- report --------------------------------------------------------------------------------


def table(bare: Variant, keel: Variant, args: argparse.Namespace) -> str:
    med = statistics.median
    rows: list[tuple[str, str, float, float]] = [
        ("throughput", "workflows/s", med(bare.throughput), med(keel.throughput)),
        ("wall time / N", "ms/wf", 1000 / med(bare.throughput), 1000 / med(keel.throughput)),
        ("p50 latency", "ms", med(bare.p50), med(keel.p50)),
        ("p99 latency", "ms", med(bare.p99), med(keel.p99)),
        ("CPU of worker + client + sink process", "ms/wf", med(bare.cpu), med(keel.cpu)),
    ]
    if not math.isnan(med(bare.server_cpu)):
        rows.append(("CPU of dev server", "ms/wf", med(bare.server_cpu), med(keel.server_cpu)))
    lines = [
        f"| {args.batch} emails at once, median of {args.blocks} blocks | unit "
        "| bare Temporal | Keel SupportEmail | Keel / bare |",
        "|---|---|---:|---:|---:|",
    ]
    for name, unit, b, k in rows:
        lines.append(f"| {name} | {unit} | {b:.2f} | {k:.2f} | {k / b:.3f} |")
    return "\n".join(lines)


def history_table(bare: Variant, keel: Variant) -> str:
    names = [
        ("(events)", "history events"),
        ("ACTIVITY_TASK_SCHEDULED", "activities"),
        ("LOCAL_ACTIVITIES", "local activities"),
        ("MARKER_RECORDED", "markers (local activities, patches)"),
        ("WORKFLOW_TASK_STARTED", "workflow tasks"),
    ]
    lines = [
        "| history of one workflow | bare Temporal | Keel SupportEmail |",
        "|---|---:|---:|",
    ]
    for key, name in names:
        lines.append(f"| {name} | {bare.history[key]} | {keel.history[key]} |")
    lines.append(f"| history size (JSON bytes) | {bare.history_bytes} | {keel.history_bytes} |")
    return "\n".join(lines)


def blocks_detail(bare: Variant, keel: Variant) -> str:
    def fmt(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    return "\n".join(
        [
            "Per-block values (in run order per variant):",
            "",
            f"- workflows/s, bare: {fmt(bare.throughput)}",
            f"- workflows/s, Keel: {fmt(keel.throughput)}",
            f"- p99 ms, bare: {fmt(bare.p99)}",
            f"- p99 ms, Keel: {fmt(keel.p99)}",
            f"- worker CPU ms/wf, bare: {fmt(bare.cpu)}",
            f"- worker CPU ms/wf, Keel: {fmt(keel.cpu)}",
        ]
    )


NOTE = (
    "Both variants send one real email per workflow to the same in-process SMTP sink, so "
    "the I/O is the same; what Keel adds is its work in workflow code (input validation, "
    "PII scrubbing and injection checks, checkpoints, the reply guard, hash-chained ledger "
    "events, current details), the agent-node activity (contract check, prompt rendering, "
    "offline rules, validation) instead of a constant, a larger history, and the side-effect "
    "record around the send (a SQLite file here: lock, intent row, performed row; see "
    "`effect_record_cost.py` for its cost alone). The offline model answers at once, so "
    "this is the worst case for Keel: with a real model each agent node waits 0.5 to 30 s "
    "and the throughput of both is set by the model."
)


WORKER_SETTINGS = (
    "max_concurrent_activities",
    "max_concurrent_workflow_tasks",
    "max_concurrent_model_calls",
    "model_calls_per_second",
)


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def report(
    bare: Variant,
    keel: Variant,
    args: argparse.Namespace,
    seconds: float,
    mail: int,
    context: dict[str, str],
) -> str:
    machine = (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"temporalio {version('temporalio')}, pydantic {version('pydantic')}"
    )
    arguments = f"--batch {args.batch} --blocks {args.blocks} --warmup {args.warmup}"
    return "\n".join(
        [
            "# Support throughput: Keel SupportEmail vs a bare Temporal workflow",
            "",
            f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {machine}",
            f"- arguments: `{arguments}`",
            f"- worker: `build_worker`, {context['worker']}",
            f"- run time: {seconds:.0f} s (dev server start to shutdown); "
            f"{mail} emails received by the sink, one per workflow",
            f"- load average (1/5/15 min) at start: {context['load']}, at end: {load()}",
            "",
            table(bare, keel, args),
            "",
            history_table(bare, keel),
            "",
            NOTE,
            "",
            blocks_detail(bare, keel),
            "",
        ]
    )


KEEL_RUNNER = runtime.workflow_runner


def bench_runner() -> BareOnStockRunner:
    """Keel's sandbox runner, with this module passed through as well as ``keel``: neither
    variant's workflow module is re-imported for each run (a bare module re-imported per run
    would pay for this whole script, and Keel's never does). The bare workflow runs on
    Temporal's stock sandbox with the same pass-through modules (``BareOnStockRunner``)."""
    runner = KEEL_RUNNER()
    keel = dataclasses.replace(
        runner, restrictions=runner.restrictions.with_passthrough_modules(MODULE)
    )
    return BareOnStockRunner(keel, frozenset({"BenchBareSupport"}))


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    context = {"load": load()}
    data_dir = Path(tempfile.mkdtemp(prefix="keel-bench-support-"))
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
        # Keel's embedded dev server, as keel dev and keel demo run it (transfer queue uncapped).
        dev_server_extra_args=server_limit_args(),
    )
    try:
        with SmtpSink() as sink:
            settings = KeelSettings(
                _env_file=None,
                model="offline",
                data_dir=data_dir,
                smtp_port=sink.port,
            )
            # What running_worker wires for the support scenario (build_worker: Keel's
            # concurrency bounds, model queue and sandbox runner), plus the bare variant.
            from support_throughput import BareSender, BenchBareSupport

            context["worker"] = ", ".join(
                f"{name}={getattr(settings, name, '?')}" for name in WORKER_SETTINGS
            )

            nodes = agent_node_activities(settings)
            sender = EmailSender.open(
                settings, host=settings.smtp_host, port=sink.port, sender=settings.smtp_sender
            )
            bare_sender = BareSender(settings.smtp_host, sink.port, settings.smtp_sender)
            queue = f"bench-{uuid.uuid4()}"
            with mock.patch.object(runtime, "workflow_runner", bench_runner):
                worker = build_worker(
                    env.client,
                    settings,
                    apps=resolve_apps(),
                    task_queue=queue,
                    nodes=nodes,
                    activities=[
                        *SupportDesk().activities(),
                        *sender.activities(),
                        bare_triage,
                        bare_lookup_order,
                        bare_refund_policy,
                        bare_sign,
                        bare_draft,
                        bare_sender.send,
                    ],
                    workflows=[BenchBareSupport],
                )
            try:
                async with worker:
                    bare, keel = await measure(env.client, queue, args)
            finally:
                await sender.aclose()
                await nodes.aclose()
                await close_provider(nodes.provider)
            mail = sink.count()
            if mail != bare.sent + keel.sent:
                raise RuntimeError(f"the sink got {mail} emails for {bare.sent + keel.sent} runs")
    finally:
        await env.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)
    text = report(bare, keel, args, time.perf_counter() - started, mail, context)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"(written to {RESULTS})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batch", type=int, default=200, help="emails started at once per block")
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks per variant")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up batch size per variant")
    args = parser.parse_args(argv)
    if min(args.batch, args.blocks) < 1 or args.warmup < 0:
        parser.error("counts must be positive")
    return args


if __name__ == "__main__":
    run_and_exit(lambda: asyncio.run(main(parse_args())))
