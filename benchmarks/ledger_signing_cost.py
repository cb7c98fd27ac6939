"""What does a signed chain head cost? One ``keel.sign`` local activity per signature.

Usage: ``.venv/bin/python benchmarks/ledger_signing_cost.py [--runs N] [--blocks B]``

On one local dev server and one worker (``build_worker``), it runs the same 10-event ledger
completed without a signature (``BenchLedgerUnsigned``) and with one (``BenchLedgerSigned``),
sequentially, in alternating blocks (A B B A ...), and reports the median latency from start
to result and the worker process's CPU per workflow. A contract review signs three heads
(gate opened, gate decided, completion); a run with no gate signs one. The table goes to
stdout and to ``benchmarks/results/ledger_signing_cost.md``.
"""

# ruff: noqa: E402  (imports follow the sys.path set-up below)
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from ledger_bench_workflows import BenchLedgerSigned, BenchLedgerUnsigned
from measure import process_cpu, run_and_exit
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from keel.settings import KeelSettings
from keel.workers.devstack import DEV_SERVER_STARTUP
from keel.workers.runtime import build_worker

BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "ledger_signing_cost.md"
EVENTS = 10


async def block(client: Client, queue: str, workflow: Any, runs: int) -> tuple[list[float], float]:
    """``runs`` workflows one after another: their latencies (ms), CPU per workflow (ms)."""
    latencies, cpu = [], process_cpu()
    for _ in range(runs):
        started = time.perf_counter()
        await client.execute_workflow(
            workflow.run,
            EVENTS,
            id=f"bench-{uuid.uuid4()}",
            task_queue=queue,
        )
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, (process_cpu() - cpu) * 1000 / runs


async def main(runs: int, blocks: int) -> str:
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    queue = f"bench-{uuid.uuid4()}"
    with tempfile.TemporaryDirectory() as data:
        settings = KeelSettings(model="offline", codec="off", data_dir=Path(data))
        worker = build_worker(
            env.client,
            settings,
            task_queue=queue,
            workflows=[BenchLedgerUnsigned, BenchLedgerSigned],
        )
        medians: dict[str, list[float]] = {"unsigned": [], "signed": []}
        cpus: dict[str, list[float]] = {"unsigned": [], "signed": []}
        async with worker:
            variants = {"unsigned": BenchLedgerUnsigned, "signed": BenchLedgerSigned}
            for workflow in variants.values():  # warm-up
                await block(env.client, queue, workflow, 5)
            for n in range(blocks):
                order = ["unsigned", "signed"] if n % 2 == 0 else ["signed", "unsigned"]
                for name in order:
                    latencies, cpu = await block(env.client, queue, variants[name], runs)
                    medians[name].append(statistics.median(latencies))
                    cpus[name].append(cpu)
    await env.shutdown()
    unsigned, signed = (statistics.median(medians[k]) for k in ("unsigned", "signed"))
    cpu_u, cpu_s = (statistics.median(cpus[k]) for k in ("unsigned", "signed"))
    return "\n".join(
        [
            "# Ledger signing cost",
            "",
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
            f"Python {platform.python_version()}; {blocks} blocks of {runs} sequential "
            f"workflows per variant, {EVENTS}-event ledgers; medians over blocks.",
            "",
            "| variant | latency p50 (ms) | worker CPU / workflow (ms) |",
            "|---|---|---|",
            f"| no signature | {unsigned:.1f} | {cpu_u:.2f} |",
            f"| one signed head (completion) | {signed:.1f} | {cpu_s:.2f} |",
            f"| **one signature** | **{signed - unsigned:+.1f}** | **{cpu_s - cpu_u:+.2f}** |",
            "",
        ]
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--blocks", type=int, default=4)
    args = parser.parse_args()
    table = asyncio.run(main(args.runs, args.blocks))
    RESULTS.write_text(table)
    print(table)


if __name__ == "__main__":
    run_and_exit(cli)
