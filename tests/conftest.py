"""Keel's own fixtures, over the shipped test kit (``keel.testing``): the session's
time-skipping server, a real dev server, and workers on fresh queues for the built-in apps."""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from keel import testing
from keel.activities.providers import ModelProvider
from keel.offline import OfflineFault, OfflineProvider
from keel.settings import KeelSettings
from keel.testing import offline_settings
from keel.workers.codec import new_key_entry

BIN = Path(sys.executable).parent

__all__ = [
    "BIN",
    "CODEC_KEYS",
    "REVIEW_ENV",
    "codec_settings",
    "free_port",
    "keel_worker",
    "offline_settings",
]

CODEC_KEYS = new_key_entry("test-1")
"""History-encryption keys of this test session (``KEEL_CODEC_KEYS`` for subprocesses)."""

REVIEW_ENV = testing.kit_review_env()
"""What makes a ``keel worker`` process trust, and ``keel approve`` sign with, the test
kit's review key; set for this process too, so environments copied from it carry it."""
os.environ.update(REVIEW_ENV)


def codec_settings(**overrides: Any) -> KeelSettings:
    """``offline_settings`` with history encryption on, under ``CODEC_KEYS``."""
    return offline_settings(**{"codec": "on", "codec_keys": CODEC_KEYS, **overrides})


@pytest.fixture(scope="session")
def ts_env(keel_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """The plugin's time-skipping server (``keel_env``)."""
    return keel_env


@asynccontextmanager
async def keel_worker(
    client: Client,
    *,
    faults: Sequence[OfflineFault] = (),
    provider: ModelProvider | None = None,
    extra_workflows: Sequence[type] = (),
    tools: Sequence[Callable[..., Any]] | None = None,
) -> AsyncIterator[str]:
    """A worker for every installed app on a fresh task queue; yields the queue name.

    ``tools`` are the only activities registered (stand-ins under the real names); the apps'
    own activities are not opened.
    """
    async with testing.keel_worker(
        client,
        model=provider or OfflineProvider(faults),
        activities=tools or [],
        workflows=extra_workflows,
    ) as task_queue:
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
    from keel.workers.devstack import DEV_SERVER_STARTUP, server_limit_args

    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        port=free_port(),
        dev_server_log_level="error",
        dev_server_extra_args=server_limit_args(),
    )
    yield env
    await env.shutdown()


# `make test-fast` runs `-m "not integration"`: what needs a real dev server, a browser or a
# separate process is an integration test.
_INTEGRATION_FIXTURES = {"dev_env", "temporal_ui", "browser", "cli"}
_INTEGRATION_MODULES = {
    "test_cli",
    "test_cli_any_app",
    "test_dev_and_demo",
    "test_incident_cli",
    "test_ui_browser",
    "test_worker_crash_mid_model_call",
}


_INTEGRATION_CALLS = ("start_keel_worker", "create_subprocess_exec", "subprocess.", "start_local")


def _is_integration(item: pytest.Item) -> bool:
    if set(getattr(item, "fixturenames", ())) & _INTEGRATION_FIXTURES:
        return True
    module = getattr(item, "module", None)
    if module is not None and module.__name__.split(".")[-1] in _INTEGRATION_MODULES:
        return True
    function = getattr(item, "function", None)
    try:
        source = inspect.getsource(function) if function is not None else ""
    except (OSError, TypeError):
        return False
    return any(call in source for call in _INTEGRATION_CALLS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark integration tests by the fixtures they use, their module and what they start."""
    for item in items:
        if _is_integration(item):
            item.add_marker(pytest.mark.integration)
