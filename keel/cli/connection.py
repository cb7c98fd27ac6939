"""Options every ``keel`` command takes (connection, output format) and the connection."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from temporalio.client import Client
from temporalio.runtime import Runtime

from keel.cli.output import UNREACHABLE, USAGE, CliError
from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.workers.runtime import connect, connect_config

CONNECT_TIMEOUT_SECONDS = 10.0


def common_options(*, top_level: bool) -> argparse.ArgumentParser:
    """A parent parser with ``--address``, ``--namespace``, ``--profile`` and ``-o``.

    The top-level parser gets the defaults; each subcommand gets the same options with no
    default, so ``keel -o json gates`` and ``keel gates -o json`` mean the same and the
    value given after the subcommand wins.
    """
    parser = argparse.ArgumentParser(add_help=False)
    unset: dict[str, Any] = {} if top_level else {"default": argparse.SUPPRESS}
    group = parser.add_argument_group("connection (default: the Temporal CLI's configuration)")
    group.add_argument(
        "--address",
        help="Temporal frontend host:port (default: TEMPORAL_ADDRESS, the profile, localhost:7233)",
        **unset,
    )
    group.add_argument(
        "--namespace", help="Temporal namespace (default: TEMPORAL_NAMESPACE, the profile)", **unset
    )
    group.add_argument(
        "--profile",
        help="profile of the Temporal CLI's config file (TEMPORAL_CONFIG_FILE; default: "
        "TEMPORAL_PROFILE, else 'default')",
        **unset,
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        help="output format (default: text)",
        **({"default": "text"} if top_level else unset),
    )
    return parser


def json_alias(parser: argparse.ArgumentParser) -> None:
    """``--json``, the older spelling of ``-o json``."""
    parser.add_argument(
        "--json",
        dest="output",
        action="store_const",
        const="json",
        default=argparse.SUPPRESS,
        help="same as -o json",
    )


def target(settings: KeelSettings, args: Any) -> str:
    """``host:port (namespace N)`` the command will talk to, for messages."""
    try:
        config = connect_config(
            settings,
            address=getattr(args, "address", None),
            namespace=getattr(args, "namespace", None),
            profile=getattr(args, "profile", None),
        )
    except KeelUserError:
        return settings.temporal_address
    return f"{config['target_host']} (namespace {config['namespace']})"


async def open_client(settings: KeelSettings, args: Any, runtime: Runtime | None = None) -> Client:
    """A client connected as the options and the environment say, on ``runtime`` (default:
    the SDK's default runtime).

    Raises:
        CliError: the configuration cannot be read (exit 2) or no server answered (exit 3).
    """
    try:
        return await asyncio.wait_for(
            connect(
                settings,
                address=getattr(args, "address", None),
                namespace=getattr(args, "namespace", None),
                profile=getattr(args, "profile", None),
                runtime=runtime,
            ),
            timeout=CONNECT_TIMEOUT_SECONDS,
        )
    except KeelUserError as exc:
        raise CliError(str(exc), USAGE) from exc
    except (RuntimeError, TimeoutError, OSError) as exc:
        detail = str(exc) or f"no answer in {CONNECT_TIMEOUT_SECONDS:.0f} s"
        raise CliError(
            f"cannot reach Temporal at {target(settings, args)}: {detail}; start `keel dev` in "
            "another terminal, or pass --address / --profile (or set TEMPORAL_ADDRESS)",
            UNREACHABLE,
        ) from exc


def connected_settings(settings: KeelSettings, client: Client) -> KeelSettings:
    """``settings`` with the address and namespace the client actually uses (for what
    ``keel worker`` prints and the links the commands print)."""
    return settings.model_copy(
        update={
            "temporal_address": client.service_client.config.target_host,
            "temporal_namespace": client.namespace,
        }
    )
