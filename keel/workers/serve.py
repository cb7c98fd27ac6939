"""Long-running processes: ``keel worker`` and ``keel dev``."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from temporalio.client import Client

from keel.settings import KeelSettings
from keel.workers.app import App
from keel.workers.codec import EncryptionCodec, codec_keyring, dev_key_path
from keel.workers.codec_server import CodecServer, ui_origins
from keel.workers.deploys import deployment_note
from keel.workers.devstack import dev_server
from keel.workers.metrics import metrics_client, metrics_note
from keel.workers.runtime import ensure_search_attributes, running_worker

if TYPE_CHECKING:
    from keel.progress.server import ProgressServer


async def run_worker(
    client: Client, settings: KeelSettings, apps: list[App], stop: asyncio.Event
) -> int:
    """Serve the task queue until ``stop`` is set. Then it stops polling at once, lets
    in-flight activities finish for up to ``KEEL_SHUTDOWN_GRACE_SECONDS`` and cancels the
    rest, which Temporal retries on another worker (``keel.workers.deploys``)."""
    await ensure_search_attributes(client)
    client = await metrics_client(client, settings)
    async with running_worker(client, settings, apps=apps):
        print(metrics_note(settings), flush=True)
        print(
            f"keel worker: apps {', '.join(a.name for a in apps)}; "
            f"task queue {settings.task_queue!r} on {settings.temporal_address} "
            f"(namespace {client.namespace}, model {settings.resolved_model}); "
            f"{deployment_note(settings)}",
            flush=True,
        )
        await stop.wait()
        print(
            f"keel worker: stopping; in-flight activities get up to "
            f"{settings.shutdown_grace_seconds:g} s to finish",
            flush=True,
        )
    print("keel worker: stopped", flush=True)
    return 0


DevService = Callable[[KeelSettings, Client], AbstractAsyncContextManager[Any]]
"""A service ``keel dev`` runs beside the stack, given the dev server's client (the inbox)."""


async def run_dev(
    settings: KeelSettings,
    apps: list[App],
    stop: asyncio.Event,
    services: Sequence[DevService] = (),
) -> int:
    """The embedded dev server, a local SMTP server, a worker for ``apps`` (none: no
    worker) and ``services``, until ``stop`` is set."""
    from keel.workers.smtp_sink import SmtpSink

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    mailbox = settings.data_dir / "mailbox.jsonl"
    with SmtpSink(settings.smtp_port, mailbox=mailbox) as sink:
        async with AsyncExitStack() as stack:
            codec = await stack.enter_async_context(_codec_server(settings))
            progress = await stack.enter_async_context(_progress_server(settings))
            endpoint = codec.ui_endpoint if codec else None
            env = await stack.enter_async_context(dev_server(settings, codec_endpoint=endpoint))
            if apps:
                await ensure_search_attributes(env.client)
                client = await metrics_client(env.client, settings)
                await stack.enter_async_context(running_worker(client, settings, apps=apps))
                print(metrics_note(settings), flush=True)
            for service in services:
                await stack.enter_async_context(service(settings, env.client))
            worker = f"worker for {', '.join(a.name for a in apps)}" if apps else "no worker"
            print(_codec_note(settings, codec), flush=True)
            print(
                f"keel dev: Temporal at {settings.temporal_address}, UI at {settings.ui_url}, "
                f"SMTP at 127.0.0.1:{sink.port} (mailbox {mailbox}), data in "
                f"{settings.data_dir / 'temporal.db'}; {worker}; Ctrl-C to stop",
                flush=True,
            )
            print(
                f"progress: {progress.url}/progress/<workflow id> (SSE, resumable with "
                f"Last-Event-ID; `keel watch ID`), events in Redis at {settings.redis_url}",
                flush=True,
            )
            await stop.wait()
    return 0


@asynccontextmanager
async def _codec_server(settings: KeelSettings) -> AsyncIterator[CodecServer | None]:
    """The codec server for the UI over the dev stack's keys (none with ``KEEL_CODEC=off``)."""
    keyring = codec_keyring(settings, target=settings.temporal_address, embedded=True)
    if keyring is None:
        yield None
        return
    token = settings.codec_server_token
    server = CodecServer(
        EncryptionCodec(keyring),
        token=token.get_secret_value() if token else secrets.token_urlsafe(24),
        origins=ui_origins(settings.ui_url),
        port=settings.codec_server_port,
        max_bytes=settings.codec_server_max_bytes,
    )
    async with server:
        yield server


@asynccontextmanager
async def _progress_server(settings: KeelSettings) -> AsyncIterator[ProgressServer]:
    """The progress server (SSE) over the progress streams in ``KEEL_REDIS_URL``."""
    from keel.progress.server import progress_server
    from keel.progress.stream import ProgressStream

    limit = settings.progress_max_streams
    # A connection for each stream, and two for the check each new stream makes first.
    stream = ProgressStream.open(
        settings.redis_url,
        prefix=settings.progress_stream_prefix,
        max_connections=limit + 2,
        client_name="keel-progress-server",
    )
    try:
        async with progress_server(
            stream, port=settings.progress_port, max_streams=limit
        ) as server:
            if settings.progress_port and server.port != settings.progress_port:
                print(
                    f"progress: port {settings.progress_port} is taken; serving on "
                    f"{server.port} (keel watch --url {server.url})",
                    flush=True,
                )
            yield server
    finally:
        await stream.aclose()


def _codec_note(settings: KeelSettings, codec: CodecServer | None) -> str:
    if codec is None:
        return "codec: history encryption is off (KEEL_CODEC=off): payloads are plaintext"
    keys = settings.codec_key_file or (
        "KEEL_CODEC_KEYS" if settings.codec_keys else dev_key_path(settings)
    )
    return (
        f"codec: history encrypted (keys: {keys}); codec server for the UI at {codec.url} "
        f"(token {codec.token}): `temporal --codec-endpoint {codec.url} --codec-auth "
        f"'Bearer {codec.token}' workflow show -w ID` decodes too"
    )
