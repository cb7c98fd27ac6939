"""Reading ledgers (``keel ledger``, ``keel export``): from a completed run's result, else by
the ``ledger`` query, as JSON, so no app code is needed."""

from __future__ import annotations

import sys
from dataclasses import dataclass
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
from keel.contracts.integrity import verify_ledger
from keel.contracts.ledger import LedgerContinued, LedgerEvent, parse_ledger
from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.workers.apps import app_specs, load_app, resolve_apps
from keel.workers.keys import trusted_keyring

QUERY_TIMEOUT = timedelta(seconds=15)
"""How long a ``ledger`` or ``gates`` query may wait for a worker to answer."""
_TIMED_OUT = (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED)


MAX_RUNS = 10_000
"""Runs ``full_chain`` follows back at most: a forged link cannot make it walk forever."""


@dataclass
class RunLedger:
    """One run's ledger as stored: its JSON objects, unparsed (what verification hashes)."""

    description: WorkflowExecutionDescription
    events: list[Any]

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.description.run_id

    @property
    def workflow_type(self) -> str:
        """The run's workflow type."""
        return self.description.workflow_type

    @property
    def open(self) -> bool:
        """Whether the run is still running (its last events may not be signed yet)."""
        return self.description.status in (None, WorkflowExecutionStatus.RUNNING)

    @property
    def status(self) -> str:
        """The run's status, as Temporal names it (``RUNNING``, ``COMPLETED``, ``FAILED``)."""
        return self.description.status.name if self.description.status else "RUNNING"

    @property
    def ended_by_keel(self) -> bool:
        """Whether the run ran to its end (completed, or continued as new): Keel signed its
        last head, so its ledger must end with that signature. A run that failed, timed out
        or was terminated ended before it could sign."""
        return self.description.status in (
            WorkflowExecutionStatus.COMPLETED,
            WorkflowExecutionStatus.CONTINUED_AS_NEW,
        )


def export_records(workflow_id: str, run: RunLedger) -> list[dict[str, Any]]:
    """One run's lines of a ``keel export`` file: each event as stored, under ``event``,
    beside the run's ids and status (``docs/auditors.md``)."""
    return [
        {
            "workflow_id": workflow_id,
            "run_id": run.description.run_id,
            "status": run.status,
            "event": event,
        }
        for event in run.events
    ]


async def full_chain(client: Client, workflow_id: str) -> list[LedgerEvent]:
    """The ledger across every run of a workflow that continued as new, oldest first:
    each run's first event names the run before it.

    Raises:
        CliError: a link names a run that does not exist, a run of another workflow type, a
            run already read (a loop), or the walk passes ``MAX_RUNS`` runs.
    """
    runs = await chain_runs(client, workflow_id)
    return _parsed(workflow_id, [event for run in runs for event in run.events])


async def execution_runs(
    client: Client, settings: KeelSettings, workflow_id: str
) -> list[RunLedger]:
    """Each run's stored ledger of an execution, oldest first: what every reader (``keel
    ledger``, ``verify``, ``audit``, ``export``, ``trust``, ``debug``) starts from.

    Raises:
        CliError: as ``full_chain``.
    """
    del settings  # where the archive is, once readers fall back to it
    return await chain_runs(client, workflow_id)


async def chain_runs(client: Client, workflow_id: str) -> list[RunLedger]:
    """Each run's stored ledger, oldest first, following the continue-as-new links back from
    the latest run (``full_chain``, unparsed).

    Raises:
        CliError: as ``full_chain``.
    """
    description, events = await _read_raw(client, workflow_id, None)
    latest = RunLedger(description, events)
    runs = [latest]
    seen = {description.run_id}
    while (previous := _previous_run(events)) is not None:
        where = f"the ledger of {escape(workflow_id)} links back to run '{escape(previous)}'"
        if previous in seen:
            raise CliError(f"{where}, a run already read: the continue-as-new links loop")
        if len(seen) >= MAX_RUNS:
            raise CliError(f"{where}: more than {MAX_RUNS} runs; stopped following the links")
        seen.add(previous)
        try:
            earlier, events = await _read_raw(client, workflow_id, previous)
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise
            raise CliError(f"{where}, which does not exist: a broken or forged link") from exc
        if earlier.workflow_type != description.workflow_type:
            raise CliError(
                f"{where}, a run of another workflow type ({escape(earlier.workflow_type)}, "
                f"not {escape(description.workflow_type)}): a forged link"
            )
        runs.append(RunLedger(earlier, events))
    return list(reversed(runs))


def _previous_run(events: list[Any]) -> str | None:
    """The run a run's ``LedgerContinued`` (its first event) links back to, if any."""
    first = events[0] if events else None
    if (
        not isinstance(first, dict)
        or first.get("type") != LedgerContinued.model_fields["type"].default
    ):
        return None
    return str(first.get("previous_run_id"))


def _parsed(workflow_id: str, raw: list[Any]) -> list[LedgerEvent]:
    try:
        return parse_ledger(raw)
    except ValueError as exc:  # pydantic's ValidationError is one
        raise CliError(
            f"the ledger of {escape(workflow_id)} holds an event that does not parse: "
            f"{escape(str(exc).splitlines()[0])}",
            FAILURE,
        ) from exc


async def read_ledger(
    client: Client, workflow_id: str, run_id: str | None = None
) -> list[LedgerEvent]:
    """The ledger of one run: from its result when it completed, else by query.

    Raises:
        CliError: the execution has no Keel ledger, or no worker answered the query.
    """
    return _parsed(workflow_id, (await _read_raw(client, workflow_id, run_id))[1])


async def read_raw_ledger(client: Client, workflow_id: str, run_id: str | None = None) -> RunLedger:
    """The ledger of one run as stored (JSON objects, unparsed), with the run's description.

    Raises:
        CliError: as ``read_ledger``.
    """
    return RunLedger(*await _read_raw(client, workflow_id, run_id))


async def _read_raw(
    client: Client, workflow_id: str, run_id: str | None
) -> tuple[WorkflowExecutionDescription, list[Any]]:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    description = await handle.describe()
    name = f"{escape(workflow_id)} ({escape(description.workflow_type)})"
    if description.status is WorkflowExecutionStatus.COMPLETED:
        # Every Keel result carries its ledger; read it as JSON, so this works for any app.
        result = await handle.result()
        if isinstance(result, dict) and isinstance(result.get("ledger"), list):
            return description, result["ledger"]
        raise CliError(f"{name} is not a Keel workflow: its result carries no ledger", FAILURE)
    try:
        events: list[Any] = await handle.query(
            "ledger", result_type=list[Any], rpc_timeout=QUERY_TIMEOUT
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
    """Print the ledger and verify it as stored (hashes, types, links, signatures against the
    trusted keys); exit 1 if it does not verify."""
    load_event_types(args)
    runs = await execution_runs(client, settings, args.workflow_id)
    raw = [event for run in runs for event in run.events]
    events = _parsed(args.workflow_id, raw)
    keyring = trusted_keyring(settings)
    latest = runs[-1]
    verified = verify_ledger(raw, keyring=keyring or None, closed=latest.ended_by_keel)
    text = ledger_text(events, report=verified, status=latest.status)
    emit_lines(args, text, (e.model_dump(mode="json") for e in events))
    if not verified.ok:
        return report(
            args,
            f"ledger broken at event {verified.broken_at}: {escape(verified.reason or '')}",
            FAILURE,
        )
    return OK
