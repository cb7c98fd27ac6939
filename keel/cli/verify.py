"""``keel verify ID|FILE``: a ledger checked as stored, with its signatures.

By workflow id the ledger is read through the Temporal client (every run, following the
continue-as-new links); a FILE is an export of ``keel export`` (JSON lines, every workflow in
it checked). Exit 0 when every ledger verifies, 1 on any failure, with the event number and
the reason; an unsigned ``keel-ledger/1`` ledger fails unless ``--allow-legacy``. An
exported run is audited as closed (its last event must be covered by a signed head) unless
``--allow-open`` lets a run the export marks ``RUNNING`` end with unsigned events.
With a reviewer trust file (``--reviewer-keys FILE``, else the workers' own), every reviewer
decision's signature is checked too: a forged, unsigned or untrusted one fails the ledger.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from temporalio.client import Client

from keel.cli.ledgers import execution_runs, load_event_types, source_note
from keel.cli.output import FAILURE, OK, USAGE, CliError, wants_json
from keel.cli.render import escape, verification_lines
from keel.contracts.integrity import LedgerReport, verify_ledger
from keel.contracts.reviews import ReviewerTrust, decision_problems
from keel.contracts.signing import Keyring
from keel.settings import KeelSettings
from keel.workers.keys import load_reviewer_trust, read_reviewer_trust, trusted_keyring

MAX_EXPORT_BYTES = 512 * 1024 * 1024
"""Largest export file ``keel verify`` reads."""


def is_export_file(target: str) -> bool:
    """Whether ``keel verify TARGET`` means a file rather than a workflow id."""
    return target.endswith((".jsonl", ".json")) or Path(target).is_file()


async def cmd_verify(client: Client | None, settings: KeelSettings, args: Any) -> int:
    """Verify the ledger of a workflow id, or every ledger in an export file."""
    load_event_types(args)
    keyring = trusted_keyring(settings, args.keys)
    if not keyring:
        raise CliError(
            "no trusted keys: pass --keys FILE (a keyring file, docs/auditors.md) or set "
            "KEEL_TRUSTED_KEYS_FILE",
            FAILURE,
        )
    records: list[dict[str, Any]] = []
    raw: list[Any] = []
    if is_export_file(args.target):
        records = read_export(args.target)
        reports = verify_export(records, keyring, allow_open=args.allow_open)
        statuses = {
            str(r.get("workflow_id")): str(r.get("status"))
            for r in sorted(records, key=lambda r: _seq(r["event"]))
        }
    elif client is None and not getattr(args, "from_archive", False):
        raise CliError("verifying by workflow id needs a reachable Temporal server", USAGE)
    else:
        from_archive = getattr(args, "from_archive", False)
        runs = await execution_runs(client, settings, args.target, from_archive=from_archive)
        if (note := source_note(args.target, runs)) is not None:
            print(f"keel: note: {note}", file=sys.stderr)
        raw = [event for run in runs for event in run.events]
        reports = {args.target: verify_ledger(raw, keyring=keyring, closed=not runs[-1].open)}
        statuses = {args.target: runs[-1].status}
    if not args.allow_legacy:
        reports = {wid: refuse_legacy(report) for wid, report in reports.items()}
    trust = reviewer_trust(settings, getattr(args, "reviewer_keys", None))
    if trust.keys:
        events = _events_by_workflow(records) if is_export_file(args.target) else {args.target: raw}
        reports = {
            wid: check_decisions(r, events.get(wid, []), trust) for wid, r in reports.items()
        }
    return _print(args, reports, statuses)


def reviewer_trust(settings: KeelSettings, path: str | None) -> ReviewerTrust:
    """The reviewer trust decisions are checked against: ``--reviewer-keys FILE``, else the
    workers' (``KEEL_REVIEWER_KEYS_FILE`` and the data directory's), possibly empty."""
    if path:
        return read_reviewer_trust(Path(path))
    return load_reviewer_trust(settings)


def check_decisions(
    report: LedgerReport, raw_events: list[Any], trust: ReviewerTrust
) -> LedgerReport:
    """``report`` with every reviewer action's signature checked against ``trust``: a
    forged, unsigned or untrusted decision fails the ledger."""
    checked, problems = decision_problems(raw_events, trust)
    update: dict[str, Any] = {"decisions_checked": checked}
    if problems and report.ok:
        seq = _first_problem_seq(problems[0])
        update |= {"ok": False, "broken_at": seq, "reason": "; ".join(problems[:3])}
    return report.model_copy(update=update)


def _first_problem_seq(problem: str) -> int | None:
    head = problem.removeprefix("event ").split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def _events_by_workflow(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for record in records:
        grouped.setdefault(str(record.get("workflow_id")), []).append(record.get("event"))
    return grouped


def refuse_legacy(report: LedgerReport) -> LedgerReport:
    """``report``, failed if the ledger is ``keel-ledger/1``: an unsigned chain proves
    nothing against whoever can rewrite it whole (``--allow-legacy`` accepts one)."""
    if not (report.ok and report.legacy):
        return report
    return report.model_copy(
        update={
            "ok": False,
            "broken_at": 1,
            "reason": "an unsigned legacy ledger (keel-ledger/1): its chain is consistent, but "
            "nothing proves it was not rewritten whole (--allow-legacy accepts it)",
        }
    )


def read_export(path: str) -> list[dict[str, Any]]:
    """The records of an export file: ``{"workflow_id", "run_id", "status", "event"}``.

    Raises:
        CliError: the file is missing, too large, or a line is not such a record (exit 1:
            a file that is not a well-formed export does not verify).
    """
    try:
        if Path(path).stat().st_size > MAX_EXPORT_BYTES:
            raise CliError(f"{escape(path)} is larger than {MAX_EXPORT_BYTES} bytes", USAGE)
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {escape(path)}: {escape(str(exc))}", USAGE) from exc
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as exc:
            raise CliError(f"{escape(path)} line {number}: {escape(str(exc))}", FAILURE) from exc
        if not isinstance(record, dict) or not isinstance(record.get("event"), dict):
            raise CliError(
                f"{escape(path)} line {number} is not an export record "
                '({"workflow_id", "run_id", "status", "event": {...}})',
                FAILURE,
            )
        records.append(record)
    return records


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("an object repeats a key (its stored form is ambiguous)")
    return dict(pairs)


def verify_export(
    records: list[dict[str, Any]], keyring: Keyring, *, allow_open: bool = False
) -> dict[str, LedgerReport]:
    """Each workflow's ledger in an export, its runs put in chain order (by the number of
    their first event; the events of a run keep their order in the file)."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for record in records:
        by_run = runs.setdefault(str(record.get("workflow_id")), {})
        by_run.setdefault(str(record.get("run_id")), []).append(record)
    reports = {}
    for workflow_id, by_run in runs.items():
        ordered = sorted(by_run.values(), key=_first_seq)
        raw = [record["event"] for run in ordered for record in run]
        open_run = allow_open and ordered[-1][-1].get("status") == "RUNNING"
        reports[workflow_id] = verify_ledger(raw, keyring=keyring, closed=not open_run)
    return reports


def _first_seq(run: list[dict[str, Any]]) -> int:
    return _seq(run[0]["event"])


def _seq(event: dict[str, Any]) -> int:
    seq = event.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else -1


def _print(args: Any, reports: dict[str, LedgerReport], statuses: dict[str, str]) -> int:
    if not reports:
        raise CliError("no ledger to verify", FAILURE)
    failed = [wid for wid, report in reports.items() if not report.ok]
    if wants_json(args):
        for workflow_id, report in reports.items():
            record = {"workflow_id": workflow_id, **report.model_dump(mode="json")}
            print(json.dumps(record))
    else:
        for workflow_id, report in reports.items():
            verdict = "verified" if report.ok else "FAILED"
            print(f"{escape(workflow_id)}: {verdict}")
            for line in verification_lines(report, statuses.get(workflow_id, "RUNNING")):
                print(f"  {escape(line)}")
    return FAILURE if failed else OK
