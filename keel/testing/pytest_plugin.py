"""Keel's pytest plugin, loaded automatically once Keel is installed (entry point
``pytest11``): blocks real model calls, and gives the fixtures below.

Fixtures:
    keel_env: a time-skipping Temporal test server for the session, with Keel's converter
        and search attributes.
    keel_worker: ``keel_worker(apps=[APP], model=..., activities=...)``, an async context
        manager running a worker on a fresh task queue of ``keel_env`` (yields the queue).
    offline_settings: settings on the offline model, ignoring the environment, with
        ``data_dir`` under the test's ``tmp_path``.

Marker:
    ``@pytest.mark.allow_model_requests``: let real providers call out in this test (e.g.
    to a local fake server).

The session fixtures run in pytest-asyncio's session event loop: set
``asyncio_default_fixture_loop_scope`` and ``asyncio_default_test_loop_scope`` to
``"session"`` (and ``asyncio_mode = "auto"``) in the project's pytest options.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import keel.testing
from keel.activities.providers import guard

# The plugin loads in every pytest run of the environment: Temporal and Keel's worker code
# (most of a second) are imported by the fixtures that need them, not at startup.
if TYPE_CHECKING:
    from temporalio.testing import WorkflowEnvironment

    from keel.settings import KeelSettings

WorkerFactory = Callable[..., AbstractAsyncContextManager[str]]


def pytest_configure(config: pytest.Config) -> None:
    """Block real model calls for the session and declare the marker."""
    guard.ALLOW_MODEL_REQUESTS = False
    config.addinivalue_line(
        "markers", "allow_model_requests: let real model providers send requests in this test"
    )


@pytest.fixture(autouse=True)
def _keel_model_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Lift the block for a test marked ``allow_model_requests``; leave it alone otherwise
    (a project that sets ``keel.activities.providers.guard.ALLOW_MODEL_REQUESTS = True`` in its
    own ``pytest_configure`` or a session fixture allows every test)."""
    if request.node.get_closest_marker("allow_model_requests") is None:
        yield
        return
    with keel.testing.allow_model_requests():
        yield


_EnvFixture = Callable[[], AsyncIterator["WorkflowEnvironment"]]
_session_fixture: Callable[[_EnvFixture], _EnvFixture]
try:
    import pytest_asyncio

    _session_fixture = pytest_asyncio.fixture(
        scope="session", loop_scope="session", name="keel_env"
    )
except ImportError:  # the plugin loads in every pytest run: pytest says what is missing
    _session_fixture = pytest.fixture(scope="session", name="keel_env")


async def _keel_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server for the session (``keel.testing.time_skipping_env``)."""
    from keel.testing._environment import time_skipping_env

    async with time_skipping_env() as env:
        yield env


keel_env = _session_fixture(_keel_env)


@pytest.fixture
def keel_worker(keel_env: WorkflowEnvironment) -> WorkerFactory:
    """``keel.testing.keel_worker`` bound to the session's test server."""
    from keel.testing._environment import keel_worker as start_worker

    return functools.partial(start_worker, keel_env.client)


@pytest.fixture
def offline_settings(tmp_path: Path) -> KeelSettings:
    """Offline settings that ignore the environment, keeping data under ``tmp_path``."""
    from keel.testing._environment import offline_settings as settings

    return settings(data_dir=tmp_path)
