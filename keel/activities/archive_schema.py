"""The ledger archive's tables, the rows it exchanges, and the stored forms of a ledger.

The tables and why three of them are append-only: ``keel.activities.archive_store``
(docs/archive.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

RUNS = "keel_archive_runs"
EVENTS = "keel_archive_events"
CONFLICTS = "keel_archive_conflicts"
PENDING = "keel_archive_pending"
STATE = "keel_archive_state"
APPEND_ONLY = (RUNS, EVENTS, CONFLICTS)
WATERMARK = "watermark"
ENDED_BY_KEEL = ("COMPLETED", "CONTINUED_AS_NEW")
"""Statuses of a run that ran to its end, so its ledger must end with its signed head."""
TABLES = (
    f"""CREATE TABLE IF NOT EXISTS {RUNS} (
        workflow_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        workflow_type TEXT NOT NULL,
        task_queue TEXT NOT NULL,
        status TEXT NOT NULL,
        start_time TEXT,
        close_time TEXT NOT NULL,
        archived_at TEXT NOT NULL,
        previous_run_id TEXT,
        first_seq INTEGER NOT NULL,
        events INTEGER NOT NULL,
        head_hash TEXT NOT NULL,
        ledger_sha256 TEXT NOT NULL,
        verified INTEGER NOT NULL,
        broken_at INTEGER,
        verify_reason TEXT,
        report_json TEXT NOT NULL,
        PRIMARY KEY (workflow_id, run_id)
    )""",
    f"CREATE INDEX IF NOT EXISTS {RUNS}_closed ON {RUNS} (close_time)",
    f"""CREATE TABLE IF NOT EXISTS {EVENTS} (
        workflow_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event_json TEXT NOT NULL,
        PRIMARY KEY (workflow_id, run_id, seq)
    )""",
    f"""CREATE TABLE IF NOT EXISTS {CONFLICTS} (
        workflow_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        offered_sha256 TEXT NOT NULL,
        archived_sha256 TEXT NOT NULL,
        detected_at TEXT NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (workflow_id, run_id, offered_sha256)
    )""",
    f"""CREATE TABLE IF NOT EXISTS {PENDING} (
        workflow_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        workflow_type TEXT NOT NULL,
        status TEXT NOT NULL,
        close_time TEXT NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        first_seen TEXT NOT NULL,
        last_attempt TEXT NOT NULL,
        PRIMARY KEY (workflow_id, run_id)
    )""",
    f"""CREATE TABLE IF NOT EXISTS {STATE} (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
)
SQLITE_GUARDS = tuple(
    f"""CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table}
        BEGIN SELECT RAISE(ABORT, 'the keel archive is append-only: {verb} on {table} refused');
        END"""
    for table in APPEND_ONLY
    for verb in ("UPDATE", "DELETE")
)
PG_GUARDS = (
    """CREATE OR REPLACE FUNCTION keel_archive_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the keel archive is append-only: % on % refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END $$""".replace("%", "%%"),
    *(
        f"""CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION keel_archive_refuse()"""
        for table in APPEND_ONLY
    ),
    *(
        f"""CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION keel_archive_refuse()"""
        for table in APPEND_ONLY
    ),
)


class Inserted(StrEnum):
    """What ``ArchiveStore.archive`` did with an offered run."""

    ARCHIVED = "archived"
    """Written (verified, or flagged: see ``ArchivedRun.verified``)."""
    ALREADY = "already"
    """The archive holds this run with the same ledger: nothing written."""
    CONFLICT = "conflict"
    """The archive holds this run with another ledger: refused, recorded as a conflict."""


@dataclass(frozen=True)
class OfferedRun:
    """A closed run and its ledger as read from Temporal, offered to the archive."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: str
    """Temporal's name of how the run closed (``COMPLETED``, ``CONTINUED_AS_NEW``, ...)."""
    close_time: datetime
    events: list[Any]
    start_time: datetime | None = None


@dataclass(frozen=True)
class ArchivedRun:
    """One run as the archive holds it (the shape ``keel.cli.ledgers.RunLedger`` reads)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: str
    start_time: str | None
    close_time: str
    archived_at: str
    previous_run_id: str | None
    first_seq: int
    head_hash: str
    ledger_sha256: str
    verified: bool
    broken_at: int | None
    verify_reason: str | None
    events: list[Any] = field(repr=False)

    @property
    def open(self) -> bool:
        """Always False: only closed runs are archived."""
        return False

    @property
    def ended_by_keel(self) -> bool:
        """Whether the run completed or continued as new (so its ledger ends signed)."""
        return self.status in ENDED_BY_KEEL


@dataclass(frozen=True)
class PendingRun:
    """A closed run the archive does not hold yet, and why."""

    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    close_time: str
    kind: str
    """``retry`` (its ledger could not be read; every pass tries again) or ``no-ledger``
    (not a Keel workflow: noted, never retried)."""
    reason: str
    attempts: int


@dataclass(frozen=True)
class ArchiveCounts:
    """What the archive holds (``keel archive status``)."""

    executions: int
    runs: int
    events: int
    failed_verification: int
    conflicts: int
    pending: int
    no_ledger: int
    watermark: str | None
    last_archived_at: str | None
    oldest_pending_close_time: str | None
    flagged: list[tuple[str, str, str]] = field(default_factory=list)
    """(workflow id, run id, reason) of the latest runs archived flagged (at most 20)."""
    conflicted: list[tuple[str, str, str]] = field(default_factory=list)
    """(workflow id, run id, reason) of the latest conflicts (at most 20)."""


def iso(moment: datetime) -> str:
    """A time as the archive stores it: ISO 8601 in UTC with microseconds (sorts as text)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def now() -> str:
    """The current time, as the archive stores times."""
    return iso(datetime.now(UTC))


def event_text(event: Any) -> str:
    """An event's stored form: its JSON, ASCII-escaped (no NUL or lone surrogate reaches the
    database as such), keys in the order the run stored them."""
    return json.dumps(event, ensure_ascii=True, separators=(",", ":"))


def ledger_sha256(events: Sequence[Any]) -> str:
    """The digest by which two offers of one run are compared: sha256 over the ledger's JSON
    with sorted keys (the same events give the same digest whatever their key order)."""
    text = json.dumps(list(events), ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
