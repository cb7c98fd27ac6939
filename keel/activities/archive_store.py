"""The ledger archive: every closed run's ledger, append-only, verified on insert.

Tables (SQLite file by default, PostgreSQL when ``KEEL_ARCHIVE_URL`` names one):

* ``keel_archive_runs``: one row per archived run, keyed (workflow_id, run_id): workflow
  type, task queue, Temporal status, start and close time, when it was archived, the run it
  continues (``previous_run_id``), its first sequence number and event count, its head hash,
  the sha256 of its ledger, and the verification on insert (``verified``, ``broken_at``,
  ``verify_reason``, the whole report as JSON).
* ``keel_archive_events``: each event exactly as the run stored it (the JSON object
  verification hashes), keyed (workflow_id, run_id, seq) where ``seq`` is the event's
  position in the chain (``first_seq`` + index; the event's own ``seq`` field, which a
  broken ledger may get wrong, is inside the JSON).
* ``keel_archive_conflicts``: a run offered again with a *different* ledger (tampering, or
  a bug): refused, and recorded here with both digests, never written over the first.

These three are append-only, enforced by the database itself: triggers refuse every
``UPDATE`` and ``DELETE`` (and, in PostgreSQL, ``TRUNCATE``). Beside them, two tables of
operational state that do change: ``keel_archive_pending`` (runs whose ledger could not be
read yet, and closed runs that are not Keel workflows) and ``keel_archive_state`` (the
watermark: the close time up to which the archiver has handled every listed run).

Verified on insert: a run's ledger is checked with ``verify_ledger`` against the trusted
keyring, from the head of the run it continues (which the archive must already hold, so
the continue-as-new link is checked too), and its ``WorkflowStarted`` must name this very
run. A completed run must end with its completion signature, a run that continued as new
with the signed head the next run links to; a run that failed, timed out, was cancelled or
terminated may end before a signature (as ``keel ledger`` reads it; the report counts its
unsigned events), but every hash, link and signature it has must hold. A
run that fails is archived *flagged* (``verified = 0`` with the reason), never dropped: the
archive keeps the evidence, ``keel archive status`` reports it, and every reader verifies
again from the stored events, so a flagged run fails ``keel verify`` just as it did here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Self

from keel.activities.archive_schema import (
    CONFLICTS,
    ENDED_BY_KEEL,
    EVENTS,
    PENDING,
    PG_GUARDS,
    RUNS,
    SQLITE_GUARDS,
    STATE,
    TABLES,
    WATERMARK,
    ArchiveCounts,
    ArchivedRun,
    Inserted,
    OfferedRun,
    PendingRun,
    event_text,
    iso,
    ledger_sha256,
    now,
)
from keel.activities.sqlstore import PostgresStore, SqliteStore, SqlStore, Tx
from keel.contracts.integrity import LedgerReport, verify_ledger
from keel.contracts.ledger import GENESIS_HASH
from keel.contracts.signing import Keyring
from keel.errors import KeelUserError
from keel.settings import KeelSettings

__all__ = [
    "CONFLICTS",
    "ENDED_BY_KEEL",
    "EVENTS",
    "PENDING",
    "RUNS",
    "ArchiveCounts",
    "ArchiveStore",
    "ArchivedRun",
    "Inserted",
    "OfferedRun",
    "PendingRun",
    "continues",
    "ledger_sha256",
]
MAX_CHAIN = 10_000
"""Runs ``runs`` follows back at most (a forged link cannot make it walk forever)."""
_INSERT_ROWS = 200
"""Events written per ``INSERT`` statement."""


class ArchiveStore:
    """The archive over a SQL store (``ArchiveStore.open(settings)``); see the module.

    Usable as an async context manager (its connections are closed after the block).
    """

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._guards = PG_GUARDS if isinstance(store, PostgresStore) else SQLITE_GUARDS
        self._ready = False

    @classmethod
    def open(cls, settings: KeelSettings) -> Self:
        """The archive ``settings.archive_url`` names: ``postgresql://...``, ``sqlite:///
        PATH`` or a path; unset, ``$KEEL_DATA_DIR/archive.sqlite3``. Nothing connects until
        the first use.

        Raises:
            KeelUserError: the URL is of another kind.
        """
        url = settings.archive_url
        if not url:
            return cls(SqliteStore(settings.data_dir / "archive.sqlite3"))
        if url.startswith(("postgresql://", "postgres://")):
            return cls(PostgresStore(url))
        if url.startswith("sqlite:///"):
            return cls(SqliteStore(url.removeprefix("sqlite:///")))
        if "://" not in url:
            return cls(SqliteStore(Path(url)))
        raise KeelUserError(
            "KEEL_ARCHIVE_URL must be a PostgreSQL URL (postgresql://user@host:5432/db), "
            f"sqlite:///PATH or a file path; got one starting {url.split(':', 1)[0]!r}"
        )

    def __repr__(self) -> str:
        return f"ArchiveStore({self.store!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the store's connections."""
        await self.store.aclose()

    async def ensure_schema(self) -> None:
        """Create the tables and the append-only triggers if they are missing. When they are
        all there, no DDL runs: the archiver may use a role that can only read and insert
        (docs/archive.md)."""
        if self._ready:
            return
        if not await self._installed():
            await self.store.ensure_schema("keel-archive", (*TABLES, *self._guards))
        self._ready = True

    async def _installed(self) -> bool:
        """Whether every table and every append-only trigger exists."""
        if isinstance(self.store, SqliteStore) and not self.store.path.exists():
            return False
        if isinstance(self.store, PostgresStore):
            tables = (
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_name IN (?, ?, ?, ?, ?)"
            )
            triggers = (
                "SELECT COUNT(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE c.relnamespace = current_schema()::regnamespace AND t.tgname LIKE ?"
            )
        else:
            tables = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN "
            tables += "(?, ?, ?, ?, ?)"
            triggers = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE ?"

        async def count(tx: Tx) -> tuple[int, int]:
            found = await tx.fetchone(tables, RUNS, EVENTS, CONFLICTS, PENDING, STATE)
            guarded = await tx.fetchone(triggers, "keel_archive_%")
            return int(found[0] if found else 0), int(guarded[0] if guarded else 0)

        async with self.store.session() as session:
            found, guarded = await session.transaction(count)
        return found == 5 and guarded == len(self._guards) - (
            1 if isinstance(self.store, PostgresStore) else 0
        )

    # --- writing -----------------------------------------------------------------------

    async def archive(self, run: OfferedRun, keyring: Keyring | None) -> tuple[Inserted, str]:
        """Verify ``run`` and append it, unless the archive holds it already.

        Returns what happened and, for a run archived flagged (it did not verify) or a
        conflict, why; "" for a run archived verified, or held already.
        """
        await self.ensure_schema()
        digest = ledger_sha256(run.events)
        held = await self._held_digest(run.workflow_id, run.run_id)
        if held is not None:
            return await self._again(run, digest, held)
        report, previous, first_seq, problem = await self._verify(run, keyring)
        inserted = await self.store.transaction(
            lambda tx: self._insert(tx, run, digest, report, (previous, first_seq), problem),
            lock=f"keel-archive:{run.workflow_id}:{run.run_id}",
        )
        if inserted is not None:  # another archiver wrote it in the meantime
            return await self._again(run, digest, inserted)
        return Inserted.ARCHIVED, (report.reason if not report.ok else problem) or ""

    async def _again(self, run: OfferedRun, digest: str, held: str) -> tuple[Inserted, str]:
        if held == digest:
            return Inserted.ALREADY, ""
        reason = (
            f"run {run.run_id} of {run.workflow_id} was offered with a ledger "
            f"({len(run.events)} events, sha256 {digest[:16]}...) other than the one archived "
            f"(sha256 {held[:16]}...): refused, the archived one is kept"
        )

        async def record(tx: Tx) -> None:
            await tx.execute(
                f"INSERT INTO {CONFLICTS} (workflow_id, run_id, offered_sha256, "
                "archived_sha256, detected_at, reason) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                run.workflow_id,
                run.run_id,
                digest,
                held,
                now(),
                reason,
            )

        await self.store.transaction(record)
        return Inserted.CONFLICT, reason

    async def _held_digest(self, workflow_id: str, run_id: str) -> str | None:
        async def read(tx: Tx) -> str | None:
            row = await tx.fetchone(
                f"SELECT ledger_sha256 FROM {RUNS} WHERE workflow_id = ? AND run_id = ?",
                workflow_id,
                run_id,
            )
            return None if row is None else str(row[0])

        return await self.store.transaction(read)

    async def _verify(
        self, run: OfferedRun, keyring: Keyring | None
    ) -> tuple[LedgerReport, str | None, int, str | None]:
        """The verification of ``run`` from the head of the run it continues; the previous
        run's id; the chain position of its first event; and a problem beside the report's
        own (a link the archive cannot check, a ledger of another run)."""
        previous = continues(run.events)
        genesis, first_seq, problem = GENESIS_HASH, 1, None
        if previous is not None:
            before = await self.run(run.workflow_id, previous)
            if before is None:
                problem = (
                    f"it continues run {previous}, which the archive does not hold: the "
                    "continue-as-new link cannot be checked"
                )
                first = run.events[0] if isinstance(run.events[0], dict) else {}
                genesis = str(first.get("previous_head"))
                seq = first.get("seq")
                first_seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else 1
            elif before.workflow_type != run.workflow_type or before.status != "CONTINUED_AS_NEW":
                problem = (
                    f"it continues run {previous}, a {before.workflow_type} run that ended "
                    f"{before.status}: a forged link"
                )
            else:
                genesis, first_seq = before.head_hash, before.first_seq + len(before.events)
        report = verify_ledger(
            run.events,
            keyring=keyring,
            closed=run.status == "COMPLETED",
            genesis=genesis,
            first_seq=first_seq,
        )
        if report.ok and run.status == "CONTINUED_AS_NEW":
            report = _ends_signed(report, first_seq + len(run.events) - 1)
        if not report.signatures_checked and report.ok:
            problem = problem or "no trusted keys: its signatures were not checked"
        return report, previous, first_seq, problem or _names_another_run(run)

    async def _insert(
        self,
        tx: Tx,
        run: OfferedRun,
        digest: str,
        report: LedgerReport,
        link: tuple[str | None, int],
        problem: str | None,
    ) -> str | None:
        """Append the run and its events; or, if another archiver did first, its digest."""
        row = await tx.fetchone(
            f"SELECT ledger_sha256 FROM {RUNS} WHERE workflow_id = ? AND run_id = ?",
            run.workflow_id,
            run.run_id,
        )
        if row is not None:
            return str(row[0])
        previous, first_seq = link
        verified = report.ok and problem is None
        reason = report.reason if not report.ok else problem
        await tx.execute(
            f"INSERT INTO {RUNS} (workflow_id, run_id, workflow_type, task_queue, status, "
            "start_time, close_time, archived_at, previous_run_id, first_seq, events, "
            "head_hash, ledger_sha256, verified, broken_at, verify_reason, report_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            run.workflow_id,
            run.run_id,
            run.workflow_type,
            run.task_queue,
            run.status,
            iso(run.start_time) if run.start_time else None,
            iso(run.close_time),
            now(),
            previous,
            first_seq,
            len(run.events),
            report.head_hash,
            digest,
            1 if verified else 0,
            report.broken_at,
            reason,
            report.model_dump_json(),
        )
        rows = [
            (run.workflow_id, run.run_id, first_seq + index, event_text(event))
            for index, event in enumerate(run.events)
        ]
        for start in range(0, len(rows), _INSERT_ROWS):
            chunk = rows[start : start + _INSERT_ROWS]
            await tx.execute(
                f"INSERT INTO {EVENTS} (workflow_id, run_id, seq, event_json) VALUES "
                + ", ".join("(?, ?, ?, ?)" for _ in chunk),
                *(value for row in chunk for value in row),
            )
        await tx.execute(
            f"DELETE FROM {PENDING} WHERE workflow_id = ? AND run_id = ?",
            run.workflow_id,
            run.run_id,
        )
        return None

    async def note_pending(
        self,
        *,
        workflow_id: str,
        run_id: str,
        workflow_type: str,
        status: str,
        close_time: datetime,
        kind: str,
        reason: str,
    ) -> None:
        """Put a closed run the archive could not take on the pending list (or count one
        more attempt of it)."""
        await self.ensure_schema()
        at = now()
        await self.store.transaction(
            lambda tx: tx.execute(
                f"INSERT INTO {PENDING} (workflow_id, run_id, workflow_type, status, "
                "close_time, kind, reason, attempts, first_seen, last_attempt) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT (workflow_id, run_id) DO "
                f"UPDATE SET kind = excluded.kind, reason = excluded.reason, attempts = "
                f"{PENDING}.attempts + 1, last_attempt = excluded.last_attempt",
                workflow_id,
                run_id,
                workflow_type,
                status,
                iso(close_time),
                kind,
                reason[:2000],
                at,
                at,
            )
        )

    async def forget_pending(self, workflow_id: str, run_id: str, reason: str) -> None:
        """Mark a pending run as beyond reach (Temporal no longer has it): it stays listed,
        as ``lost``, and is not retried."""
        await self.store.transaction(
            lambda tx: tx.execute(
                f"UPDATE {PENDING} SET kind = 'lost', reason = ?, last_attempt = ? "
                "WHERE workflow_id = ? AND run_id = ?",
                reason[:2000],
                now(),
                workflow_id,
                run_id,
            )
        )

    async def advance_watermark(self, to: datetime) -> str:
        """Move the watermark to ``to`` (never back); returns the watermark now."""
        await self.ensure_schema()
        value = iso(to)

        async def write(tx: Tx) -> str:
            row = await tx.fetchone(f"SELECT value FROM {STATE} WHERE name = ?", WATERMARK)
            if row is not None and str(row[0]) >= value:
                return str(row[0])
            await tx.execute(
                f"INSERT INTO {STATE} (name, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                WATERMARK,
                value,
                now(),
            )
            return value

        return await self.store.transaction(write, lock="keel-archive-watermark")

    # --- reading -----------------------------------------------------------------------

    async def _exists(self) -> bool:
        """Whether the archive's tables exist (readers create nothing, not even the file)."""
        if isinstance(self.store, SqliteStore) and not self.store.path.exists():
            return False
        async with self.store.session() as session:
            columns = await session.transaction(lambda tx: self.store._columns(tx, RUNS))
        return bool(columns)

    async def watermark(self) -> datetime | None:
        """The close time up to which the archiver has handled every listed run."""
        if not await self._exists():
            return None
        row = await self.store.transaction(
            lambda tx: tx.fetchone(f"SELECT value FROM {STATE} WHERE name = ?", WATERMARK)
        )
        return None if row is None else datetime.fromisoformat(str(row[0]))

    async def archived(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of the (workflow id, run id) pairs the archive holds."""
        return await self._among(keys, RUNS)

    async def noted(
        self, keys: Sequence[tuple[str, str]], kind: str | None = None
    ) -> set[tuple[str, str]]:
        """Those of the (workflow id, run id) pairs on the pending list (of ``kind``)."""
        return await self._among(keys, PENDING, kind)

    async def _among(
        self, keys: Sequence[tuple[str, str]], table: str, kind: str | None = None
    ) -> set[tuple[str, str]]:
        if not keys or not await self._exists():
            return set()

        async def read(tx: Tx) -> set[tuple[str, str]]:
            found: set[tuple[str, str]] = set()
            for start in range(0, len(keys), 400):
                chunk = keys[start : start + 400]
                where = " OR ".join("(workflow_id = ? AND run_id = ?)" for _ in chunk)
                rows = await tx.fetchall(
                    f"SELECT workflow_id, run_id FROM {table} WHERE "
                    + ("kind = ? AND " if kind else "")
                    + f"({where})",
                    *([kind] if kind else []),
                    *(value for pair in chunk for value in pair),
                )
                found |= {(str(w), str(r)) for w, r in rows}
            return found

        return await self.store.transaction(read)

    async def pending(self, limit: int, kind: str = "retry") -> list[PendingRun]:
        """The pending runs of ``kind``, the ones that closed first first."""
        if not await self._exists():
            return []
        rows = await self.store.transaction(
            lambda tx: tx.fetchall(
                f"SELECT workflow_id, run_id, workflow_type, status, close_time, kind, reason, "
                f"attempts FROM {PENDING} WHERE kind = ? ORDER BY close_time LIMIT ?",
                kind,
                limit,
            )
        )
        return [
            PendingRun(str(w), str(r), str(t), str(s), str(c), str(k), str(why), int(n))
            for w, r, t, s, c, k, why, n in rows
        ]

    async def run(self, workflow_id: str, run_id: str) -> ArchivedRun | None:
        """One archived run, with its events, or None."""
        if not await self._exists():
            return None
        return await self.store.transaction(lambda tx: _read_run(tx, workflow_id, run_id))

    async def runs(self, workflow_id: str) -> list[ArchivedRun]:
        """Every run of the latest archived execution of ``workflow_id``, oldest first
        (following the continue-as-new links back from the run that closed last); [] when
        the archive holds none."""
        if not await self._exists():
            return []
        return await self.store.transaction(lambda tx: _read_chain(tx, workflow_id))

    async def executions(
        self, workflow_type: str | None = None, since: datetime | None = None
    ) -> list[str]:
        """The workflow ids of archived executions (of ``workflow_type``, with a run closed
        at or after ``since``), in the order their latest run closed."""
        if not await self._exists():
            return []
        where, params = ["1 = 1"], []
        if workflow_type is not None:
            where.append("workflow_type = ?")
            params.append(workflow_type)
        if since is not None:
            where.append("close_time >= ?")
            params.append(iso(since))
        rows = await self.store.transaction(
            lambda tx: tx.fetchall(
                f"SELECT workflow_id, MAX(close_time) AS closed FROM {RUNS} "
                f"WHERE {' AND '.join(where)} GROUP BY workflow_id ORDER BY closed, workflow_id",
                *params,
            )
        )
        return [str(row[0]) for row in rows]

    async def counts(self) -> ArchiveCounts:
        """What the archive holds, its watermark and what it could not take."""
        if not await self._exists():
            return ArchiveCounts(0, 0, 0, 0, 0, 0, 0, None, None, None)
        return await self.store.transaction(_counts)


async def _counts(tx: Tx) -> ArchiveCounts:
    async def one(sql: str, *params: Any) -> Any:
        row = await tx.fetchone(sql, *params)
        return row[0] if row else None

    pending = {
        str(kind): int(n)
        for kind, n in await tx.fetchall(f"SELECT kind, COUNT(*) FROM {PENDING} GROUP BY kind")
    }
    flagged = await tx.fetchall(
        f"SELECT workflow_id, run_id, verify_reason FROM {RUNS} WHERE verified = 0 "
        "ORDER BY archived_at DESC LIMIT 20"
    )
    conflicted = await tx.fetchall(
        f"SELECT workflow_id, run_id, reason FROM {CONFLICTS} ORDER BY detected_at DESC LIMIT 20"
    )
    return ArchiveCounts(
        executions=int(await one(f"SELECT COUNT(DISTINCT workflow_id) FROM {RUNS}") or 0),
        runs=int(await one(f"SELECT COUNT(*) FROM {RUNS}") or 0),
        events=int(await one(f"SELECT COALESCE(SUM(events), 0) FROM {RUNS}") or 0),
        failed_verification=int(await one(f"SELECT COUNT(*) FROM {RUNS} WHERE verified = 0")),
        conflicts=int(await one(f"SELECT COUNT(*) FROM {CONFLICTS}") or 0),
        pending=pending.get("retry", 0) + pending.get("lost", 0),
        no_ledger=pending.get("no-ledger", 0),
        watermark=await one(f"SELECT value FROM {STATE} WHERE name = ?", WATERMARK),
        last_archived_at=await one(f"SELECT MAX(archived_at) FROM {RUNS}"),
        oldest_pending_close_time=await one(
            f"SELECT MIN(close_time) FROM {PENDING} WHERE kind IN ('retry', 'lost')"
        ),
        flagged=[(str(w), str(r), str(why or "")) for w, r, why in flagged],
        conflicted=[(str(w), str(r), str(why)) for w, r, why in conflicted],
    )


_RUN_COLUMNS = (
    "workflow_id, run_id, workflow_type, task_queue, status, start_time, close_time, "
    "archived_at, previous_run_id, first_seq, head_hash, ledger_sha256, verified, broken_at, "
    "verify_reason"
)


async def _read_run(tx: Tx, workflow_id: str, run_id: str) -> ArchivedRun | None:
    row = await tx.fetchone(
        f"SELECT {_RUN_COLUMNS} FROM {RUNS} WHERE workflow_id = ? AND run_id = ?",
        workflow_id,
        run_id,
    )
    if row is None:
        return None
    rows = await tx.fetchall(
        f"SELECT event_json FROM {EVENTS} WHERE workflow_id = ? AND run_id = ? ORDER BY seq",
        workflow_id,
        run_id,
    )
    events = [json.loads(str(text)) for (text,) in rows]
    w, r, t, q, s, started, closed, at, prev, first, head, sha, ok, broken, why = row
    return ArchivedRun(
        workflow_id=str(w),
        run_id=str(r),
        workflow_type=str(t),
        task_queue=str(q),
        status=str(s),
        start_time=None if started is None else str(started),
        close_time=str(closed),
        archived_at=str(at),
        previous_run_id=None if prev is None else str(prev),
        first_seq=int(first),
        head_hash=str(head),
        ledger_sha256=str(sha),
        verified=bool(ok),
        broken_at=None if broken is None else int(broken),
        verify_reason=None if why is None else str(why),
        events=events,
    )


async def _read_chain(tx: Tx, workflow_id: str) -> list[ArchivedRun]:
    rows = await tx.fetchall(
        f"SELECT run_id, previous_run_id, close_time FROM {RUNS} WHERE workflow_id = ?",
        workflow_id,
    )
    if not rows:
        return []
    continued = {str(prev) for _, prev, _ in rows if prev is not None}
    heads = [(str(closed), str(run)) for run, _, closed in rows if str(run) not in continued]
    # Every run is continued by another only if the links loop: start from the latest.
    _, latest = max(heads or [(str(c), str(r)) for r, _, c in rows])
    chain: list[ArchivedRun] = []
    seen: set[str] = set()
    run_id: str | None = latest
    while run_id is not None and run_id not in seen and len(chain) < MAX_CHAIN:
        seen.add(run_id)
        run = await _read_run(tx, workflow_id, run_id)
        if run is None:
            break  # the run it continues was never archived: the chain starts here
        chain.append(run)
        run_id = run.previous_run_id
    return list(reversed(chain))


def continues(events: Sequence[Any]) -> str | None:
    """The run a run's ledger continues (its first event's ``previous_run_id``), if any."""
    first = events[0] if events else None
    if isinstance(first, dict) and first.get("type") == "LedgerContinued":
        return str(first.get("previous_run_id"))
    return None


def _ends_signed(report: LedgerReport, last_seq: int) -> LedgerReport:
    """``report``, failed unless the run's last event is a signed head covering the event
    before it: how a run that continued as new ends (the next run links to that head)."""
    end = report.last_signed
    if end is not None and end.seq == last_seq and end.covers_seq == last_seq - 1:
        return report
    return report.model_copy(
        update={
            "ok": False,
            "broken_at": last_seq,
            "reason": "the run continued as new, but its ledger does not end with a signed "
            "head over its last event: events after a signed head were removed",
        }
    )


def _names_another_run(run: OfferedRun) -> str | None:
    """Why the ledger belongs to another run, if its ``WorkflowStarted`` names one."""
    for event in run.events:
        if isinstance(event, dict) and event.get("type") == "WorkflowStarted":
            named = (event.get("workflow_id"), event.get("run_id"))
            if named != (run.workflow_id, run.run_id):
                return (
                    f"its WorkflowStarted names workflow {str(named[0])[:80]!r} run "
                    f"{str(named[1])[:80]!r}, not this run: a ledger of another run"
                )
            return None
    return None
