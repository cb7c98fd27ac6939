"""The side-effect record's states on SQLite and PostgreSQL: an unknown outcome is never
silently repeated or skipped, and a failed record write is retried, never acted again."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from keel.activities.effects import (
    EFFECTS_DDL,
    EFFECTS_TABLE,
    EffectOutcomeUnknownError,
    EffectRecord,
    EffectStatus,
    NotPerformed,
    PostgresEffectRecord,
    SqliteEffectRecord,
)
from keel.activities.sqlstore import PostgresStore, SqliteStore, StoreUnavailableError
from keel.contracts.tools import CATALOG
from tests.conftest import free_port
from tests.test_effects import PG_URL

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
async def record(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EffectRecord]:
    effects: EffectRecord = (
        PostgresEffectRecord(PG_URL)
        if request.param == "postgres"
        else SqliteEffectRecord(tmp_path / "effects.sqlite3")
    )
    yield effects
    await effects.aclose()


@pytest.fixture
def key() -> str:
    return f"test-{uuid.uuid4().hex}/r1/step"


class Provider:
    """Counts its actions; ``die`` makes the next action raise after acting (the worker died
    between the provider's acceptance and the record's update)."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.die = False

    async def act(self, key: str) -> tuple[str, dict[str, Any]]:
        self.actions.append(key)
        if self.die:
            self.die = False
            raise ConnectionResetError("the worker died after the provider acted")
        return f"p-{len(self.actions)}", {"n": len(self.actions)}

    async def lookup(self, key: str) -> tuple[str, dict[str, Any]] | None:
        return (
            (f"p-{len(self.actions)}", {"n": len(self.actions), "found": True})
            if (key in self.actions)
            else None
        )


async def died_after_acting(record: EffectRecord, key: str, provider: Provider) -> None:
    provider.die = True
    with pytest.raises(ConnectionResetError):
        await record.perform_once(key, "notify", {"x": 1}, provider.act)
    entry = await record.get(key)
    assert entry is not None and entry.status is EffectStatus.INTENT


async def test_an_unfinished_intent_escalates_by_default_and_nothing_is_acted(
    record: EffectRecord, key: str
) -> None:
    provider = Provider()
    await died_after_acting(record, key, provider)
    for entries in (2, 3):  # every attempt until a person answers: escalated, not acted
        with pytest.raises(EffectOutcomeUnknownError) as caught:
            await record.perform_once(key, "notify", {"x": 1}, provider.act, provider_ref="<m>")
        outcome = caught.value.outcome
        assert (outcome.idempotency_key, outcome.tool, outcome.policy) == (
            key,
            "notify",
            "escalate",
        )
        assert outcome.attempts == entries and outcome.provider_ref == "<m>"
        assert outcome.found_by == "record entry 2"  # the attempt that found it
        assert outcome.unknown_at >= outcome.intent_at
        assert key in str(caught.value) and "a person must confirm" in str(caught.value)
    assert provider.actions == [key]
    entry = await record.get(key)
    assert entry is not None and entry.status is EffectStatus.UNKNOWN
    assert entry.unknown_at is not None and entry.unknown_found_by == "record entry 2"
    assert entry.attempts == 3 and entry.provider_id is None


async def test_a_person_confirming_it_happened_ends_it_without_acting(
    record: EffectRecord, key: str
) -> None:
    provider = Provider()
    await died_after_acting(record, key, provider)
    with pytest.raises(EffectOutcomeUnknownError):
        await record.perform_once(key, "notify", {"x": 1}, provider.act)
    entry = await record.resolve(key, performed=True, by="support.lead.chen", provider_id="<m>")
    assert entry.status is EffectStatus.CONFIRMED_PERFORMED
    assert (entry.resolution, entry.resolved_by) == ("person", "support.lead.chen")
    assert entry.resolved_at is not None and entry.provider_id == "<m>"

    receipt, result = await record.perform_once(key, "notify", {"x": 1}, provider.act)
    assert receipt.replayed and receipt.provider_id == "<m>"
    assert receipt.unknown_resolved_by == "person"
    assert result["confirmed_by"] == "support.lead.chen"
    assert provider.actions == [key]
    # A second answer changes nothing.
    again = await record.resolve(key, performed=False, by="someone.else")
    assert again.status is EffectStatus.CONFIRMED_PERFORMED


async def test_a_person_confirming_it_did_not_happen_lets_the_next_attempt_act_once(
    record: EffectRecord, key: str
) -> None:
    provider = Provider()
    await died_after_acting(record, key, provider)
    with pytest.raises(EffectOutcomeUnknownError):
        await record.perform_once(key, "notify", {"x": 1}, provider.act)
    entry = await record.resolve(key, performed=False, by="support.lead.chen", note="not in log")
    assert entry.status is EffectStatus.CONFIRMED_NOT_PERFORMED
    receipt, _ = await record.perform_once(key, "notify", {"x": 1}, provider.act)
    assert not receipt.replayed and receipt.unknown_resolved_by == "person"
    assert provider.actions == [key, key]
    after = await record.get(key)
    assert after is not None and after.status is EffectStatus.PERFORMED
    replay, _ = await record.perform_once(key, "notify", {"x": 1}, provider.act)
    assert replay.replayed and len(provider.actions) == 2


async def test_policy_resend_acts_again_and_says_so(record: EffectRecord, key: str) -> None:
    provider = Provider()
    await died_after_acting(record, key, provider)
    receipt, _ = await record.perform_once(key, "notify", {"x": 1}, provider.act, policy="resend")
    assert not receipt.replayed and receipt.unknown_resolved_by == "resend"
    assert provider.actions == [key, key]
    entry = await record.get(key)
    assert entry is not None and (entry.status, entry.resolution) == ("performed", "resend")
    assert entry.unknown_found_by == "record entry 2"


async def test_policy_lookup_records_what_the_provider_did_without_acting_again(
    record: EffectRecord, key: str
) -> None:
    provider = Provider()
    await died_after_acting(record, key, provider)
    receipt, result = await record.perform_once(
        key, "notify", {"x": 1}, provider.act, policy="lookup", lookup=provider.lookup
    )
    assert receipt.replayed and receipt.unknown_resolved_by == "lookup"
    assert result == {"n": 1, "found": True} and receipt.provider_id == "p-1"
    assert provider.actions == [key]
    entry = await record.get(key)
    assert entry is not None and (entry.status, entry.resolution) == ("performed", "lookup:found")


async def test_policy_lookup_acts_when_the_provider_never_saw_it(
    record: EffectRecord, key: str
) -> None:
    provider = Provider()

    async def lost_before_the_provider(k: str) -> tuple[str, dict[str, Any]]:
        raise TimeoutError("no answer")  # ambiguous: it might have arrived

    with pytest.raises(TimeoutError):
        await record.perform_once(key, "notify", {"x": 1}, lost_before_the_provider)
    receipt, _ = await record.perform_once(
        key, "notify", {"x": 1}, provider.act, policy="lookup", lookup=provider.lookup
    )
    assert not receipt.replayed and receipt.unknown_resolved_by == "lookup"
    assert provider.actions == [key]
    entry = await record.get(key)
    assert entry is not None and (entry.status, entry.resolution) == ("performed", "lookup:absent")
    with pytest.raises(ValueError, match="lookup function"):
        await record.perform_once(key, "notify", {"x": 1}, provider.act, policy="lookup")


async def test_a_refusal_is_not_performed_and_the_retry_acts(
    record: EffectRecord, key: str
) -> None:
    provider = Provider()

    async def refused(k: str) -> tuple[str, dict[str, Any]]:
        raise NotPerformed(PermissionError("550 no such user"))

    with pytest.raises(PermissionError, match="550"):
        await record.perform_once(key, "notify", {"x": 1}, refused)
    entry = await record.get(key)
    assert entry is not None and entry.status is EffectStatus.NOT_PERFORMED
    assert entry.failure == "PermissionError: 550 no such user"
    receipt, _ = await record.perform_once(key, "notify", {"x": 1}, provider.act)
    assert not receipt.replayed and receipt.unknown_resolved_by is None
    entry = await record.get(key)
    assert entry is not None and (entry.status, entry.attempts, entry.failure) == (
        "performed",
        2,
        None,
    )


async def test_resolving_a_key_the_record_never_saw_is_refused(
    record: EffectRecord, key: str
) -> None:
    with pytest.raises(KeyError, match="no entry"):
        await record.resolve(key, performed=True, by="x")
    with pytest.raises(KeyError, match="no intent"):
        await record.record_performed(key, "p", {})


def test_the_catalog_declares_how_each_side_effect_resolves() -> None:
    import keel.scenarios.incident.tools  # noqa: F401  (registers the incident tools)

    policies = {
        name: spec.unknown_outcome
        for name in CATALOG.names()
        if (spec := CATALOG.get(name)) is not None and spec.side_effects
    }
    assert policies["send_email"] == "escalate"
    for tool in ("rollback_deploy", "roll_forward_deploy", "update_incident"):
        assert policies[tool] == "lookup"


# --- a record write that fails after the effect ---------------------------------------------


@pytest.fixture
def held_sqlite(tmp_path: Path) -> Iterator[tuple[Path, threading.Event]]:
    """A SQLite file and an event: set it to make ``lock_sqlite`` hold the write lock."""
    yield tmp_path / "effects.sqlite3", threading.Event()


def lock_sqlite(path: Path, release: threading.Event, taken: threading.Event) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        taken.set()
        release.wait(30)
        conn.rollback()


async def test_a_failed_performed_write_is_retried_not_acted_again(
    tmp_path: Path, key: str
) -> None:
    path = tmp_path / "effects.sqlite3"
    record = EffectRecord(SqliteStore(path, busy_timeout_seconds=0.1), record_retry_seconds=10)
    provider = Provider()
    release, taken = threading.Event(), threading.Event()

    async def act_then_lock(k: str) -> tuple[str, dict[str, Any]]:
        out = await provider.act(k)
        threading.Thread(target=lock_sqlite, args=(path, release, taken), daemon=True).start()
        await asyncio.to_thread(taken.wait, 10)  # the database is locked when the write comes
        asyncio.get_running_loop().call_later(1.0, release.set)
        return out

    try:
        receipt, _ = await record.perform_once(key, "notify", {"x": 1}, act_then_lock)
        assert receipt.recorded and not receipt.replayed and provider.actions == [key]
        entry = await record.get(key)
        assert entry is not None and entry.status is EffectStatus.PERFORMED
    finally:
        await record.aclose()


async def test_a_write_that_never_lands_comes_back_pending_and_is_recorded_later(
    tmp_path: Path, key: str
) -> None:
    path = tmp_path / "effects.sqlite3"
    record = EffectRecord(SqliteStore(path, busy_timeout_seconds=0.1), record_retry_seconds=0.5)
    provider = Provider()
    release, taken = threading.Event(), threading.Event()

    async def act_then_lock(k: str) -> tuple[str, dict[str, Any]]:
        out = await provider.act(k)
        threading.Thread(target=lock_sqlite, args=(path, release, taken), daemon=True).start()
        await asyncio.to_thread(taken.wait, 10)
        return out

    try:
        receipt, result = await record.perform_once(key, "notify", {"x": 1}, act_then_lock)
        assert not receipt.recorded and receipt.provider_id == "p-1"
        with pytest.raises(StoreUnavailableError):
            await record.record_performed(key, receipt.provider_id, result)
        release.set()
        await asyncio.sleep(0.2)
        assert await record.record_performed(key, receipt.provider_id, result)
        assert not await record.record_performed(key, receipt.provider_id, result)  # once
        replay, again = await record.perform_once(key, "notify", {"x": 1}, provider.act)
        assert replay.replayed and again == result and provider.actions == [key]
    finally:
        release.set()
        await record.aclose()


# --- the database itself ---------------------------------------------------------------------


async def test_an_unreachable_postgres_is_unavailable_not_a_crash(key: str) -> None:
    store = PostgresStore(
        f"postgresql://postgres@127.0.0.1:{free_port()}/test",
        connect_timeout_seconds=1,
        acquire_timeout_seconds=1,
    )
    record = EffectRecord(store)
    provider = Provider()
    try:
        with pytest.raises(StoreUnavailableError, match="PostgreSQL unavailable"):
            await record.perform_once(key, "notify", {"x": 1}, provider.act)
    finally:
        await record.aclose()
    assert provider.actions == []


async def test_the_pool_replaces_connections_the_server_cut(key: str) -> None:
    name = f"keel-test-{uuid.uuid4().hex[:8]}"
    record = PostgresEffectRecord(f"{PG_URL}?application_name={name}")
    provider = Provider()
    try:
        await record.perform_once(f"{key}-1", "notify", {"x": 1}, provider.act)
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (name,),
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        receipt, _ = await record.perform_once(f"{key}-2", "notify", {"x": 1}, provider.act)
        assert not receipt.replayed and receipt.recorded
    finally:
        await record.aclose()


OLD_SHA256 = hashlib.sha256(b'{"x":1}').hexdigest()
OLD_ROWS = [
    ("old-performed", "performed", "p-old", '{"n":1}'),
    ("old-intent", "intent", None, None),
]


@pytest.fixture(params=BACKENDS)
async def old_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[EffectRecord, str]]:
    """A record over a table made by the first version (no unknown-outcome columns)."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    rows = [(f"{prefix}-{k}", status, pid, res) for k, status, pid, res in OLD_ROWS]
    insert = (
        f"INSERT INTO {EFFECTS_TABLE} (idempotency_key, tool, request_sha256, request_json, "
        "status, provider_id, result_json, attempts, intent_at) VALUES "
        f"(?, 'notify', '{OLD_SHA256}', "
        "'{\"x\":1}', ?, ?, ?, 1, '2026-01-01T00:00:00+00:00')"
    )
    record: EffectRecord
    if request.param == "sqlite":
        path = tmp_path / "old.sqlite3"
        with closing(sqlite3.connect(path)) as conn:
            conn.execute(EFFECTS_DDL[0])
            conn.executemany(insert, rows)
            conn.commit()
        record = SqliteEffectRecord(path)
        yield record, prefix
        await record.aclose()
        return
    schema = prefix.replace("-", "_")
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(f"SET search_path TO {schema}")
        admin.execute(EFFECTS_DDL[0])
        with admin.cursor() as cursor:
            cursor.executemany(insert.replace("?", "%s"), rows)
    record = PostgresEffectRecord(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        yield record, prefix
    finally:
        await record.aclose()
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_a_table_of_the_first_version_is_migrated_in_place(
    old_database: tuple[EffectRecord, str],
) -> None:
    record, prefix = old_database
    provider = Provider()
    done, result = await record.perform_once(
        f"{prefix}-old-performed", "notify", {"x": 1}, provider.act
    )
    assert done.replayed and done.provider_id == "p-old" and result == {"n": 1}
    # An intent left by the old version is an unknown outcome now, not a silent resend.
    with pytest.raises(EffectOutcomeUnknownError):
        await record.perform_once(f"{prefix}-old-intent", "notify", {"x": 1}, provider.act)
    entry = await record.get(f"{prefix}-old-intent")
    assert entry is not None and entry.status is EffectStatus.UNKNOWN
    assert provider.actions == []
    fresh, _ = await record.perform_once(f"{prefix}-new", "notify", {"x": 1}, provider.act)
    assert not fresh.replayed and provider.actions == [f"{prefix}-new"]
