"""Long-running processes: ``keel worker`` and ``keel dev``."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from temporalio.client import Client

from keel.settings import KeelSettings
from keel.workers.app import App
from keel.workers.devstack import dev_server
from keel.workers.runtime import ensure_search_attributes, running_worker


async def run_worker(
    client: Client, settings: KeelSettings, apps: list[App], stop: asyncio.Event
) -> int:
    """Serve the task queue until ``stop`` is set; in-flight tasks finish first."""
    await ensure_search_attributes(client)
    async with running_worker(client, settings, apps=apps):
        print(
            f"keel worker: apps {', '.join(a.name for a in apps)}; "
            f"task queue {settings.task_queue!r} on {settings.temporal_address} "
            f"(namespace {client.namespace}, model {settings.resolved_model})",
            flush=True,
        )
        await stop.wait()
    return 0


async def run_dev(settings: KeelSettings, apps: list[App], stop: asyncio.Event) -> int:
    """The embedded dev server, a local SMTP server and a worker for ``apps`` (none: no
    worker), until ``stop`` is set."""
    from keel.workers.smtp_sink import SmtpSink

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    mailbox = settings.data_dir / "mailbox.jsonl"
    with SmtpSink(settings.smtp_port, mailbox=mailbox) as sink:
        async with dev_server(settings) as env, AsyncExitStack() as stack:
            if apps:
                await ensure_search_attributes(env.client)
                await stack.enter_async_context(running_worker(env.client, settings, apps=apps))
            worker = f"worker for {', '.join(a.name for a in apps)}" if apps else "no worker"
            print(
                f"keel dev: Temporal at {settings.temporal_address}, UI at {settings.ui_url}, "
                f"SMTP at 127.0.0.1:{sink.port} (mailbox {mailbox}), data in "
                f"{settings.data_dir / 'temporal.db'}; {worker}; Ctrl-C to stop",
                flush=True,
            )
            await stop.wait()
    return 0
