"""``keel codec-server``: the codec server on its own, for a Temporal UI that is not
``keel dev``'s (docker compose, a cluster): it decodes the history Keel encrypted with the
configured keys, for requests that carry its token (``keel.workers.codec_server``)."""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from keel.cli.output import OK, USAGE, report
from keel.settings import KeelSettings
from keel.workers.codec import EncryptionCodec, codec_keyring
from keel.workers.codec_server import CodecServer, ui_origins


def add_codec_server_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Register ``keel codec-server`` through ``command`` (main's subcommand factory)."""
    p = command(
        "codec-server",
        "the codec server alone: lets a Temporal UI (KEEL_UI_URL) decode encrypted history",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument(
        "--port", type=int, help="port (default: KEEL_CODEC_SERVER_PORT; 0: any free one)"
    )


async def cmd_codec_server(settings: KeelSettings, args: Any, stop: asyncio.Event) -> int:
    """Serve the codec over the configured history keys until ``stop`` is set; the token is
    ``KEEL_CODEC_SERVER_TOKEN`` (one is generated and printed when it is unset)."""
    keyring = codec_keyring(settings, target=settings.temporal_address, embedded=False)
    if keyring is None:
        return report(args, "history encryption is off (KEEL_CODEC=off): nothing to decode", USAGE)
    configured = settings.codec_server_token
    token = configured.get_secret_value() if configured else secrets.token_urlsafe(24)
    server = CodecServer(
        EncryptionCodec(keyring),
        token=token,
        origins=ui_origins(settings.ui_url),
        host=args.host,
        port=settings.codec_server_port if args.port is None else args.port,
        max_bytes=settings.codec_server_max_bytes,
    )
    async with server:
        shown = "KEEL_CODEC_SERVER_TOKEN" if configured else token
        print(
            f"keel codec-server: {server.url} for the UI at {settings.ui_url} (bearer token "
            f"{shown}; the UI's endpoint is {server.url}/<token>)",
            flush=True,
        )
        await stop.wait()
    return OK
