"""A running Keel worker keeps what it holds at start out of the garbage collector's walks
(``gc.freeze``), and gives it back when the last worker of the process stops."""

from __future__ import annotations

import gc
import uuid
import weakref

from temporalio.testing import WorkflowEnvironment

from keel.workers.apps import resolve_apps
from keel.workers.runtime import KeelWorker, build_worker
from tests.conftest import offline_settings


async def test_a_running_worker_freezes_the_startup_heap_and_the_last_one_to_stop_thaws_it(
    dev_env: WorkflowEnvironment,
) -> None:
    gc.unfreeze()
    settings = offline_settings()

    def worker() -> KeelWorker:
        return build_worker(
            dev_env.client, settings, apps=resolve_apps(), task_queue=f"heap-{uuid.uuid4()}"
        )

    assert gc.get_freeze_count() == 0
    async with worker():
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, the contracts and the worker itself
        async with worker():
            assert gc.get_freeze_count() >= frozen
        assert gc.get_freeze_count() >= frozen, "another worker still runs"
    assert gc.get_freeze_count() == 0
    # A cycle that was alive when the heap froze and became garbage meanwhile is not
    # collected while frozen, and is once the last worker stops.
    node = Node()
    node.me = node
    gone = weakref.ref(node)
    async with worker():
        del node
        gc.collect()
        assert gone() is not None
    gc.collect()
    assert gone() is None


class Node:
    """An object in a reference cycle (only the collector frees it)."""

    me: object = None
