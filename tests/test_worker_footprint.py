"""A ``keel worker`` loads what serving workflows needs and nothing of the CLI's other
planes: no web stack (the inbox, the demo), no Redis client until progress is appended, no
dossier templates. Each was once imported by every worker and cost it resident memory
(``benchmarks/worker_memory.py`` measures it)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from keel.cli.archive import has_workers
from tests.conftest import REVIEW_ENV

NOT_FOR_A_WORKER = (
    "fastapi",
    "starlette",
    "uvicorn",
    "jinja2",
    "argon2",
    "jwt",
    "aiosmtpd",
    "rich",
    "redis",
    "playwright",
    "psycopg",
)

WORKER = """
import json, os, signal, sys
def dump(*_):
    loaded = sorted({name.split(".")[0] for name in sys.modules})
    sys.stdout.write(json.dumps(loaded) + "\\n")
    sys.stdout.flush()
    os._exit(0)
signal.signal(signal.SIGUSR1, dump)
from keel.cli.main import run
sys.exit(run(["worker"]))
"""


async def test_an_idle_keel_worker_loads_no_other_plane(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    queue = f"footprint-{uuid.uuid4()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env |= REVIEW_ENV | {
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "KEEL_TASK_QUEUE": queue,
        "KEEL_MODEL": "offline",
        "KEEL_DATA_DIR": str(tmp_path),
        "KEEL_CODEC": "off",
        "KEEL_METRICS_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER, env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(120):
            while not await has_workers(dev_env.client, queue):
                assert process.returncode is None, "the worker exited"
                await asyncio.sleep(0.2)
        process.send_signal(signal.SIGUSR1)
        assert process.stdout is not None
        async with asyncio.timeout(60):
            while not (line := await process.stdout.readline()).startswith(b"["):
                assert line, "the worker printed no module list"
        loaded = set(json.loads(line))
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    assert "keel" in loaded and "temporalio" in loaded  # it is the worker's list
    assert sorted(loaded & set(NOT_FOR_A_WORKER)) == []
