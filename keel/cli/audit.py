"""``keel audit ID``: an execution's audit dossier, one self-contained HTML file and its PDF.

The ledger is read as every reader reads it (``execution_runs``: Temporal, else the
archive), verified as ``keel ledger`` verifies it (hash chain and signed heads against the
trusted keys) and each reviewer decision's signature as ``keel verify --reviewer-keys``
does. The dossier answers the auditor's ten questions for every agent decision and shows
the verification first. A ledger that does not verify still gets its dossier, which says
so at the top and marks the event where it broke; the command then exits 1.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client

from keel.activities.sqlstore import StoreUnavailableError
from keel.archive import ArchiveStore
from keel.cli.dossier import PdfUnavailable, build_dossier, render_html, write_pdf
from keel.cli.dossier.facts import Dossier, Run
from keel.cli.ledgers import RunLedger, execution_runs, load_event_types, source_note
from keel.cli.output import FAILURE, OK, USAGE, CliError, emit, report
from keel.cli.render import escape
from keel.cli.verify import check_decisions, reviewer_trust
from keel.contracts.integrity import LedgerReport, verify_ledger
from keel.contracts.reviews import ReviewerTrust
from keel.contracts.signing import Keyring
from keel.settings import KeelSettings
from keel.workers.keys import trusted_keyring


def add_audit_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Register ``keel audit`` through ``command`` (main's subcommand factory)."""
    p = command("audit", "write an execution's audit dossier (HTML and PDF); exit 1 if broken")
    p.add_argument("workflow_id")
    p.add_argument(
        "--out",
        metavar="FILE.html",
        help="the HTML file to write (default: audit-<workflow id>.html here)",
    )
    pdf = p.add_mutually_exclusive_group()
    pdf.add_argument(
        "--pdf", metavar="FILE.pdf", help="the PDF to write (default: the HTML file's, .pdf)"
    )
    pdf.add_argument("--no-pdf", action="store_true", help="write the HTML file only")
    p.add_argument(
        "--from-archive",
        action="store_true",
        help="read the ledger from the ledger archive alone (no Temporal server needed), even "
        "while Temporal still has the execution",
    )
    p.add_argument(
        "--keys",
        metavar="FILE",
        help="trusted public keys of the workers (default: KEEL_TRUSTED_KEYS_FILE and this "
        "machine's worker key)",
    )
    p.add_argument(
        "--reviewer-keys",
        metavar="FILE",
        help="reviewer trust file the decisions' signatures are checked against (default: "
        "KEEL_REVIEWER_KEYS_FILE and the data directory's)",
    )
    p.add_argument(
        "--app",
        action="append",
        metavar="MODULE[:ATTR]",
        help="an app whose event types and contracts to load (default: KEEL_APPS, else every "
        "installed app); with its contracts, thresholds and prompts are re-checked",
    )


async def cmd_audit(client: Client | None, settings: KeelSettings, args: Any) -> int:
    """Write the dossier of ``args.workflow_id``; exit 1 when its ledger does not verify (or
    a PDF asked for by ``--pdf`` could not be made). Without a client (``--from-archive``:
    an auditor may reach the archive's database and not Temporal) the archive alone is read."""
    load_event_types(args)
    html_path, pdf_path = output_paths(args)
    if client is None or args.from_archive:
        runs = await archived_runs(settings, args.workflow_id)
    else:
        runs = await execution_runs(client, settings, args.workflow_id)
    raw = [event for run in runs for event in run.events]
    trust = reviewer_trust(settings, args.reviewer_keys)
    keyring = trusted_keyring(settings, args.keys)
    verified = audit_report(raw, keyring, trust, closed=runs[-1].ended_by_keel)
    note = source_note(args.workflow_id, runs)
    if note is not None:
        print(f"keel: note: {note}", file=sys.stderr)
    dossier = build_dossier(
        args.workflow_id,
        [Run(r.run_id, r.status, r.source) for r in runs],
        raw,
        verified,
        trust,
        source_note=note,
    )
    _write_atomically(html_path, render_html(dossier))
    pdf_problem = None
    if pdf_path is not None:
        try:
            await write_pdf(html_path, pdf_path, title=escape(args.workflow_id))
        except PdfUnavailable as exc:
            pdf_problem, pdf_path = str(exc), None
    _print(args, dossier, html_path, pdf_path, pdf_problem)
    if not dossier.verification.ok:
        v = dossier.verification
        return report(
            args,
            f"ledger broken at event {v.broken_at}: {escape(v.reason or '')} (the dossier "
            f"{escape(str(html_path))} says so)",
            FAILURE,
        )
    if pdf_problem and args.pdf:
        return report(args, f"PDF not written: {pdf_problem}", FAILURE)
    return OK


async def archived_runs(settings: KeelSettings, workflow_id: str) -> list[RunLedger]:
    """The ledger archive's runs of ``workflow_id``, oldest first.

    Raises:
        CliError: the archive is unreachable, or holds no run of the execution.
    """
    try:
        async with ArchiveStore.open(settings) as archive:
            runs = await archive.runs(workflow_id)
            where = repr(archive.store)
    except StoreUnavailableError as exc:
        raise CliError(f"the ledger archive is unreachable: {escape(str(exc))}") from exc
    if not runs:
        raise CliError(
            f"workflow {escape(workflow_id)!r} is not in the ledger archive ({escape(where)})",
            FAILURE,
        )
    return [RunLedger.from_archive(run) for run in runs]


def audit_report(
    raw: list[Any], keyring: Keyring, trust: ReviewerTrust, *, closed: bool
) -> LedgerReport:
    """The ledger verified as ``keel ledger`` verifies it (hash chain, types, links, signed
    heads against ``keyring``), and each reviewer decision's signature against ``trust`` as
    ``keel verify --reviewer-keys`` checks it (when ``trust`` holds any key)."""
    report = verify_ledger(raw, keyring=keyring or None, closed=closed)
    return check_decisions(report, raw, trust) if trust.keys else report


def output_paths(args: Any) -> tuple[Path, Path | None]:
    """Where the HTML file and the PDF go. The default name is made from the workflow id
    with every character but letters, digits, ``_`` and ``-`` replaced, so an id
    with ``/`` or ``..`` cannot write outside the current directory.

    Raises:
        CliError: a directory to write into does not exist.
    """
    html_path = Path(args.out) if args.out else Path(f"audit-{safe_name(args.workflow_id)}.html")
    pdf_path = (
        None if args.no_pdf else Path(args.pdf) if args.pdf else html_path.with_suffix(".pdf")
    )
    for path in (html_path, pdf_path):
        if path is not None and not path.parent.resolve().is_dir():
            raise CliError(f"cannot write {escape(str(path))}: no such directory", USAGE)
    return html_path, pdf_path


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_name(workflow_id: str) -> str:
    """``workflow_id`` as a file name part: letters, digits, ``_`` and ``-`` only (no
    separator, no dot), bounded."""
    return _UNSAFE.sub("_", workflow_id).strip("_")[:120] or "execution"


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory, so a
    reader never sees half a dossier."""
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent.resolve(), suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        raise CliError(f"cannot write {escape(str(path))}: {escape(str(exc))}", USAGE) from exc


def _print(
    args: Any, dossier: Dossier, html_path: Path, pdf_path: Path | None, pdf_problem: str | None
) -> None:
    v = dossier.verification
    lines = [
        f"audit dossier of {escape(dossier.workflow_id)}: {len(dossier.decisions)} agent "
        f"decisions, {len(dossier.gates)} gates, {len(dossier.timeline)} events",
        f"  {escape(v.headline)}",
        f"  html: {escape(str(html_path))}",
        f"  pdf:  {escape(str(pdf_path))}" if pdf_path else "  pdf:  not written",
    ]
    if pdf_problem:
        lines.append(f"  note: {escape(pdf_problem)}")
    emit(
        args,
        "\n".join(lines),
        {
            "workflow_id": dossier.workflow_id,
            "html": str(html_path),
            "pdf": str(pdf_path) if pdf_path else None,
            "pdf_error": pdf_problem,
            "verified": v.state == "verified",
            "verification": v.state,
            "broken_at": v.broken_at,
            "headline": v.headline,
            "reason": v.reason,
            "decisions": len(dossier.decisions),
            "gates": len(dossier.gates),
            "events": len(dossier.timeline),
        },
    )
