"""Shared fixtures: a time-skipping test server for the session, workers on fresh queues."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from keel.activities.providers import ModelProvider
from keel.offline import OfflineFault, OfflineProvider
from keel.settings import KeelSettings
from keel.workers.apps import resolve_apps
from keel.workers.runtime import (
    build_worker,
    ensure_search_attributes,
)

BIN = Path(sys.executable).parent


def offline_settings(**overrides: object) -> KeelSettings:
    """Settings that ignore the developer's environment and ``.env``."""
    return KeelSettings(_env_file=None, model="offline", **overrides)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await ensure_search_attributes(env.client)
    yield env
    await env.shutdown()


@asynccontextmanager
async def keel_worker(
    client: Client,
    *,
    faults: Sequence[OfflineFault] = (),
    provider: ModelProvider | None = None,
    extra_workflows: Sequence[type] = (),
    tools: Sequence[Callable[..., Any]] | None = None,
) -> AsyncIterator[str]:
    """A Keel worker on a fresh task queue; yields the queue name.

    ``tools`` replaces the real tool activities with stand-ins registered under the same
    activity names.
    """
    task_queue = f"test-{uuid.uuid4()}"
    model = provider or OfflineProvider(faults)
    worker = build_worker(
        client,
        offline_settings(),
        apps=resolve_apps(),
        task_queue=task_queue,
        provider=model,
        activities=tools or [],
        workflows=extra_workflows,
    )
    async with worker:
        yield task_queue


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (in memory) for integration and replay tests."""
    from keel.contracts.names import SEARCH_ATTRIBUTES

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        port=free_port(),
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()
