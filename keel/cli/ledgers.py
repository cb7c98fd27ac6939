"""Reading ledgers (``keel ledger``, ``keel export``): from a completed run's result, else by
the ``ledger`` query, as JSON, so no app code is needed."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from keel.cli.output import FAILURE, OK, CliError, emit_lines, report
from keel.cli.render import escape, ledger_text
from keel.contracts.ledger import LedgerContinued, LedgerEvent, parse_ledger, verify_chain
from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.workers.apps import app_specs, load_app, resolve_apps

QUERY_TIMEOUT = timedelta(seconds=15)
"""How long a ``ledger`` or ``gates`` query may wait for a worker to answer."""
_TIMED_OUT = (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED)


MAX_RUNS = 10_000
"""Runs ``full_chain`` follows back at most: a forged link cannot make it walk forever."""


async def full_chain(client: Client, workflow_id: str) -> list[LedgerEvent]:
    """The ledger across every run of a workflow that continued as new, oldest first:
    each run's first event names the run before it.

    Raises:
        CliError: a link names a run that does not exist, a run of another workflow type, a
            run already read (a loop), or the walk passes ``MAX_RUNS`` runs.
    """
    description, events = await _read_run(client, workflow_id, None)
    runs = [events]
    seen = {description.run_id}
    while events and isinstance(events[0], LedgerContinued):
        previous = events[0].previous_run_id
        where = f"the ledger of {escape(workflow_id)} links back to run '{escape(previous)}'"
        if previous in seen:
            raise CliError(f"{where}, a run already read: the continue-as-new links loop")
        if len(seen) >= MAX_RUNS:
            raise CliError(f"{where}: more than {MAX_RUNS} runs; stopped following the links")
        seen.add(previous)
        try:
            earlier, events = await _read_run(client, workflow_id, previous)
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise
            raise CliError(f"{where}, which does not exist: a broken or forged link") from exc
        if earlier.workflow_type != description.workflow_type:
            raise CliError(
                f"{where}, a run of another workflow type ({escape(earlier.workflow_type)}, "
                f"not {escape(description.workflow_type)}): a forged link"
            )
        runs.append(events)
    return [event for run in reversed(runs) for event in run]


async def read_ledger(
    client: Client, workflow_id: str, run_id: str | None = None
) -> list[LedgerEvent]:
    """The ledger of one run: from its result when it completed, else by query.

    Raises:
        CliError: the execution has no Keel ledger, or no worker answered the query.
    """
    return (await _read_run(client, workflow_id, run_id))[1]


async def _read_run(
    client: Client, workflow_id: str, run_id: str | None
) -> tuple[WorkflowExecutionDescription, list[LedgerEvent]]:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    description = await handle.describe()
    name = f"{escape(workflow_id)} ({escape(description.workflow_type)})"
    if description.status is WorkflowExecutionStatus.COMPLETED:
        # Every Keel result carries its ledger; read it as JSON, so this works for any app.
        result = await handle.result()
        if isinstance(result, dict) and isinstance(result.get("ledger"), list):
            return description, parse_ledger(result["ledger"])
        raise CliError(f"{name} is not a Keel workflow: its result carries no ledger", FAILURE)
    try:
        events: list[LedgerEvent] = await handle.query(
            "ledger", result_type=list[LedgerEvent], rpc_timeout=QUERY_TIMEOUT
        )
    except WorkflowQueryFailedError as exc:
        raise CliError(f"{name} has no Keel ledger: {escape(str(exc))}", FAILURE) from exc
    except RPCError as exc:
        if exc.status not in _TIMED_OUT:
            raise CliError(
                f"the ledger query of {escape(workflow_id)} failed: {escape(exc.message)}"
            ) from exc
        raise CliError(
            f"no worker answered the ledger query of {escape(workflow_id)} in "
            f"{QUERY_TIMEOUT.total_seconds():.0f} s; is a worker for task queue "
            f"{description.task_queue!r} running?",
            FAILURE,
        ) from exc
    return description, events


def load_event_types(args: Any) -> None:
    """Import the apps whose ledger events should parse as their own types (and print with
    their ``describe()``): ``--app`` strictly; by default each app of ``KEEL_APPS`` or the
    installed ones that imports, with a note for those that do not. Reading a ledger needs
    no app code: events of types not loaded stay whole and still verify."""
    if args.app:
        resolve_apps(args.app)
        return
    for spec in app_specs():
        try:
            load_app(spec)
        except KeelUserError as exc:
            print(f"keel: note: {escape(str(exc))}; its events print generically", file=sys.stderr)


async def cmd_ledger(client: Client, settings: KeelSettings, args: Any) -> int:
    """Print the ledger; exit 1 if its hash chain does not verify."""
    load_event_types(args)
    events = await full_chain(client, args.workflow_id)
    emit_lines(args, ledger_text(events), (e.model_dump(mode="json") for e in events))
    chain = verify_chain(events)
    if not chain.ok:
        return report(
            args,
            f"hash chain broken at event {chain.broken_at}: {escape(chain.reason or '')}",
            FAILURE,
        )
    return OK
