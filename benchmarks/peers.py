"""One agent call per workflow on Temporal: bare activity, Keel, Pydantic AI, OpenAI Agents.

Usage: ``.venv/bin/python benchmarks/peers.py [--sequential N] [--concurrent N] [--blocks B]``

On one dev server (Keel's: ``server_limit_args``, as ``keel dev`` runs it) in one process,
each variant runs one agent call per workflow, on the low-risk sample's input, returning a
``RiskAssessment``, each on its own task queue with its own worker set up as its
documentation says:

* **bare activity**: ``BenchBareActivity``, one ``execute_activity`` of an activity that
  returns a constant (no model), on Keel's worker (``build_worker``) but in Temporal's stock
  sandbox (``measure.BareOnStockRunner``);
* **Keel**: ``BenchKeelAgentNode``, one agent node (``RISK_CLASSIFIER``) on the offline model,
  same worker, started by a client with Keel's ``EngineMemo`` interceptor (as
  ``keel.workers.runtime.connect`` makes it);
* **Pydantic AI**: ``BenchPydanticAI``, an ``Agent`` with the ``TemporalDurability``
  capability (``pydantic_ai.durable_exec.temporal``), client plugin ``PydanticAIPlugin``,
  worker plugin ``AgentPlugin``, model ``FunctionModel`` answering through the output tool;
* **OpenAI Agents**: ``BenchOpenAIAgents``, ``Runner.run`` under ``OpenAIAgentsPlugin``
  (``temporalio.openai_agents``) with a ``TestModelProvider`` whose ``TestModel`` answers the
  JSON output message.

Latency sequentially (mean of each block, median of blocks) and with N workflows in flight
(wall time / N), the CPU per workflow of this process (the workers and clients) and of the
dev server during the concurrent blocks, and the size of one workflow's history (events,
bytes). Blocks rotate the order of the variants, so drift on a shared machine favours none.
Every sandbox passes the benchmarks' workflow modules through (``measure.BENCH_MODULES``):
no variant re-imports its module for each run.
The table goes to stdout and ``benchmarks/results/peers.md``. The process ends with
``os._exit`` once the workers and the server are shut down and the table is written: an SDK
teardown crash at interpreter exit (seen in 2 of 14 runs) cannot fail the run.
"""

# ruff: noqa: E402  (imports follow the sys.path set-up below)
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from agent_node_overhead import bench_worker, node_input
from bench_workflows import BenchBareActivity, BenchKeelAgentNode
from measure import (
    bench_sandbox,
    keel_client,
    process_cpu,
    run_and_exit,
    server_cpu,
    server_pid,
    system_load,
)
from peer_agents import (
    OPENAI_AGENTS_AVAILABLE,
    PYDANTIC_AI_AGENT,
    openai_agents_model,
)
from peer_workflows import BenchOpenAIAgents, BenchPydanticAI
from pydantic_ai.durable_exec.temporal import AgentPlugin, PydanticAIPlugin
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from keel.scenarios.contract_review.contracts import RiskAssessment, RiskClassifierInput
from keel.settings import KeelSettings
from keel.workers.devstack import DEV_SERVER_STARTUP, server_limit_args

BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "peers.md"


@dataclass
class Variant:
    label: str
    run: Callable[..., Awaitable[RiskAssessment]]
    client: Client | None = None
    queue: str = field(default_factory=lambda: f"peers-{uuid.uuid4()}")
    seq: list[float] = field(default_factory=list)
    conc: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    events: int = 0
    history_bytes: int = 0


async def one(variant: Variant, payload: RiskClassifierInput) -> str:
    assert variant.client is not None
    workflow_id = f"peers-{uuid.uuid4()}"
    result = await variant.client.execute_workflow(
        variant.run,  # type: ignore[arg-type]
        payload,
        id=workflow_id,
        task_queue=variant.queue,
    )
    if not isinstance(result, RiskAssessment):
        raise TypeError(f"{variant.label} returned {type(result).__name__}")
    return workflow_id


def rotated(variants: list[Variant], block: int) -> list[Variant]:
    """The variants, starting at a different one in each block (and reversed every other)."""
    start = block % len(variants)
    order = variants[start:] + variants[:start]
    return order if block % 2 == 0 else order[::-1]


async def measure(variants: list[Variant], args: argparse.Namespace) -> None:
    payload = node_input()
    for variant in variants:  # warm-up: sandbox imports, caches, connections
        for _ in range(args.warmup):
            await one(variant, payload)
        await asyncio.gather(*(one(variant, payload) for _ in range(min(args.concurrent, 50))))
    per_block = max(1, args.sequential // args.blocks)
    for block in range(args.blocks):
        for variant in rotated(variants, block):
            gc.collect()
            started = time.perf_counter()
            for _ in range(per_block):
                await one(variant, payload)
            variant.seq.append((time.perf_counter() - started) * 1000 / per_block)
    server = server_pid()
    for block in range(args.blocks):
        for variant in rotated(variants, block):
            gc.collect()
            cpu, srv, started = process_cpu(), server_cpu(server), time.perf_counter()
            await asyncio.gather(*(one(variant, payload) for _ in range(args.concurrent)))
            variant.conc.append((time.perf_counter() - started) * 1000 / args.concurrent)
            variant.cpu.append((process_cpu() - cpu) * 1000 / args.concurrent)
            variant.server.append((server_cpu(server) - srv) * 1000 / args.concurrent)
    for variant in variants:
        assert variant.client is not None
        history = await variant.client.get_workflow_handle(
            await one(variant, payload)
        ).fetch_history()
        variant.events = len(history.events)
        variant.history_bytes = sum(event.ByteSize() for event in history.events)


def table(variants: list[Variant]) -> str:
    med = statistics.median
    bare = variants[0]
    base = {
        "seq": med(bare.seq),
        "conc": med(bare.conc),
        "cpu": med(bare.cpu),
        "server": med(bare.server),
    }
    lines = [
        "| one agent call per workflow | sequential (ms) | x bare | concurrent, wall/N (ms) "
        "| x bare | worker CPU (ms/wf) | x bare | server CPU (ms/wf) | x bare "
        "| history events | history bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        cells = []
        for key, values in (("seq", v.seq), ("conc", v.conc), ("cpu", v.cpu), ("server", v.server)):
            value = med(values)
            cells += [f"{value:.1f}", f"{value / base[key]:.2f}"]
        lines.append(f"| {v.label} | {' | '.join(cells)} | {v.events} | {v.history_bytes} |")
    return "\n".join(lines)


def blocks_detail(variants: list[Variant]) -> str:
    def fmt(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    lines = ["Per-block values (ms/wf, run order):", ""]
    for v in variants:
        lines.append(
            f"- {v.label}: sequential {fmt(v.seq)}; concurrent {fmt(v.conc)}; "
            f"worker CPU {fmt(v.cpu)}"
        )
    return "\n".join(lines)


def versions() -> str:
    found = []
    for package in ("temporalio", "pydantic-ai-slim", "openai-agents", "temporalio-openai-agents"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found)


SKIPPED_OPENAI = (
    "OpenAI Agents was not measured: `temporalio.openai_agents` is not installed (temporalio "
    "1.35 moved the integration to the `temporalio-openai-agents` package, which needs "
    "`openai-agents` 0.22)."
)


def report(variants: list[Variant], args: argparse.Namespace, load: str, seconds: float) -> str:
    return "\n".join(
        [
            "# Peers: one agent call per workflow on Temporal",
            "",
            f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {os.cpu_count()} cores, {platform.machine()}, Python "
            f"{platform.python_version()}; {versions()}",
            f"- load average (1/5/15 min): {load}",
            f"- arguments: `--sequential {args.sequential} --concurrent {args.concurrent} "
            f"--blocks {args.blocks} --warmup {args.warmup}`; run time {seconds:.0f} s",
            "- one dev server (Keel's `server_limit_args`), every worker and client in this "
            "process; CPU figures are of the concurrent blocks",
            "",
            table(variants),
            "",
            *([] if OPENAI_AGENTS_AVAILABLE else [SKIPPED_OPENAI, ""]),
            blocks_detail(variants),
            "",
        ]
    )


async def start_variants(env: WorkflowEnvironment, stack: AsyncExitStack) -> list[Variant]:
    target = env.client.service_client.config.target_host
    bare = Variant("bare activity", BenchBareActivity.run, env.client)
    # Keel's client (``keel.workers.runtime.connect``) carries the ``EngineMemo`` interceptor.
    keel = Variant("Keel", BenchKeelAgentNode.run, keel_client(env.client), queue=bare.queue)
    settings = KeelSettings(_env_file=None, model="offline")  # type: ignore[call-arg]
    keel_worker = bench_worker(env.client, settings, bare.queue)
    await stack.enter_async_context(keel_worker)
    variants = [bare, keel]

    pydantic_ai = Variant("Pydantic AI", BenchPydanticAI.run)
    pydantic_ai.client = await Client.connect(target, plugins=[PydanticAIPlugin()])
    await stack.enter_async_context(
        Worker(
            pydantic_ai.client,
            task_queue=pydantic_ai.queue,
            workflows=[BenchPydanticAI],
            workflow_runner=bench_sandbox(),
            plugins=[AgentPlugin(PYDANTIC_AI_AGENT)],
        )
    )
    variants.append(pydantic_ai)

    if OPENAI_AGENTS_AVAILABLE:
        from temporalio.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin
        from temporalio.openai_agents.testing import TestModelProvider

        plugin = OpenAIAgentsPlugin(
            model_params=ModelActivityParameters(start_to_close_timeout=timedelta(seconds=60)),
            model_provider=TestModelProvider(openai_agents_model()),
        )
        openai_agents = Variant("OpenAI Agents", BenchOpenAIAgents.run)
        openai_agents.client = await Client.connect(target, plugins=[plugin])
        await stack.enter_async_context(
            Worker(
                openai_agents.client,
                task_queue=openai_agents.queue,
                workflows=[BenchOpenAIAgents],
                workflow_runner=bench_sandbox(),
            )
        )
        variants.append(openai_agents)
    return variants


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    load = f"{system_load()} at start"
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        dev_server_extra_args=server_limit_args(),
    )
    try:
        async with AsyncExitStack() as stack:
            variants = await start_variants(env, stack)
            await measure(variants, args)
        load += f", {system_load()} at end"
    finally:
        await env.shutdown()
    text = report(variants, args, load, time.perf_counter() - started)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"(written to {RESULTS})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sequential", type=int, default=60, help="sequential runs per variant")
    parser.add_argument("--concurrent", type=int, default=100, help="workflows in flight at once")
    parser.add_argument("--blocks", type=int, default=8, help="rotating blocks per scenario")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up runs per variant")
    args = parser.parse_args(argv)
    if min(args.sequential, args.concurrent, args.blocks) < 1 or args.warmup < 0:
        parser.error("counts must be positive")
    return args


if __name__ == "__main__":
    run_and_exit(lambda: asyncio.run(main(parse_args())))
