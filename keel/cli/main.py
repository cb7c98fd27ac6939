"""The ``keel`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from keel.archive import dev_archiver
from keel.cli import commands, history, verify
from keel.cli.archive import add_archive_parser, cmd_archive, from_archive_option
from keel.cli.audit import add_audit_parser, cmd_audit
from keel.cli.codec_server import add_codec_server_parser, cmd_codec_server
from keel.cli.connection import common_options, connected_settings, json_alias, open_client
from keel.cli.dataset import add_dataset_options
from keel.cli.debug import add_debug_parser, cmd_debug
from keel.cli.inbox import add_inbox_parser, cmd_inbox
from keel.cli.keys import cmd_keys
from keel.cli.output import FAILURE, UNREACHABLE, USAGE, CliError, report
from keel.cli.render import escape
from keel.cli.trust import add_trust_parser, cmd_trust
from keel.errors import KeelUserError
from keel.settings import KeelSettings, get_settings
from keel.workers.apps import resolve_apps
from keel.workers.metrics import metrics_runtime


def build_parser() -> argparse.ArgumentParser:
    """The ``keel`` argument parser: every subcommand takes the connection options and
    ``-o text|json``."""
    parser = argparse.ArgumentParser(
        prog="keel",
        description="Durable, auditable AI-agent workflows on Temporal.",
        epilog="Exit codes: 0 ok, 1 failed (workflow, replay, broken hash chain, not found), "
        "2 usage or refused input, 3 Temporal unreachable.",
        parents=[common_options(top_level=True)],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [common_options(top_level=False)]

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=common)

    p = command("dev", "embedded Temporal dev server (UI on :8233) plus a worker")
    _app_option(p)
    p.add_argument("--no-worker", action="store_true", help="the stack without a worker")
    p = command("worker", "a worker for the apps, on the configured Temporal server")
    _app_option(p)
    p = command("demo", "run every app's demo end to end and print the ledgers")
    _app_option(p)
    p = command("start", "start an app's workflow (an entry, or any type with --workflow-type)")
    _app_option(p)
    p.add_argument(
        "scenario", metavar="ENTRY", nargs="?", help="what to start, e.g. contract-review"
    )
    p.add_argument("--input", required=True, help="JSON file with the input")
    p.add_argument("--id", help="workflow id (default: generated)")
    p.add_argument(
        "--workflow-type",
        metavar="TYPE",
        help="start this workflow type with the input as is (for apps this CLI has not "
        "loaded: the workflow validates its input)",
    )
    p.add_argument("--task-queue", help="task queue (default: KEEL_TASK_QUEUE)")
    p = command("ledger", "print an execution's ledger and verify its hash chain")
    _app_option(
        p,
        help="an app whose event types to describe (default: KEEL_APPS, else every "
        "installed app); other apps' events print generically and still verify",
    )
    p.add_argument("workflow_id")
    json_alias(p)
    from_archive_option(p)
    p = command("verify", "verify a ledger as stored, with its signed heads (exit 1 if not)")
    from_archive_option(p)
    _app_option(
        p,
        help="an app whose event types to check fields of (default: KEEL_APPS, else "
        "every installed app); other apps' events are checked by hash and signature only",
    )
    p.add_argument("target", metavar="ID|EXPORT.jsonl", help="a workflow id or a keel export file")
    p.add_argument(
        "--keys",
        metavar="FILE",
        help="trusted public keys (a keyring file; default: KEEL_TRUSTED_KEYS_FILE and this "
        "machine's worker key)",
    )
    p.add_argument(
        "--reviewer-keys",
        metavar="FILE",
        help="check each reviewer decision's signature against this reviewer trust file "
        "(default: KEEL_REVIEWER_KEYS_FILE and the data directory's, if any)",
    )
    p.add_argument(
        "--allow-open",
        action="store_true",
        help="in an export, a run marked RUNNING may end with unsigned events",
    )
    p.add_argument(
        "--allow-legacy", action="store_true", help="accept unsigned keel-ledger/1 ledgers"
    )
    p = command("keys", "signing keys: export the worker's, make a new one, or a reviewer's")
    keys = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = keys.add_parser(
        "export", help="the public keys ledgers are verified with (a keyring file)"
    )
    export.add_argument("--out", help="file to write (default: stdout)")
    new = keys.add_parser("new", help="a new private key, for a rotation")
    new.add_argument("path", metavar="FILE", help="where to write it (never overwritten)")
    reviewer = keys.add_parser(
        "reviewer", help="a reviewer's own key for keel approve, and its trust entry"
    )
    reviewer.add_argument("path", metavar="FILE", help="where to write it (never overwritten)")
    reviewer.add_argument("--reviewer", required=True, help="whose key it is (their subject)")
    reviewer.add_argument(
        "--role", action="append", default=[], help="a role it may act with (repeatable)"
    )
    reviewer.add_argument("--trust", metavar="FILE", help="add its entry to this trust file")
    add_inbox_parser(command)
    add_codec_server_parser(command)
    add_archive_parser(command)
    add_audit_parser(command)
    p = command("gates", "list gates waiting for a reviewer")
    json_alias(p)
    for name, verb in (("approve", "approve (or modify with --modify)"), ("reject", "reject")):
        p = command(name, f"{verb} a gate")
        p.add_argument("workflow_id")
        p.add_argument("gate")
        p.add_argument("--reviewer", required=True)
        p.add_argument("--comment", required=name == "reject")
        if name == "approve":
            p.add_argument("--modify", metavar="JSON", help="approve with these modifications")
    p = command("replay", "replay a history with the apps' code to check determinism")
    _app_option(p)
    p.add_argument("target", metavar="ID|HISTORY.json")
    add_debug_parser(command)
    p = command("export", "export ledgers as JSON lines")
    _app_option(
        p, help="an app whose event types to parse (default: KEEL_APPS, else every installed app)"
    )
    p.add_argument(
        "--query",
        help="visibility query selecting the executions (default: every execution but "
        "Keel's tool-task children; executions without a ledger are skipped)",
    )
    p.add_argument("--out", help="file to write (default: stdout)")
    add_dataset_options(p)
    add_trust_parser(command, _app_option)
    p = command("watch", "follow a workflow's progress stream (reconnects by itself)")
    p.add_argument("workflow_id")
    p.add_argument("--url", help="the progress server (default: KEEL_PROGRESS_URL)")
    p.add_argument("--last-event-id", help="show only the events after this one")
    p.add_argument(
        "--reconnect-for",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up after this long without reaching the server (default: 300)",
    )
    p.add_argument(
        "--check-after",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="ask Temporal about the workflow after this long without an event, and stop "
        "when it closed without its final event (default: 10; 0: never ask)",
    )
    return parser


def _app_option(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument(
        "--app",
        action="append",
        metavar="MODULE[:ATTR]",
        help=help or "an app to load (repeatable; default: KEEL_APPS, else every installed app)",
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
    """Parse ``argv`` and run the command; returns the exit code (see ``keel.cli.output``)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = get_settings()
    except ValidationError as exc:  # e.g. KEEL_CODEC=maybe: name each setting, never its value
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()[:5]
        )
        return report(args, f"invalid settings (environment or .env): {problems}", USAGE)
    try:
        return asyncio.run(dispatch(args, settings))
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        return report(args, exc.message, exc.code)
    except KeelUserError as exc:
        return report(args, str(exc), USAGE)


async def dispatch(args: argparse.Namespace, settings: KeelSettings) -> int:
    """Run the parsed command (each branch imports what it needs: a worker loads no web
    stack)."""
    from keel.workers import serve

    if args.command == "dev":
        apps = [] if args.no_worker else resolve_apps(args.app or ())
        from keel.inbox.server import dev_inbox  # the web stack only where it is served

        services = [dev_inbox, dev_archiver]
        return await serve.run_dev(settings, apps, until_signal(), services=services)
    if args.command == "demo":
        from keel.cli import demo  # the demo's inbox: the web stack

        return await demo.run_demo(settings, resolve_apps(args.app or ()))
    if args.command == "keys":
        return cmd_keys(settings, args)  # needs no server
    if args.command == "inbox":
        return await cmd_inbox(settings, args, until_signal())
    if args.command == "codec-server":
        return await cmd_codec_server(settings, args, until_signal())  # needs no server
    if args.command == "archive":
        return await cmd_archive(settings, args)
    if args.command == "watch":
        from keel.cli.watch import cmd_watch

        return await cmd_watch(settings, args)  # the progress server; Temporal after a silence
    if args.command == "replay" and history.is_history_file(args.target):
        return await history.cmd_replay(None, settings, args)  # needs no server
    if args.command == "trust":
        return await cmd_trust(settings, args)  # opens a client only to read from Temporal
    if args.command == "audit" and args.from_archive:
        return await cmd_audit(None, settings, args)  # reads the archive, not Temporal
    if args.command == "verify" and verify.is_export_file(args.target):
        return await verify.cmd_verify(None, settings, args)  # needs no server
    if args.command == "ledger" and args.from_archive:
        return await commands.cmd_ledger(None, settings, args)  # reads the archive only
    if args.command == "verify" and args.from_archive:
        return await verify.cmd_verify(None, settings, args)  # reads the archive only
    # A worker connects on the runtime that serves its /metrics: one runtime per process.
    runtime = metrics_runtime(settings) if args.command == "worker" else None
    client = await open_client(settings, args, runtime)
    settings = connected_settings(settings, client)
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
        "replay": history.cmd_replay,
        "debug": cmd_debug,
        "export": history.cmd_export,
        "verify": verify.cmd_verify,
        "audit": cmd_audit,
    }[args.command]
    try:
        return await handler(client, settings, args)
    except RPCError as exc:
        workflow_id = getattr(args, "workflow_id", None) or getattr(args, "target", None)
        raise rpc_failure(exc, client, workflow_id) from exc


def rpc_failure(exc: RPCError, client: Client, workflow_id: str | None) -> CliError:
    """What a server error means to the user, and its exit code (the server's text with
    its control characters escaped: it may quote what someone sent)."""
    message = escape(exc.message)
    if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        return CliError(f"Temporal did not answer: {message}", UNREACHABLE)
    if exc.status is RPCStatusCode.NOT_FOUND:
        what = f"workflow {workflow_id!r}" if workflow_id else "not found"
        return CliError(f"{what} in namespace {client.namespace!r}: {message}", FAILURE)
    if exc.status is RPCStatusCode.INVALID_ARGUMENT:
        return CliError(message, USAGE)
    return CliError(message, FAILURE)


def until_signal() -> asyncio.Event:
    """An event set on SIGINT or SIGTERM, for long-running commands."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


if __name__ == "__main__":
    main()
