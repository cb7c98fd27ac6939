"""The ``keel`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from temporalio.service import RPCError

from keel.cli import commands
from keel.errors import KeelUserError
from keel.settings import KeelSettings, get_settings
from keel.workers.apps import resolve_apps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keel", description="Durable, auditable AI-agent workflows on Temporal."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("dev", help="embedded Temporal dev server (UI on :8233) plus a worker")
    _app_option(p)
    p.add_argument("--no-worker", action="store_true", help="the stack without a worker")
    p = sub.add_parser("worker", help="a worker against TEMPORAL_ADDRESS")
    _app_option(p)
    p = sub.add_parser("demo", help="run every app's demo end to end and print the ledgers")
    _app_option(p)
    p = sub.add_parser("start", help="start an app's workflow")
    _app_option(p)
    p.add_argument("scenario", metavar="ENTRY", help="what to start, e.g. contract-review")
    p.add_argument("--input", required=True, help="JSON file with the scenario input")
    p.add_argument("--id", help="workflow id (default: generated)")
    p = sub.add_parser("ledger", help="print an execution's ledger")
    p.add_argument("workflow_id")
    p.add_argument("--json", action="store_true", help="one JSON event per line")
    p = sub.add_parser("gates", help="list gates waiting for a reviewer")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    for name, verb in (("approve", "approve (or modify with --modify)"), ("reject", "reject")):
        p = sub.add_parser(name, help=f"{verb} a gate")
        p.add_argument("workflow_id")
        p.add_argument("gate")
        p.add_argument("--reviewer", required=True)
        p.add_argument("--comment", required=name == "reject")
        p.add_argument("--device", help="where the decision was made (default: keel-cli@host)")
        if name == "approve":
            p.add_argument("--modify", metavar="JSON", help="approve with these modifications")
    p = sub.add_parser("replay", help="replay a history to check determinism")
    _app_option(p)
    p.add_argument("target", metavar="ID|HISTORY.json")
    p = sub.add_parser("export", help="export ledgers as JSON lines")
    _app_option(p)
    p.add_argument(
        "--query",
        help="visibility query selecting the executions (default: the loaded apps' workflows)",
    )
    p.add_argument("--out", help="file to write (default: stdout)")
    return parser


def _app_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app",
        action="append",
        metavar="MODULE[:ATTR]",
        help="an app to load (repeatable; default: KEEL_APPS, else every installed app)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script: runs the command, then exits without teardown."""
    code = run(argv)
    # The Temporal SDK's Rust threads can outlive interpreter finalization and abort it
    # (temporalio/sdk-python#300): flush, then skip teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(dispatch(args, get_settings()))
    except KeyboardInterrupt:
        return 130
    except KeelUserError as exc:
        return commands.err(str(exc))


async def dispatch(args: argparse.Namespace, settings: KeelSettings) -> int:
    from keel.cli import demo
    from keel.workers import serve
    from keel.workers.runtime import connect

    if args.command == "dev":
        apps = [] if args.no_worker else resolve_apps(args.app or ())
        return await serve.run_dev(settings, apps, until_signal())
    if args.command == "demo":
        return await demo.run_demo(settings, resolve_apps(args.app or ()))
    try:
        client = await asyncio.wait_for(connect(settings), timeout=10)
    except (RuntimeError, TimeoutError, OSError) as exc:
        if args.command == "replay" and args.target.endswith(".json"):
            return await commands.cmd_replay(None, settings, args)
        return commands.err(
            f"cannot reach Temporal at {settings.temporal_address} ({exc}); start `keel dev` "
            "in another terminal or set TEMPORAL_ADDRESS"
        )
    if args.command == "worker":
        return await serve.run_worker(
            client, settings, resolve_apps(args.app or ()), until_signal()
        )
    handler = {
        "start": commands.cmd_start,
        "ledger": commands.cmd_ledger,
        "gates": commands.cmd_gates,
        "approve": commands.cmd_review,
        "reject": commands.cmd_review,
        "replay": commands.cmd_replay,
        "export": commands.cmd_export,
    }[args.command]
    try:
        return await handler(client, settings, args)
    except RPCError as exc:
        print(f"keel: {exc.message}", file=sys.stderr)
        return 1


def until_signal() -> asyncio.Event:
    """An event set on SIGINT or SIGTERM, for long-running commands."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


if __name__ == "__main__":
    main()
