"""``keel archive schedule|run|status|init|export|verify``: the ledger archive's schedule, a
pass now, its lag, its tables, what it holds as an export file, and a check of all of it.

The archiver itself runs on the workers (``keel.workflows.archiver``); these commands start
it through Temporal and read the archive (``KEEL_ARCHIVE_URL``). See docs/archive.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    ScheduleOverlapPolicy,
)
from temporalio.common import WorkflowIDConflictPolicy

from keel.activities.archive_store import ledger_sha256
from keel.activities.sqlstore import StoreUnavailableError
from keel.archive import ArchivedRun, ArchiveLag, ArchiveStore, archive_lag
from keel.archive.schedule import ensure_archiver_schedule
from keel.cli.connection import common_options, connected_settings, open_client
from keel.cli.ledgers import RunLedger, write_export
from keel.cli.output import FAILURE, OK, USAGE, CliError, output_file, wants_json
from keel.cli.render import escape
from keel.contracts.archive import (
    ARCHIVE_SCHEDULE_ID,
    ARCHIVER_WORKFLOW,
    ARCHIVER_WORKFLOW_ID,
    ArchivePassInput,
    ArchivePassResult,
)
from keel.contracts.integrity import verify_ledger
from keel.contracts.signing import Keyring
from keel.settings import KeelSettings
from keel.workers.keys import trusted_keyring


def add_archive_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Register ``keel archive schedule|run|status`` through ``command`` (main's subcommand
    factory)."""
    p = command("archive", "the ledger archive: schedule the archiver, run a pass, show the lag")
    actions = p.add_subparsers(dest="archive_action", required=True, metavar="ACTION")
    common = [common_options(top_level=False)]
    schedule = actions.add_parser(
        "schedule",
        parents=common,
        help="create or update the Temporal Schedule that runs the archiver",
    )
    schedule.add_argument(
        "--every",
        type=int,
        metavar="SECONDS",
        help="how often (default: KEEL_ARCHIVE_INTERVAL_SECONDS, 300)",
    )
    schedule.add_argument("--task-queue", help="where it runs (default: KEEL_TASK_QUEUE)")
    schedule.add_argument("--trigger", action="store_true", help="and start a pass now")
    run = actions.add_parser(
        "run", parents=common, help="one archiver pass now, on a worker; wait for it"
    )
    run.add_argument("--task-queue", help="where it runs (default: KEEL_TASK_QUEUE)")
    run.add_argument("--batch-size", type=int, default=ArchivePassInput().batch_size)
    actions.add_parser(
        "status",
        parents=common,
        help="the archive's lag behind Temporal, its counts, runs that failed verification",
    )
    actions.add_parser(
        "init",
        parents=common,
        help="create the archive's tables and append-only triggers (as their owner; the "
        "archiver creates them on first use otherwise)",
    )
    export = actions.add_parser(
        "export",
        parents=common,
        help="archived ledgers as keel export's JSON lines (for keel verify FILE and the "
        "standalone verifier), without Temporal",
    )
    export.add_argument("workflow_ids", nargs="*", metavar="ID", help="default: every one")
    export.add_argument("--workflow-type", metavar="TYPE", help="only executions of this type")
    export.add_argument(
        "--since", metavar="ISO-TIME", help="only executions with a run closed at or after"
    )
    export.add_argument("--out", metavar="FILE", help="file to write (default: stdout)")
    verify = actions.add_parser(
        "verify",
        parents=common,
        help="verify what the archive holds, without Temporal: each run's events against the "
        "digest taken when it was archived, each execution's chain against the trusted keys",
    )
    verify.add_argument("workflow_ids", nargs="*", metavar="ID", help="default: every one")
    verify.add_argument(
        "--keys",
        metavar="FILE",
        help="trusted public keys (a keyring file; default: KEEL_TRUSTED_KEYS_FILE and this "
        "machine's worker key)",
    )


def from_archive_option(parser: argparse.ArgumentParser) -> None:
    """``--from-archive``: read the ledger archive's copy even while Temporal has the
    execution (by default the archive is read only when Temporal no longer has it)."""
    parser.add_argument(
        "--from-archive",
        action="store_true",
        help="read the ledger archive's copy, even while Temporal has the execution",
    )


async def cmd_archive(settings: KeelSettings, args: Any) -> int:
    """Run ``keel archive ACTION``."""
    try:
        if args.archive_action == "verify":
            return await cmd_verify_archive(settings, args)  # needs no server
        if args.archive_action == "init":
            return await cmd_init(settings, args)  # needs no server
        if args.archive_action == "export":
            return await cmd_export_archive(settings, args)  # needs no server
        client = await open_client(settings, args)
        settings = connected_settings(settings, client)
        action = {"schedule": cmd_schedule, "run": cmd_run, "status": cmd_status}
        return await action[args.archive_action](client, settings, args)
    except StoreUnavailableError as exc:
        raise CliError(f"the ledger archive is unreachable: {escape(str(exc))}") from exc


async def cmd_schedule(client: Client, settings: KeelSettings, args: Any) -> int:
    """Create the archiver's schedule, or update it to these settings."""
    every = args.every or settings.archive_interval_seconds
    if not 10 <= every <= 24 * 3600:
        raise CliError("--every must be between 10 and 86400 seconds")
    queue = args.task_queue or settings.task_queue
    handle, verb = await ensure_archiver_schedule(client, every=every, task_queue=queue)
    if args.trigger:
        await handle.trigger(overlap=ScheduleOverlapPolicy.SKIP)
    record = {
        "schedule": ARCHIVE_SCHEDULE_ID,
        "action": verb,
        "every_seconds": every,
        "task_queue": queue,
        "triggered": bool(args.trigger),
    }
    text = (
        f"schedule {ARCHIVE_SCHEDULE_ID} {verb}: an archiver pass every {every} s on task "
        f"queue {queue!r} (overlap: skip; missed passes caught up within a day)"
        + ("; a pass started now" if args.trigger else "")
    )
    print(json.dumps(record) if wants_json(args) else text)
    return OK


async def cmd_run(client: Client, settings: KeelSettings, args: Any) -> int:
    """Start one archiver pass (or join the one running) and print what it did."""
    request = ArchivePassInput(batch_size=max(1, min(args.batch_size, 5_000)))
    queue = args.task_queue or settings.task_queue
    if not await has_workers(client, queue):
        raise CliError(
            f"no worker polls task queue {queue!r}: the archiver runs on a Keel worker "
            "(`keel worker` or `keel dev`); start one, or pass --task-queue"
        )
    handle = await client.start_workflow(
        ARCHIVER_WORKFLOW,
        request,
        id=ARCHIVER_WORKFLOW_ID,
        task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=ArchivePassResult,
        execution_timeout=timedelta(hours=6),
    )
    result = await handle.result()
    if wants_json(args):
        print(result.model_dump_json())
        return OK
    print(
        f"archived {result.archived} runs ({result.already} held already, "
        f"{result.failed_verification} flagged: did not verify, {result.conflicts} "
        f"conflicting ledgers refused, {result.pending} pending, {result.no_ledger} not Keel "
        f"workflows) of {result.listed} closed runs listed; watermark {result.watermark}"
    )
    return OK


async def has_workers(client: Client, queue: str) -> bool:
    """Whether any worker polled ``queue`` for workflow tasks recently."""
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return bool(described.pollers)


async def cmd_status(client: Client, settings: KeelSettings, args: Any) -> int:
    """Print the archive's lag and counts (``-o json``: one object)."""
    async with ArchiveStore.open(settings) as archive:
        lag = await archive_lag(client, archive, task_queues=settings.archive_task_queues)
        where = repr(archive.store)
    if wants_json(args):
        print(json.dumps({"archive": where, **lag.as_json()}))
    else:
        print("\n".join(status_lines(where, lag)))
    return OK


def status_lines(where: str, lag: ArchiveLag) -> list[str]:
    """``keel archive status`` as text."""
    counts = lag.counts
    at_least = "at least " if lag.unarchived_is_lower_bound else ""
    lines = [
        f"archive: {escape(where)}",
        f"holds {counts.executions} executions, {counts.runs} runs, {counts.events} events "
        f"(last archived {counts.last_archived_at or 'never'})",
        f"watermark: {counts.watermark or 'none (no pass has run)'}"
        + (f", {_age(lag.watermark_age_seconds)} ago" if lag.watermark_age_seconds else ""),
        f"lag: {at_least}{lag.unarchived} closed runs not archived yet"
        + (
            f"; the oldest closed {_age(lag.oldest_unarchived_age_seconds)} ago "
            f"({lag.oldest_unarchived_close_time})"
            if lag.oldest_unarchived_age_seconds is not None
            else ""
        ),
        f"failed verification on insert: {counts.failed_verification}; conflicting ledgers "
        f"refused: {counts.conflicts}; pending (unreadable so far): {counts.pending}; "
        f"not Keel workflows: {counts.no_ledger}",
    ]
    lines += [
        f"  FLAGGED {escape(w)} run {escape(r)}: {escape(why)}" for w, r, why in counts.flagged
    ]
    lines += [
        f"  CONFLICT {escape(w)} run {escape(r)}: {escape(why)}" for w, r, why in counts.conflicted
    ]
    return lines


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


async def cmd_init(settings: KeelSettings, args: Any) -> int:
    """Create the archive's tables and triggers if they are missing."""
    async with ArchiveStore.open(settings) as archive:
        await archive.ensure_schema()
        where = repr(archive.store)
    print(json.dumps({"archive": where}) if wants_json(args) else f"archive ready: {where}")
    return OK


async def cmd_export_archive(settings: KeelSettings, args: Any) -> int:
    """Write archived executions' ledgers in ``keel export``'s format (docs/auditors.md)."""
    since = _since(args.since)
    counts = {"events": 0, "executions": 0, "missing": 0}
    with output_file(args.out) as out:
        async with ArchiveStore.open(settings) as archive:
            chosen = args.workflow_ids or await archive.executions(args.workflow_type, since)
            for workflow_id in chosen:
                runs = [RunLedger.from_archive(run) for run in await archive.runs(workflow_id)]
                counts["executions" if runs else "missing"] += 1
                counts["events"] += write_export(out, workflow_id, runs)
    summary = f"exported {counts['events']} ledger events of {counts['executions']} archived "
    summary += "executions"
    if counts["missing"]:
        summary += f" ({counts['missing']} not in the archive)"
    print(json.dumps(counts) if wants_json(args) else summary, file=sys.stderr)
    return FAILURE if counts["missing"] else OK


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CliError(f"--since must be an ISO 8601 time: {escape(str(exc))}", USAGE) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def cmd_verify_archive(settings: KeelSettings, args: Any) -> int:
    """Verify the archive's executions (or those named); exit 1 if any does not verify."""
    keyring = trusted_keyring(settings, args.keys)
    if not keyring:
        raise CliError(
            "no trusted keys: pass --keys FILE (a keyring file, docs/auditors.md) or set "
            "KEEL_TRUSTED_KEYS_FILE",
            FAILURE,
        )
    failed = 0
    async with ArchiveStore.open(settings) as archive:
        for workflow_id in args.workflow_ids or await archive.executions():
            runs = await archive.runs(workflow_id)
            record = archived_verification(workflow_id, runs, keyring)
            failed += not record["ok"]
            if wants_json(args):
                print(json.dumps(record))
            else:
                verdict = "verified" if record["ok"] else f"FAILED: {record['reason']}"
                print(
                    f"{escape(workflow_id)}: {escape(verdict)} ({record['runs']} runs, "
                    f"{record['events']} events)"
                )
    return FAILURE if failed else OK


def archived_verification(
    workflow_id: str, runs: list[ArchivedRun], keyring: Keyring
) -> dict[str, Any]:
    """One execution of the archive checked: each run's events against the digest stored
    when it was archived (a row changed behind the triggers' back shows here even without
    keys), then the whole chain with ``verify_ledger`` as ``keel ledger`` does."""
    record: dict[str, Any] = {"workflow_id": workflow_id, "runs": len(runs), "events": 0}
    if not runs:
        return record | {"ok": False, "reason": "the archive holds no run of it"}
    raw = [event for run in runs for event in run.events]
    record["events"] = len(raw)
    if runs[0].previous_run_id is not None:
        reason = f"it continues run {runs[0].previous_run_id}, which the archive does not hold"
        return record | {"ok": False, "reason": reason}
    for run in runs:
        if ledger_sha256(run.events) != run.ledger_sha256:
            return record | {
                "ok": False,
                "reason": f"run {run.run_id}: its events no longer match the digest taken "
                "when it was archived: the archive was changed",
            }
    report = verify_ledger(raw, keyring=keyring, closed=runs[-1].ended_by_keel)
    return record | {
        "ok": report.ok,
        "reason": None if report.ok else f"event {report.broken_at}: {report.reason}",
        "head_hash": report.head_hash,
        "unsigned": report.unsigned,
    }
