"""A worker process for tests/test_email.py: ``KeelToolTask`` and the parent that seals
its task, the signing activities and the ``send_email`` activity, over the side-effect
record named by the environment.

Environment: ``TEMPORAL_ADDRESS``, ``KEEL_TASK_QUEUE``, ``KEEL_DATA_DIR`` or
``KEEL_DATABASE_URL``, ``KEEL_TEST_SMTP_PORT``, and (for the first worker of the kill test)
``KEEL_FAULT_EXIT_AFTER_EFFECT=send_email``. Prints ``email worker: ready`` once polling;
stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

import keel.contracts.email  # noqa: F401  (registers send_email in the catalog)
from keel.activities.tools.email import EmailSender
from keel.settings import KeelSettings
from keel.workers.keys import load_worker_keys
from keel.workers.runtime import engine_activities
from keel.workflows.tool_task import ToolTaskWorkflow
from tests.probe_sealed import ToolTaskParentProbe

SENDER = "support@keel.test"


async def main() -> None:
    settings = KeelSettings(_env_file=None)
    client = await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )
    email = EmailSender.open(
        settings, host="127.0.0.1", port=int(os.environ["KEEL_TEST_SMTP_PORT"]), sender=SENDER
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[ToolTaskWorkflow, ToolTaskParentProbe],
            # The parent seals the task with the workers' key (both share KEEL_DATA_DIR).
            activities=[*email.activities(), *engine_activities(load_worker_keys(settings))],
            # A killed worker's sticky queue holds the next workflow task for this long before
            # it goes to the normal queue (default 10 s): keep the test short.
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
        ):
            print(f"email worker: ready (pid {os.getpid()})", flush=True)
            await stop.wait()
    finally:
        await email.aclose()


if __name__ == "__main__":
    asyncio.run(main())
