"""What does one Keel agent node cost over one bare Temporal activity?

Usage: ``.venv/bin/python benchmarks/agent_node_overhead.py [--sequential N] [--concurrent N]``

On one local dev server (Keel's: ``server_limit_args``, as ``keel dev`` runs it;
``--default-server`` for the CLI's defaults) and one worker (Keel's ``build_worker``
settings, pydantic data converter, one task queue), it runs two workflows that both take
the low-risk sample's ``RiskClassifierInput`` and return a ``RiskAssessment``:

* ``BenchBareActivity``: executes one activity that returns a constant at once (no model);
* ``BenchKeelAgentNode``: runs one agent node (``self.agents.run`` with ``RISK_CLASSIFIER``,
  offline model): checkpoint, one activity, validation and ledger events in workflow code.

It measures end-to-end latency per workflow (start to result) sequentially and with N
workflows in flight at once, in blocks that alternate the variants (ABBA order, so slow
drift of a noisy machine does not favour either), and reports the median of the blocks,
plus the CPU each variant costs the worker process and the dev server. The table goes to
stdout and to ``benchmarks/results/agent_node_overhead.md``; see ``benchmarks/README.md``.
"""

# ruff: noqa: E402  (imports follow the sys.path set-up below)
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import math
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Runnable from a checkout without installing Keel; the sandbox imports bench_workflows too.
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_workflows import BARE_ACTIVITY, BenchBareActivity, BenchKeelAgentNode
from measure import (
    bare_on_stock,
    keel_client,
    percentile,
    process_cpu,
    run_and_exit,
    server_cpu,
    server_pid,
    system_load,
)
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from keel.offline import OfflineProvider
from keel.scenarios.contract_review import APP
from keel.scenarios.contract_review.contracts import (
    ContractReviewInput,
    RiskAssessment,
    RiskClassifierInput,
    RiskLevel,
)
from keel.settings import KeelSettings
from keel.workers.apps import resolve_apps
from keel.workers.devstack import DEV_SERVER_STARTUP, server_limit_args
from keel.workers.runtime import KeelWorker, build_worker

BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "agent_node_overhead.md"
TARGET_RATIO = 1.02
SERVER_NAMES = {False: "Keel's (`server_limit_args`)", True: "the CLI's defaults"}

BARE_RESULT = RiskAssessment(
    risk_level=RiskLevel.LOW,
    clause_refs=[],
    rationale="constant answer of the bare benchmark activity",
    confidence=1.0,
)


@activity.defn(name=BARE_ACTIVITY)
async def bare_activity(node_input: RiskClassifierInput) -> RiskAssessment:
    """Takes the agent node's input and returns at once: no prompt, no model."""
    return BARE_RESULT


@dataclass
class Variant:
    label: str
    run: Callable[..., Awaitable[RiskAssessment]]
    client: Client | None = None
    """The client that starts it (default the benchmark's): Keel's carries ``EngineMemo``."""
    seq_blocks: list[float] = field(default_factory=list)
    """Mean latency (ms) of each sequential block."""
    seq_latencies: list[float] = field(default_factory=list)
    conc_blocks: list[float] = field(default_factory=list)
    """Wall time / N (ms) of each concurrent block."""
    conc_p50: list[float] = field(default_factory=list)
    conc_p99: list[float] = field(default_factory=list)
    conc_cpu: list[float] = field(default_factory=list)
    """CPU time (ms) of this process (worker + client) per workflow, each concurrent block."""
    conc_server_cpu: list[float] = field(default_factory=list)
    """CPU time (ms) of the dev server per workflow, each concurrent block (Linux only)."""


def bench_worker(client: Client, settings: KeelSettings, queue: str) -> KeelWorker:
    """Keel's own worker (its sandbox runner, concurrency bounds and model queue) with both
    benchmark workflows and the bare activity on ``queue``; the bare workflow runs on
    Temporal's stock sandbox (``measure.BareOnStockRunner``)."""
    with bare_on_stock("BenchBareActivity"):
        return build_worker(
            client,
            settings,
            task_queue=queue,
            provider=OfflineProvider(),
            activities=[bare_activity],
            workflows=[BenchBareActivity, BenchKeelAgentNode],
        )


def node_input() -> RiskClassifierInput:
    contract = ContractReviewInput.model_validate(APP.sample("contract-low-risk"))
    return RiskClassifierInput(
        vendor=contract.vendor,
        title=contract.title,
        annual_value_usd=contract.annual_value_usd,
        term_months=contract.term_months,
        jurisdiction=contract.jurisdiction,
        clauses=contract.clauses,
    )


async def one(client: Client, queue: str, variant: Variant, payload: RiskClassifierInput) -> float:
    """Start one workflow and wait for its result; the latency in ms."""
    started = time.perf_counter()
    result = await (variant.client or client).execute_workflow(
        variant.run,  # type: ignore[arg-type]
        payload,
        id=f"bench-{uuid.uuid4()}",
        task_queue=queue,
    )
    elapsed = (time.perf_counter() - started) * 1000
    if not isinstance(result, RiskAssessment):
        raise TypeError(f"{variant.label} returned {type(result).__name__}")
    return elapsed


async def sequential(
    client: Client, queue: str, variant: Variant, payload: RiskClassifierInput, n: int
) -> list[float]:
    return [await one(client, queue, variant, payload) for _ in range(n)]


async def concurrent(
    client: Client, queue: str, variant: Variant, payload: RiskClassifierInput, n: int
) -> tuple[float, list[float]]:
    started = time.perf_counter()
    latencies = await asyncio.gather(*(one(client, queue, variant, payload) for _ in range(n)))
    return (time.perf_counter() - started) * 1000, list(latencies)


def abba(variants: tuple[Variant, Variant], blocks: int) -> list[Variant]:
    """A B B A A B ...: each variant goes first in half of the pairs."""
    order: list[Variant] = []
    for block in range(blocks):
        first, second = variants if block % 2 == 0 else variants[::-1]
        order += [first, second]
    return order


async def measure(client: Client, queue: str, args: argparse.Namespace) -> tuple[Variant, Variant]:
    payload = node_input()
    bare = Variant("bare Temporal", BenchBareActivity.run)
    keel = Variant("Keel agent node", BenchKeelAgentNode.run, keel_client(client))
    variants = (bare, keel)

    for variant in abba(variants, 1):  # warm-up: caches, sandbox imports, connections
        await sequential(client, queue, variant, payload, args.warmup)
        await concurrent(client, queue, variant, payload, min(args.concurrent, 50))

    per_block = max(1, args.sequential // args.blocks)
    for variant in abba(variants, args.blocks):
        gc.collect()
        latencies = await sequential(client, queue, variant, payload, per_block)
        variant.seq_blocks.append(statistics.fmean(latencies))
        variant.seq_latencies += latencies

    server = server_pid()
    for variant in abba(variants, args.blocks):
        gc.collect()
        cpu, srv = process_cpu(), server_cpu(server)
        wall, latencies = await concurrent(client, queue, variant, payload, args.concurrent)
        variant.conc_cpu.append((process_cpu() - cpu) * 1000 / args.concurrent)
        variant.conc_server_cpu.append((server_cpu(server) - srv) * 1000 / args.concurrent)
        variant.conc_blocks.append(wall / args.concurrent)
        variant.conc_p50.append(percentile(latencies, 50))
        variant.conc_p99.append(percentile(latencies, 99))
    return bare, keel


def table(bare: Variant, keel: Variant, args: argparse.Namespace) -> str:
    per_block = max(1, args.sequential // args.blocks)
    med = statistics.median
    rows: list[tuple[str, float, float]] = [
        (
            f"sequential, mean latency ({args.blocks} blocks of {per_block}, median block)",
            med(bare.seq_blocks),
            med(keel.seq_blocks),
        ),
        (
            f"sequential, p50 latency (all {per_block * args.blocks})",
            percentile(bare.seq_latencies, 50),
            percentile(keel.seq_latencies, 50),
        ),
        (
            f"sequential, p99 latency (all {per_block * args.blocks})",
            percentile(bare.seq_latencies, 99),
            percentile(keel.seq_latencies, 99),
        ),
        (
            f"{args.concurrent} concurrent, wall time / N (median of {args.blocks} blocks)",
            med(bare.conc_blocks),
            med(keel.conc_blocks),
        ),
        (
            f"{args.concurrent} concurrent, p50 latency (median of blocks)",
            med(bare.conc_p50),
            med(keel.conc_p50),
        ),
        (
            f"{args.concurrent} concurrent, p99 latency (median of blocks)",
            med(bare.conc_p99),
            med(keel.conc_p99),
        ),
        (
            f"{args.concurrent} concurrent, CPU of worker + client process (median of blocks)",
            med(bare.conc_cpu),
            med(keel.conc_cpu),
        ),
    ]
    if not math.isnan(med(bare.conc_server_cpu)):
        rows.append(
            (
                f"{args.concurrent} concurrent, CPU of dev server (median of blocks)",
                med(bare.conc_server_cpu),
                med(keel.conc_server_cpu),
            )
        )
    lines = [
        "| scenario | bare Temporal (ms/wf) | Keel agent node (ms/wf) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name, b, k in rows:
        lines.append(f"| {name} | {b:.2f} | {k:.2f} | {k / b:.3f} |")
    return "\n".join(lines)


def blocks_detail(bare: Variant, keel: Variant) -> str:
    def fmt(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    return "\n".join(
        [
            "Per-block values (ms/wf, in run order per variant):",
            "",
            f"- sequential mean, bare: {fmt(bare.seq_blocks)}",
            f"- sequential mean, Keel: {fmt(keel.seq_blocks)}",
            f"- concurrent wall/N, bare: {fmt(bare.conc_blocks)}",
            f"- concurrent wall/N, Keel: {fmt(keel.conc_blocks)}",
        ]
    )


NOTE = (
    "bare Temporal = `BenchBareActivity`: one `execute_activity` of an activity that takes the "
    "node input and returns a constant `RiskAssessment` (no model). Keel agent node = "
    "`BenchKeelAgentNode`: one `self.agents.run` with `RISK_CLASSIFIER` and the low-risk "
    "sample on the offline (instant, rule-based) model: checkpoint, one activity (prompt "
    "render + offline rules), validation in workflow code, hash-chained ledger events. "
    "Same dev server, worker settings (`build_worker`), pydantic converter and task queue; "
    f"ratio = Keel / bare, target <= {TARGET_RATIO}."
)


def report(bare: Variant, keel: Variant, args: argparse.Namespace, seconds: float) -> str:
    machine = (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"temporalio {version('temporalio')}, pydantic {version('pydantic')}"
    )
    arguments = (
        f"--sequential {args.sequential} --concurrent {args.concurrent} "
        f"--blocks {args.blocks} --warmup {args.warmup}"
    )
    return "\n".join(
        [
            "# Agent-node overhead: Keel agent node vs bare Temporal activity",
            "",
            f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {machine}",
            f"- arguments: `{arguments}`",
            f"- run time: {seconds:.0f} s (dev server start to shutdown)",
            f"- dev server: {SERVER_NAMES[args.default_server]}",
            f"- load average (1/5/15 min) at the end: {system_load()}",
            "",
            table(bare, keel, args),
            "",
            NOTE,
            "",
            blocks_detail(bare, keel),
            "",
        ]
    )


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        dev_server_extra_args=[] if args.default_server else server_limit_args(),
    )
    try:
        queue = f"bench-{uuid.uuid4()}"
        settings = KeelSettings(_env_file=None, apps=resolve_apps(), model="offline")  # type: ignore[call-arg]
        worker = bench_worker(env.client, settings, queue)
        async with worker:
            bare, keel = await measure(env.client, queue, args)
    finally:
        await env.shutdown()
    text = report(bare, keel, args, time.perf_counter() - started)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"(written to {RESULTS})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sequential", type=int, default=100, help="sequential runs per variant")
    parser.add_argument("--concurrent", type=int, default=200, help="workflows in flight at once")
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks per scenario")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up runs per variant")
    parser.add_argument(
        "--default-server",
        action="store_true",
        help="run the dev server with the CLI's defaults (transfer queue read at 20/s)",
    )
    args = parser.parse_args(argv)
    if min(args.sequential, args.concurrent, args.blocks) < 1 or args.warmup < 0:
        parser.error("counts must be positive")
    return args


if __name__ == "__main__":
    run_and_exit(lambda: asyncio.run(main(parse_args())))
