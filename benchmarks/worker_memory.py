"""What does an idle Keel worker hold in memory, next to a bare Temporal worker?

Usage: ``.venv/bin/python benchmarks/worker_memory.py [--repeats N]``

It starts one dev server, then, in turn, ``keel worker`` (every installed app, or
``KEEL_APPS``; offline model, SQLite, history encryption off) and a bare worker (a Python
process with ``temporalio``'s ``Worker`` for one workflow and one activity on the pydantic
converter), each as its own process. Once the worker polls its task queue and has sat idle
for a moment, it reads the process's resident set size (``VmRSS``) and stops it. The
variants alternate; the table (median of the repeats) goes to stdout and
``benchmarks/results/worker_memory.md``. Heavy imports are
found with ``python -X importtime -c "import keel.cli.main"``.
"""

# ruff: noqa: E402  (imports follow the sys.path set-up below)
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import signal
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from measure import run_and_exit, system_load
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from keel.workers.devstack import DEV_SERVER_STARTUP, server_limit_args

BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "worker_memory.md"
IDLE_SECONDS = 3.0

BARE_WORKER = """
import asyncio, sys
from datetime import timedelta
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

@activity.defn
async def act(text: str) -> str:
    return text

@workflow.defn
class Bare:
    @workflow.run
    async def run(self, text: str) -> str:
        timeout = timedelta(seconds=5)
        return await workflow.execute_activity(act, text, start_to_close_timeout=timeout)

async def main() -> None:
    client = await Client.connect(sys.argv[1], data_converter=pydantic_data_converter)
    await Worker(client, task_queue=sys.argv[2], workflows=[Bare], activities=[act]).run()

def run() -> None:
    asyncio.run(main())
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def polled(client: Client, queue: str) -> bool:
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return bool(response.pollers)


async def idle_rss(client: Client, command: list[str], queue: str, env: dict[str, str]) -> float:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        for _ in range(600):
            if process.returncode is not None:
                raise RuntimeError(f"{command[:3]} exited with {process.returncode}")
            if await polled(client, queue):
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"{command[:3]} never polled {queue}")
        await asyncio.sleep(IDLE_SECONDS)
        return rss_mib(process.pid)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def main(args: argparse.Namespace) -> None:
    server = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        dev_server_log_level="error",
        dev_server_extra_args=server_limit_args(),
    )
    address = server.client.service_client.config.target_host
    keel: list[float] = []
    bare: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            for repeat in range(args.repeats):
                for variant in ("keel", "bare") if repeat % 2 == 0 else ("bare", "keel"):
                    queue = f"memory-{uuid.uuid4()}"
                    # The worker's own configuration, not the caller's (KEEL_APPS may choose).
                    env = {
                        k: v
                        for k, v in os.environ.items()
                        if not k.startswith("KEEL_") or k == "KEEL_APPS"
                    }
                    if variant == "keel":
                        env |= {
                            "TEMPORAL_ADDRESS": address,
                            "KEEL_TASK_QUEUE": queue,
                            "KEEL_MODEL": "offline",
                            "KEEL_DATA_DIR": data_dir,
                            "KEEL_CODEC": "off",
                        }
                        command = [str(BIN / "keel"), "worker"]
                        keel.append(await idle_rss(server.client, command, queue, env))
                    else:
                        module = Path(data_dir) / "bare_worker.py"
                        module.write_text(BARE_WORKER)
                        # A module of its own: the sandbox re-imports the workflow's module.
                        launch = f"import sys; sys.path.insert(0, {data_dir!r}); "
                        launch += "import bare_worker; bare_worker.run()"
                        command = [sys.executable, "-c", launch, address, queue]
                        bare.append(await idle_rss(server.client, command, queue, env))
    finally:
        await server.shutdown()
    k, b = statistics.median(keel), statistics.median(bare)
    text = "\n".join(
        [
            "# Worker memory: an idle `keel worker` vs a bare Temporal worker",
            "",
            f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {os.cpu_count()} cores, {platform.machine()}, Python "
            f"{platform.python_version()}; load average {system_load()}",
            f"- {args.repeats} repeats, alternating; RSS read after {IDLE_SECONDS:.0f} s idle",
            "",
            "| worker | RSS (MiB, median) | x bare |",
            "|---|---:|---:|",
            f"| bare Temporal worker | {b:.1f} | 1.00 |",
            f"| `keel worker` (offline model, SQLite) | {k:.1f} | {k / b:.2f} |",
            "",
            f"Values: keel {', '.join(f'{v:.1f}' for v in keel)}; "
            f"bare {', '.join(f'{v:.1f}' for v in bare)}.",
            "",
        ]
    )
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"(written to {RESULTS})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each worker")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be positive")
    return args


if __name__ == "__main__":
    run_and_exit(lambda: asyncio.run(main(parse_args())))
