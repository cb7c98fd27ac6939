"""What does history encryption cost? AES-256-GCM on every payload (``keel.workers.codec``).

Usage: ``.venv/bin/python benchmarks/codec_cost.py [--runs N] [--blocks B]``

Two parts. The codec alone: sealing and opening one payload of 1 KiB, 16 KiB and 256 KiB
(time per seal+open, bytes added). End to end: on one local dev server, the low-risk
contract review (one agent node on the offline model, auto-approved by rule) run sequentially
by a worker and client in plaintext (``KEEL_CODEC=off``) and by a worker and client that
encrypt, in alternating blocks (A B B A ...); the median latency from start to result and
this process's CPU per workflow (worker and client share it). The table goes to stdout and to
``benchmarks/results/codec_cost.md``.
"""

# ruff: noqa: E402  (imports follow the sys.path set-up below)
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from measure import process_cpu, run_and_exit
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from keel.offline import OfflineProvider
from keel.scenarios.contract_review import APP, ContractReviewWorkflow
from keel.settings import KeelSettings
from keel.workers.codec import CodecKeyring, EncryptionCodec, new_key_entry
from keel.workers.devstack import DEV_SERVER_STARTUP
from keel.workers.runtime import build_worker, connect, ensure_search_attributes

BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "codec_cost.md"
SAMPLE = HERE.parent / "keel/scenarios/contract_review/samples/contract-low-risk.json"


def codec_alone(codec: EncryptionCodec) -> list[str]:
    rows = []
    for size in (1024, 16 * 1024, 256 * 1024):
        payload = Payload(metadata={"encoding": b"json/plain"}, data=b"x" * size)
        repeats = max(50, 4_000_000 // size)
        started = time.perf_counter()
        for _ in range(repeats):
            sealed = codec.seal(payload)
            codec.open(sealed)
        micros = (time.perf_counter() - started) * 1e6 / repeats
        extra = sealed.ByteSize() - payload.ByteSize()
        rows.append(f"| {size // 1024} KiB | {micros:.1f} | +{extra} |")
    return rows


async def block(client: Client, queue: str, runs: int) -> tuple[list[float], float]:
    """``runs`` reviews one after another: their latencies (ms), CPU per workflow (ms)."""
    contract = json.loads(SAMPLE.read_text())
    latencies, cpu = [], process_cpu()
    for _ in range(runs):
        started = time.perf_counter()
        await client.execute_workflow(
            ContractReviewWorkflow.run, contract, id=f"bench-{uuid.uuid4()}", task_queue=queue
        )
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, (process_cpu() - cpu) * 1000 / runs


async def main(runs: int, blocks: int) -> str:
    keys = new_key_entry("bench-1")
    micro = codec_alone(EncryptionCodec(CodecKeyring.parse(keys)))
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        dev_server_log_level="error",
    )
    address = env.client.service_client.config.target_host
    medians: dict[str, list[float]] = {"plaintext": [], "encrypted": []}
    cpus: dict[str, list[float]] = {"plaintext": [], "encrypted": []}
    with tempfile.TemporaryDirectory() as data:
        variants = {
            "plaintext": KeelSettings(model="offline", data_dir=Path(data), codec="off"),
            "encrypted": KeelSettings(
                model="offline", data_dir=Path(data), codec="on", codec_keys=SecretStr(keys)
            ),
        }
        clients = {name: await connect(s, address=address) for name, s in variants.items()}
        await ensure_search_attributes(clients["plaintext"])
        queues = {name: f"bench-{name}-{uuid.uuid4()}" for name in variants}
        workers = [
            build_worker(
                clients[name],
                variants[name],
                apps=[APP],
                task_queue=queues[name],
                provider=OfflineProvider(),
            )
            for name in variants
        ]
        async with workers[0], workers[1]:
            for name in variants:  # warm-up
                await block(clients[name], queues[name], 5)
            for n in range(blocks):
                order = ["plaintext", "encrypted"] if n % 2 == 0 else ["encrypted", "plaintext"]
                for name in order:
                    latencies, cpu = await block(clients[name], queues[name], runs)
                    medians[name].append(statistics.median(latencies))
                    cpus[name].append(cpu)
    await env.shutdown()
    plain, sealed = (statistics.median(medians[k]) for k in ("plaintext", "encrypted"))
    cpu_p, cpu_e = (statistics.median(cpus[k]) for k in ("plaintext", "encrypted"))
    return "\n".join(
        [
            "# History encryption cost",
            "",
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
            f"Python {platform.python_version()}.",
            "",
            "The codec alone (one payload):",
            "",
            "| payload | seal + open (µs) | bytes added |",
            "|---|---|---|",
            *micro,
            "",
            f"End to end: the low-risk contract review, {blocks} blocks of {runs} sequential "
            "workflows per variant; medians over blocks.",
            "",
            "| variant | latency p50 (ms) | process CPU / workflow (ms) |",
            "|---|---|---|",
            f"| plaintext (`KEEL_CODEC=off`) | {plain:.1f} | {cpu_p:.2f} |",
            f"| encrypted | {sealed:.1f} | {cpu_e:.2f} |",
            f"| **encryption** | **{sealed - plain:+.1f}** | **{cpu_e - cpu_p:+.2f}** |",
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
