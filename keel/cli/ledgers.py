"""Reading ledgers (``keel ledger``, ``keel export``): from a completed run's result, else by
the ``ledger`` query, as JSON, so no app code is needed."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from keel.activities.archive_store import ENDED_BY_KEEL
from keel.activities.sqlstore import StoreUnavailableError
from keel.archive import ArchivedRun, ArchiveStore
from keel.cli.output import FAILURE, OK, CliError, emit_lines, report
from keel.cli.render import escape, ledger_text
from keel.contracts.integrity import verify_ledger
from keel.contracts.ledger import LedgerContinued, LedgerEvent, parse_ledger
from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.workers.apps import app_specs, load_app, resolve_apps
from keel.workers.codec import HOW_TO_CONFIGURE
from keel.workers.keys import trusted_keyring

QUERY_TIMEOUT = timedelta(seconds=15)
"""How long a ``ledger`` or ``gates`` query may wait for a worker to answer."""
_TIMED_OUT = (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED)


MAX_RUNS = 10_000
"""Runs ``full_chain`` follows back at most: a forged link cannot make it walk forever."""


@dataclass
class RunLedger:
    """One run's ledger as stored: its JSON objects, unparsed (what verification hashes),
    read from Temporal (with the run's description) or from the archive (``archived``)."""

    description: WorkflowExecutionDescription | None
    events: list[Any]
    archived: ArchivedRun | None = None
    """The archive's record of the run, when it was read from the archive."""
    archived_because: str | None = None
    """Why it was: ``gone`` (Temporal has no such run), ``asked`` (``--from-archive``) or
    ``replay`` (a run that closed without completing, whose ledger Temporal gives only by a
    worker replaying it)."""

    @classmethod
    def from_archive(cls, run: ArchivedRun, because: str = "gone") -> RunLedger:
        """A run as the archive holds it (``keel.archive``), read from it ``because``."""
        return cls(None, run.events, run, because)

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.archived.run_id if self.archived else self._described.run_id

    @property
    def workflow_type(self) -> str:
        """The run's workflow type."""
        return self.archived.workflow_type if self.archived else self._described.workflow_type

    @property
    def source(self) -> str:
        """Where it was read: ``temporal`` or ``archive``."""
        return "archive" if self.archived else "temporal"

    @property
    def open(self) -> bool:
        """Whether the run is still running (its last events may not be signed yet)."""
        if self.archived:
            return False
        return self._described.status in (None, WorkflowExecutionStatus.RUNNING)

    @property
    def status(self) -> str:
        """The run's status, as Temporal names it (``RUNNING``, ``COMPLETED``, ``FAILED``)."""
        if self.archived:
            return self.archived.status
        status = self._described.status
        return status.name if status else "RUNNING"

    @property
    def ended_by_keel(self) -> bool:
        """Whether the run ran to its end (completed, or continued as new): Keel signed its
        last head, so its ledger must end with that signature. A run that failed, timed out
        or was terminated ended before it could sign."""
        return self.status in ENDED_BY_KEEL

    @property
    def _described(self) -> WorkflowExecutionDescription:
        if self.description is None:
            raise ValueError("a RunLedger holds a description or an archived run")
        return self.description


def write_export(out: IO[str], workflow_id: str, runs: Iterable[RunLedger]) -> int:
    """Write ``runs``' lines of a ``keel export`` file to ``out``; returns how many."""
    written = 0
    for run in runs:
        for record in export_records(workflow_id, run):
            out.write(json.dumps(record) + "\n")
            written += 1
    return written


def export_records(workflow_id: str, run: RunLedger) -> list[dict[str, Any]]:
    """One run's lines of a ``keel export`` file: each event as stored, under ``event``,
    beside the run's ids and status (``docs/auditors.md``)."""
    return [
        {
            "workflow_id": workflow_id,
            "run_id": run.run_id,
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
    client: Client | None,
    settings: KeelSettings,
    workflow_id: str,
    *,
    from_archive: bool = False,
) -> list[RunLedger]:
    """Each run's stored ledger of an execution, oldest first: what every reader (``keel
    ledger``, ``verify``, ``audit``, ``export``, ``trust``, ``debug``) starts from.

    From Temporal while it has the execution; from the ledger archive (``keel.archive``)
    when Temporal says it has no such execution (retention removed it, or it was deleted),
    or with ``from_archive`` (then ``client`` may be None: no Temporal server is asked).
    Each ``RunLedger`` says where it was read (``source``; ``source_note`` is the line to
    print).

    Raises:
        CliError: as ``full_chain``; neither Temporal nor the archive has the execution;
            the archive's database is unreachable.
    """
    try:
        async with ArchiveStore.open(settings) as archive:
            if from_archive or client is None:
                return await _archived_runs(archive, client, workflow_id, "asked")
            try:
                return await chain_runs(client, workflow_id, archive=archive)
            except RPCError as exc:
                if exc.status is not RPCStatusCode.NOT_FOUND:
                    raise
            return await _archived_runs(archive, client, workflow_id)
    except StoreUnavailableError as exc:
        raise CliError(f"the ledger archive is unreachable: {escape(str(exc))}") from exc


async def _archived_runs(
    archive: ArchiveStore, client: Client | None, workflow_id: str, because: str = "gone"
) -> list[RunLedger]:
    """The archive's runs of ``workflow_id``, or a ``CliError`` that says where it looked."""
    runs = await archive.runs(workflow_id)
    where = f"the ledger archive ({escape(repr(archive.store))})"
    if not runs:
        if client is None:
            raise CliError(f"workflow {escape(workflow_id)!r} is not in {where}", FAILURE)
        raise CliError(
            f"workflow {escape(workflow_id)!r} in namespace {client.namespace!r}: not found, "
            f"nor in {where}",
            FAILURE,
        )
    return [RunLedger.from_archive(run, because) for run in runs]


def source_note(workflow_id: str, runs: list[RunLedger]) -> str | None:
    """What a reader prints when some of ``runs`` came from the archive, else None."""
    archived = [run for run in runs if run.archived is not None]
    if not archived:
        return None
    at = max(run.archived.archived_at for run in archived if run.archived)
    why = {run.archived_because for run in archived}
    name = repr(escape(workflow_id))
    if len(archived) == len(runs):
        note = f"read the ledger of {name} from the ledger archive (archived {at})"
    else:
        note = f"read {len(archived)} of its {len(runs)} runs from the ledger archive ({at})"
    if why == {"gone"}:
        gone = "" if len(archived) == len(runs) else f"{len(archived)} runs of "
        note += f": Temporal no longer has {gone}{name}"
    elif why == {"asked"}:
        note += ", as asked"
    else:
        note += (
            ": Temporal no longer has them, or gives their ledgers only by a worker replaying them"
        )
    flagged = [run for run in archived if run.archived and not run.archived.verified]
    if flagged:
        note += f"; {len(flagged)} run(s) did not verify when archived"
    return note


async def chain_runs(
    client: Client, workflow_id: str, *, archive: ArchiveStore | None = None
) -> list[RunLedger]:
    """Each run's stored ledger, oldest first, following the continue-as-new links back from
    the latest run (``full_chain``, unparsed); an earlier run Temporal no longer has is
    read from ``archive``, when given and it holds it.

    Raises:
        CliError: as ``full_chain``.
    """
    latest = await _run_ledger(client, workflow_id, None, archive)
    events = latest.events
    runs = [latest]
    seen = {latest.run_id}
    while (previous := _previous_run(events)) is not None:
        where = f"the ledger of {escape(workflow_id)} links back to run '{escape(previous)}'"
        if previous in seen:
            raise CliError(f"{where}, a run already read: the continue-as-new links loop")
        if len(seen) >= MAX_RUNS:
            raise CliError(f"{where}: more than {MAX_RUNS} runs; stopped following the links")
        seen.add(previous)
        earlier = await _earlier_run(client, workflow_id, previous, archive, where)
        if earlier.workflow_type != latest.workflow_type:
            raise CliError(
                f"{where}, a run of another workflow type ({escape(earlier.workflow_type)}, "
                f"not {escape(latest.workflow_type)}): a forged link"
            )
        events = earlier.events
        runs.append(earlier)
    return list(reversed(runs))


async def _earlier_run(
    client: Client, workflow_id: str, run_id: str, archive: ArchiveStore | None, where: str
) -> RunLedger:
    """The run a link names: from Temporal, else (retention removed it) from the archive."""
    try:
        return await _run_ledger(client, workflow_id, run_id, archive)
    except RPCError as exc:
        if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise
        archived = await archive.run(workflow_id, run_id) if archive is not None else None
        if archived is None:
            raise CliError(f"{where}, which does not exist: a broken or forged link") from exc
        return RunLedger.from_archive(archived)


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


async def _run_ledger(
    client: Client, workflow_id: str, run_id: str | None, archive: ArchiveStore | None
) -> RunLedger:
    """One run's ledger: a completed run's from its result; a run that closed otherwise
    (continued as new, failed, terminated: Temporal gives its ledger only by a worker
    replaying it for the query) from ``archive`` when it holds it, else by query.

    Raises:
        RPCError: Temporal has no such run (``NOT_FOUND``), or did not answer.
        CliError: as ``read_ledger``.
    """
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    description = await handle.describe()
    replayed = description.status not in (
        None,
        WorkflowExecutionStatus.RUNNING,
        WorkflowExecutionStatus.COMPLETED,
    )
    archived = await archive.run(workflow_id, description.run_id) if archive and replayed else None
    if archived is not None:
        return RunLedger.from_archive(archived, "replay")
    return RunLedger(description, await _stored_ledger(handle, description, workflow_id))


async def _read_raw(
    client: Client, workflow_id: str, run_id: str | None
) -> tuple[WorkflowExecutionDescription, list[Any]]:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    description = await handle.describe()
    return description, await _stored_ledger(handle, description, workflow_id)


async def _stored_ledger(
    handle: WorkflowHandle[Any, Any], description: WorkflowExecutionDescription, workflow_id: str
) -> list[Any]:
    """A described run's ledger as stored: from its result when it completed, else by
    query."""
    name = f"{escape(workflow_id)} ({escape(description.workflow_type)})"
    if description.status is WorkflowExecutionStatus.COMPLETED:
        # Every Keel result carries its ledger; read it as JSON, so this works for any app.
        try:
            result = await handle.result()
        except KeyError as exc:  # the SDK's converter: a payload encoding it does not know
            raise CliError(
                f"the ledger of {name} cannot be decoded ({escape(str(exc))}); if its history "
                f"is encrypted: {HOW_TO_CONFIGURE}",
                FAILURE,
            ) from exc
        if isinstance(result, dict) and isinstance(result.get("ledger"), list):
            ledger: list[Any] = result["ledger"]
            return ledger
        raise CliError(f"{name} is not a Keel workflow: its result carries no ledger", FAILURE)
    try:
        events: list[Any] = await handle.query(
            "ledger", result_type=list[Any], rpc_timeout=QUERY_TIMEOUT
        )
    except WorkflowQueryFailedError as exc:
        raise CliError(f"{name} has no Keel ledger: {escape(str(exc))}", FAILURE) from exc
    except KeyError as exc:  # as for a result: an answer this client cannot decode
        raise CliError(
            f"the ledger of {name} cannot be decoded ({escape(str(exc))}); if its history "
            f"is encrypted: {HOW_TO_CONFIGURE}",
            FAILURE,
        ) from exc
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
    return events


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


async def cmd_ledger(client: Client | None, settings: KeelSettings, args: Any) -> int:
    """Print the ledger and verify it as stored (hashes, types, links, signatures against the
    trusted keys); exit 1 if it does not verify."""
    load_event_types(args)
    from_archive = getattr(args, "from_archive", False)
    runs = await execution_runs(client, settings, args.workflow_id, from_archive=from_archive)
    if (note := source_note(args.workflow_id, runs)) is not None:
        print(f"keel: note: {note}", file=sys.stderr)
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
