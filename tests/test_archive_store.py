"""The ledger archive's store, on SQLite and PostgreSQL, with real ledgers: runs are
appended verified (continue-as-new links checked against the archived run before), offered
again they change nothing, a different ledger for an archived run is refused and recorded,
a forged ledger is kept flagged, and the database itself refuses every change to what was
archived."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from temporalio.testing import WorkflowEnvironment

from keel.activities.archive_store import (
    CONFLICTS,
    EVENTS,
    RUNS,
    ArchiveStore,
    Inserted,
    OfferedRun,
    ledger_sha256,
)
from keel.activities.sqlstore import PostgresStore, SqliteStore, Tx
from keel.contracts.integrity import verify_ledger
from keel.contracts.signing import Keyring
from keel.testing import offline_settings
from keel.workers.keys import read_keyring
from tests.helpers import run_keel
from tests.ledger_forgeries import FORGERIES, RealLedgers, changed, index_of, record_ledgers

PG_URL = "postgresql://127.0.0.1:5432/test"
CLOSED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def real(
    ts_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> RealLedgers:
    return await record_ledgers(ts_env.client, tmp_path_factory.mktemp("archive"))


@pytest.fixture
def keyring(real: RealLedgers) -> Keyring:
    return read_keyring(real.keyring)


@pytest.fixture(params=["sqlite", "postgresql"])
async def archive(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ArchiveStore]:
    if request.param == "sqlite":
        async with ArchiveStore(SqliteStore(tmp_path / "archive.sqlite3")) as store:
            yield store
        return
    schema = f"keel_archive_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        async with ArchiveStore(PostgresStore(url)) as store:
            yield store
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def offered(records: list[dict[str, Any]], **changes: Any) -> list[OfferedRun]:
    """Each run of an export, as the archiver would offer it, oldest first."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_run.setdefault(record["run_id"], []).append(record)
    return [
        OfferedRun(
            workflow_id=run[0]["workflow_id"],
            run_id=run_id,
            workflow_type=changes.get("workflow_type", "ContractReview"),
            task_queue="keel",
            status=run[0]["status"],
            close_time=CLOSED + timedelta(seconds=index),
            events=[record["event"] for record in run],
        )
        for index, (run_id, run) in enumerate(by_run.items())
    ]


async def test_a_completed_run_is_archived_verified_and_read_back_as_stored(
    archive: ArchiveStore, real: RealLedgers, keyring: Keyring
) -> None:
    (run,) = offered(real.review)
    assert await archive.archive(run, keyring) == (Inserted.ARCHIVED, "")
    (stored,) = await archive.runs(real.review_id)
    assert stored.events == run.events and stored.verified and stored.verify_reason is None
    assert (stored.run_id, stored.status, stored.ended_by_keel) == (run.run_id, "COMPLETED", True)
    assert stored.head_hash == run.events[-1]["hash"]
    assert verify_ledger(stored.events, keyring=keyring, closed=True).ok
    counts = await archive.counts()
    assert (counts.executions, counts.runs, counts.events) == (1, 1, len(run.events))
    assert await archive.executions() == [real.review_id]
    assert await archive.executions(workflow_type="Other") == []


async def test_offered_again_a_run_changes_nothing(
    archive: ArchiveStore, real: RealLedgers, keyring: Keyring
) -> None:
    (run,) = offered(real.review)
    await archive.archive(run, keyring)
    before = await archive.counts()
    assert await archive.archive(run, keyring) == (Inserted.ALREADY, "")
    assert await archive.counts() == before


async def test_a_continued_execution_is_archived_run_by_run_with_its_links_checked(
    archive: ArchiveStore, real: RealLedgers, keyring: Keyring
) -> None:
    runs = offered(real.incident, workflow_type="IncidentInvestigation")
    assert [run.status for run in runs] == ["CONTINUED_AS_NEW", "CONTINUED_AS_NEW", "COMPLETED"]
    for run in runs:
        assert await archive.archive(run, keyring) == (Inserted.ARCHIVED, "")
    chain = await archive.runs(real.incident_id)
    assert [r.run_id for r in chain] == [r.run_id for r in runs]
    assert [r.previous_run_id for r in chain] == [None, runs[0].run_id, runs[1].run_id]
    assert all(r.verified for r in chain)
    whole = [event for r in chain for event in r.events]
    assert verify_ledger(whole, keyring=keyring, closed=True).ok


async def test_a_continued_run_whose_previous_run_is_missing_is_archived_flagged(
    archive: ArchiveStore, real: RealLedgers, keyring: Keyring
) -> None:
    last = offered(real.incident, workflow_type="IncidentInvestigation")[-1]
    outcome, why = await archive.archive(last, keyring)
    assert outcome is Inserted.ARCHIVED
    assert "which the archive does not hold: the continue-as-new link cannot be checked" in why
    (stored,) = await archive.runs(real.incident_id)
    assert not stored.verified and stored.events == last.events
    assert (await archive.counts()).failed_verification == 1


async def test_a_different_ledger_for_an_archived_run_is_refused_and_recorded(
    archive: ArchiveStore, real: RealLedgers, keyring: Keyring
) -> None:
    (run,) = offered(real.review)
    await archive.archive(run, keyring)
    forged = OfferedRun(**{**run.__dict__, "events": FORGERIES["resealed-chain"](run.events)})
    outcome, why = await archive.archive(forged, keyring)
    assert outcome is Inserted.CONFLICT
    assert f"run {run.run_id} of {real.review_id} was offered with a ledger" in why
    (stored,) = await archive.runs(real.review_id)
    assert stored.events == run.events and stored.verified  # the first one is kept
    counts = await archive.counts()
    assert counts.conflicts == 1 and counts.conflicted[0][:2] == (real.review_id, run.run_id)
    assert (await archive.archive(forged, keyring))[0] is Inserted.CONFLICT
    assert (await archive.counts()).conflicts == 1  # the same conflict is recorded once


@pytest.mark.parametrize("name", ["changed-field", "resealed-chain", "truncated", "untrusted-key"])
async def test_a_forged_ledger_is_archived_flagged_never_dropped(
    archive: ArchiveStore, real: RealLedgers, keyring: Keyring, name: str
) -> None:
    (run,) = offered(real.review)
    forged = OfferedRun(**{**run.__dict__, "events": FORGERIES[name](run.events)})
    expected = verify_ledger(forged.events, keyring=keyring, closed=True)
    assert not expected.ok
    assert await archive.archive(forged, keyring) == (Inserted.ARCHIVED, expected.reason)
    (stored,) = await archive.runs(real.review_id)
    assert stored.events == forged.events
    assert (stored.verified, stored.broken_at) == (False, expected.broken_at)
    assert (await archive.counts()).flagged == [(real.review_id, run.run_id, expected.reason)]


async def test_another_run_s_ledger_offered_under_this_run_is_flagged(
    archive: ArchiveStore, real: RealLedgers, keyring: Keyring
) -> None:
    (run,) = offered(real.review)
    elsewhere = OfferedRun(**{**run.__dict__, "run_id": str(uuid.uuid4())})
    outcome, why = await archive.archive(elsewhere, keyring)
    assert outcome is Inserted.ARCHIVED
    assert f"names workflow {real.review_id!r} run {run.run_id!r}, not this run" in why


async def test_the_database_refuses_to_change_or_remove_what_was_archived(
    archive: ArchiveStore, real: RealLedgers, keyring: Keyring
) -> None:
    (run,) = offered(real.review)
    await archive.archive(run, keyring)
    await archive.archive(
        OfferedRun(**{**run.__dict__, "events": FORGERIES["dropped-event"](run.events)}), keyring
    )
    forged_event = changed(run.events, 3, reviewer="mallory")[3]
    statements = [
        f"UPDATE {EVENTS} SET event_json = '{{}}' WHERE seq = 4",
        f"UPDATE {RUNS} SET verified = 1, status = 'COMPLETED'",
        f"UPDATE {CONFLICTS} SET reason = 'nothing'",
        f"DELETE FROM {EVENTS} WHERE seq = 4",
        f"DELETE FROM {RUNS}",
        f"DELETE FROM {CONFLICTS}",
    ]
    if isinstance(archive.store, PostgresStore):
        statements += [f"TRUNCATE {EVENTS}", f"TRUNCATE {RUNS}"]
    for statement in statements:

        async def change(tx: Tx, sql: str = statement) -> None:
            await tx.execute(sql)

        with pytest.raises((sqlite3.IntegrityError, psycopg.Error), match="append-only"):
            await archive.store.transaction(change)
    (stored,) = await archive.runs(real.review_id)
    assert stored.events == run.events and stored.events[3] != forged_event
    assert (await archive.counts()).conflicts == 1


async def test_hostile_ids_are_stored_and_read_as_data(
    archive: ArchiveStore, real: RealLedgers, keyring: Keyring
) -> None:
    (run,) = offered(real.review)
    for hostile in ["../../etc/passwd", "a/b", "x'); DROP TABLE keel_archive_runs; --", "é\u202e"]:
        odd = OfferedRun(**{**run.__dict__, "workflow_id": hostile})
        outcome, why = await archive.archive(odd, keyring)
        assert outcome is Inserted.ARCHIVED and "not this run" in why
        assert [r.workflow_id for r in await archive.runs(hostile)] == [hostile]
    assert await archive.runs(real.review_id) == []


async def test_readers_of_an_archive_that_does_not_exist_create_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "archive.sqlite3"
    async with ArchiveStore.open(offline_settings(archive_url=str(path))) as archive:
        assert await archive.runs("anything") == []
        assert await archive.executions() == []
        assert (await archive.counts()).runs == 0
    assert not path.parent.exists()


def test_an_archive_url_of_another_kind_is_refused() -> None:
    from keel.errors import KeelUserError

    with pytest.raises(KeelUserError, match="KEEL_ARCHIVE_URL must be a PostgreSQL URL"):
        ArchiveStore.open(offline_settings(archive_url="mysql://db/keel"))


async def test_the_watermark_only_moves_forward(archive: ArchiveStore) -> None:
    assert await archive.watermark() is None
    await archive.advance_watermark(CLOSED)
    await archive.advance_watermark(CLOSED - timedelta(hours=1))
    assert await archive.watermark() == CLOSED
    await archive.advance_watermark(CLOSED + timedelta(seconds=1))
    assert await archive.watermark() == CLOSED + timedelta(seconds=1)


@pytest.mark.integration
async def test_keel_archive_verify_finds_rows_changed_behind_the_triggers_back(
    real: RealLedgers, keyring: Keyring, tmp_path: Path
) -> None:
    """With no Temporal server, ``keel ledger``/``verify --from-archive`` read the archive;
    someone who owns the database can drop the triggers, but the digests and signatures
    still give a change away (``keel archive verify``)."""
    path = tmp_path / "archive.sqlite3"
    async with ArchiveStore(SqliteStore(path)) as archive:
        for run in [*offered(real.review), *offered(real.incident, workflow_type="Incident")]:
            await archive.archive(run, keyring)
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": "127.0.0.1:1",
        "KEEL_ARCHIVE_URL": str(path),
        "KEEL_DATA_DIR": str(tmp_path / "data"),
    }
    keys = ("--keys", str(real.keyring))
    missing = await run_keel("archive", "export", "nope", env=env, expect=1)
    assert "exported 0 ledger events of 0 archived executions (1 not in the archive)" in missing
    every = await run_keel("archive", "export", "--workflow-type", "Incident", env=env, expect=0)
    exported = [json.loads(line) for line in every.splitlines() if line.startswith("{")]
    assert [r["event"] for r in exported] == real.events(real.incident)
    printed = await run_keel("ledger", real.incident_id, "--from-archive", env=env, expect=0)
    assert f"read the ledger of '{real.incident_id}' from the ledger archive" in printed
    one = await run_keel("verify", real.review_id, "--from-archive", *keys, env=env, expect=0)
    assert f"{real.review_id}: verified" in one
    unknown = await run_keel("verify", "nope", "--from-archive", *keys, env=env, expect=1)
    assert "workflow 'nope' is not in the ledger archive" in unknown
    clean = await run_keel("archive", "verify", *keys, env=env, expect=0)
    assert f"{real.review_id}: verified (1 runs, {len(real.review)} events)" in clean
    assert f"{real.incident_id}: verified (3 runs, {len(real.incident)} events)" in clean

    decided = index_of(real.events(real.review), "GateDecided")
    forged = changed(real.events(real.review), decided, reviewer="mallory")[decided]
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"DROP TRIGGER {EVENTS}_no_update")
        db.execute(
            f"UPDATE {EVENTS} SET event_json = ? WHERE workflow_id = ? AND seq = ?",
            (json.dumps(forged), real.review_id, decided + 1),
        )
        db.commit()
    out = await run_keel("archive", "verify", *keys, "-o", "json", env=env, expect=1)
    reports = {r["workflow_id"]: r for r in map(json.loads, out.splitlines())}
    assert reports[real.incident_id]["ok"]
    assert not reports[real.review_id]["ok"]
    assert (
        "no longer match the digest taken when it was archived"
        in (reports[real.review_id]["reason"])
    )

    async with ArchiveStore(SqliteStore(path)) as archive:
        (stored,) = await archive.runs(real.review_id)
    with closing(sqlite3.connect(path)) as db:  # the digest rewritten too: the hash chain
        db.execute(f"DROP TRIGGER {RUNS}_no_update")
        db.execute(f"UPDATE {RUNS} SET ledger_sha256 = ?", (ledger_sha256(stored.events),))
        db.commit()
    out = await run_keel("archive", "verify", real.review_id, *keys, env=env, expect=1)
    assert f"{real.review_id}: FAILED: event {decided + 1}: hash does not match" in out


@pytest.mark.integration
async def test_the_archive_s_events_verify_with_the_standalone_verifier(
    real: RealLedgers, keyring: Keyring, tmp_path: Path
) -> None:
    """docs/archive.md's query takes a PostgreSQL archive's events out in the export format;
    the standalone verifier, without Keel, verifies them."""
    schema = f"keel_archive_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        async with ArchiveStore(PostgresStore(f"{PG_URL}?options=-csearch_path%3D{schema}")) as a:
            for run in offered(real.incident, workflow_type="Incident"):
                await a.archive(run, keyring)
        query = DOCS_QUERY.replace("'c-42'", "%s")
        with psycopg.connect(PG_URL, autocommit=True) as db:
            db.execute(f"SET search_path TO {schema}")
            rows = db.execute(query, (real.incident_id,)).fetchall()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    export = tmp_path / "incident.jsonl"
    export.write_text("".join(json.dumps(row[0]) + "\n" for row in rows))
    assert len(rows) == len(real.incident)
    verifier = Path(__file__).parents[1] / "verifier" / "keel_verify.py"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(verifier),
        str(export),
        "--keys",
        str(real.keyring),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert real.incident_id in out.decode()


DOCS_QUERY = (
    (Path(__file__).parents[1] / "docs" / "archive.md")
    .read_text()
    .split('psql "$KEEL_ARCHIVE_URL" -At -c "')[1]
    .split('" > c-42.jsonl')[0]
)


async def test_a_huge_ledger_is_archived_whole(archive: ArchiveStore) -> None:
    """20,000 events (the largest ledgers stay far below: runs continue as new), stored
    and read back exactly, in order, with odd text intact."""
    events = [
        {"seq": n, "type": "Note", "text": "\x00\ud800 é <script>" if n % 999 == 0 else "x" * 80}
        for n in range(1, 20_001)
    ]
    run = OfferedRun("huge", "run-1", "Big", "keel", "FAILED", CLOSED, events)
    outcome, why = await archive.archive(run, None)
    assert outcome is Inserted.ARCHIVED and why  # flagged: not a real chain
    (stored,) = await archive.runs("huge")
    assert stored.events == events
    assert (await archive.counts()).events == 20_000


@pytest.mark.integration
async def test_an_archiver_role_that_may_only_insert_archives_and_cannot_rewrite(
    real: RealLedgers, keyring: Keyring
) -> None:
    """docs/archive.md's deployment: the owner creates the tables; the archiver's role may
    read and insert the archive (and keep its operational state), runs no DDL, and can
    neither change a row nor drop the triggers that guard them."""
    schema = f"keel_archive_test_{uuid.uuid4().hex[:12]}"
    role = f"{schema}_archiver"
    owner_url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        env = {**os.environ, "KEEL_ARCHIVE_URL": owner_url, "TEMPORAL_ADDRESS": "127.0.0.1:1"}
        assert "archive ready" in await run_keel("archive", "init", env=env, expect=0)
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            archived = f"{schema}.{RUNS}, {schema}.{EVENTS}, {schema}.{CONFLICTS}"
            admin.execute(f"GRANT SELECT, INSERT ON {archived} TO {role}")
            tables = f"{schema}.keel_archive_pending, {schema}.keel_archive_state"
            admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {role}")
        role_url = f"postgresql://{role}@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
        async with ArchiveStore(PostgresStore(role_url)) as archiver:
            for run in offered(real.incident, workflow_type="Incident"):
                assert (await archiver.archive(run, keyring))[0] is Inserted.ARCHIVED
            await archiver.advance_watermark(CLOSED)
            assert len(await archiver.runs(real.incident_id)) == 3
            for statement in (
                f"UPDATE {RUNS} SET verified = 1",
                f"DROP TRIGGER {RUNS}_append_only ON {RUNS}",
                f"DELETE FROM {EVENTS}",
            ):

                async def change(tx: Tx, sql: str = statement) -> None:
                    await tx.execute(sql)

                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    await archiver.store.transaction(change)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
            admin.execute(f"DROP ROLE {role}")


def test_keel_archive_status_text_names_the_lag_and_escapes_what_runs_recorded() -> None:
    from keel.archive import ArchiveCounts, ArchiveLag
    from keel.cli.archive import status_lines

    counts = ArchiveCounts(
        executions=2,
        runs=4,
        events=90,
        failed_verification=1,
        conflicts=0,
        pending=1,
        no_ledger=0,
        watermark="2026-12-01T12:00:00.000000+00:00",
        last_archived_at="2026-12-01T12:00:01.000000+00:00",
        oldest_pending_close_time="2026-12-01T11:00:00.000000+00:00",
        flagged=[("wf\x1b[31m", "run-1", "hash does not match\n<b>")],
    )
    lag = ArchiveLag(counts, 600.0, 3, False, "2026-12-01T11:00:00+00:00", 7200.0)
    text = "\n".join(status_lines("SqliteStore('a.sqlite3')", lag))
    assert "holds 2 executions, 4 runs, 90 events" in text
    assert "watermark: 2026-12-01T12:00:00.000000+00:00, 10 min ago" in text
    assert "lag: 3 closed runs not archived yet; the oldest closed 2.0 h ago" in text
    assert "failed verification on insert: 1" in text and "pending (unreadable so far): 1" in text
    assert "\x1b" not in text and "\n<b>" not in text  # control characters escaped
