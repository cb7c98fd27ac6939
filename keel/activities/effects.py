"""The side-effect record: perform each external effect once, and never guess about one.

Activities run at least once. A tool with an external effect takes an idempotency key
derived from the workflow and the step (never the attempt) and calls ``perform_once``:

1. the key's lock is taken (serializes two workers, or a retry racing its first attempt);
2. a ``performed`` (or ``confirmed_performed``) record is returned as is, without acting;
3. otherwise the intent is recorded (tool, sha256 of the canonical request JSON, time),
   the provider acts with the same key as *its* idempotency key, and the provider's id and
   result are recorded as ``performed``.

States of a key (``EffectStatus``)::

    (none) -> intent -> performed
              intent -> not_performed          the provider refused: nothing happened
              intent -> unknown                a later attempt found the intent unfinished
              unknown -> performed             lookup found the effect at the provider
              unknown -> intent                lookup found nothing, or policy ``resend``
              unknown -> confirmed_performed | confirmed_not_performed   (a person)
              not_performed, confirmed_not_performed -> intent          (acted again)

An attempt holds the key's lock while it acts, so an attempt that takes the lock and finds
``intent`` knows the earlier attempt ended without recording: it died after it may have
acted, or its record write failed. That outcome is *unknown*: the row says so (when, found
by which attempt), and the tool's declared policy decides, never a silent resend or skip:

* ``lookup``: ``lookup(key)`` asks the provider; found -> ``performed`` (not acted again),
  not found -> acted again;
* ``resend``: acted again with the same key (the receiver deduplicates, e.g. Message-ID);
* ``escalate`` (the default): ``EffectOutcomeUnknownError`` until a person resolves the key
  with ``resolve`` (``confirmed_performed`` or ``confirmed_not_performed``).

An act that knows it did nothing (the provider refused, or could not be reached before
anything was sent) raises ``NotPerformed(error)``: the row says ``not_performed`` and the
retry acts again. Any other exception from the act leaves ``intent`` (maybe acted).

The ``performed`` write after a successful act is retried with backoff (heartbeating inside
an activity) for ``record_retry_seconds``, bounded by the activity's remaining time; if the
database stays down the receipt says ``recorded=False`` and the caller records the effect
with ``record_performed`` (a tool's ``record`` activity, retried by the workflow), so a
failed write never makes anyone act again. The record is a SQLite file by default and
PostgreSQL when ``KEEL_DATABASE_URL`` names one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity

from keel.activities.sqlstore import (
    PostgresStore,
    Session,
    SqliteStore,
    SqlStore,
    StoreUnavailableError,
    Tx,
)
from keel.contracts.effects import UnknownOutcome, UnknownOutcomePolicy
from keel.contracts.tools import EffectReceipt
from keel.errors import KeelUserError
from keel.settings import KeelSettings

EFFECTS_TABLE = "keel_effects"
EFFECTS_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {EFFECTS_TABLE} (
        idempotency_key TEXT PRIMARY KEY,
        tool TEXT NOT NULL,
        request_sha256 TEXT NOT NULL,
        request_json TEXT NOT NULL,
        status TEXT NOT NULL,
        provider_id TEXT,
        result_json TEXT,
        attempts INTEGER NOT NULL,
        intent_at TEXT NOT NULL,
        performed_at TEXT
    )""",
)
EFFECTS_COLUMNS = {
    EFFECTS_TABLE: {
        "provider_ref": "TEXT",
        "failure": "TEXT",
        "unknown_at": "TEXT",
        "unknown_found_by": "TEXT",
        "resolution": "TEXT",
        "resolved_by": "TEXT",
        "resolved_at": "TEXT",
    }
}
"""Columns added after the first version: added to an older table when missing."""
Act = Callable[[str], Awaitable[tuple[str, dict[str, Any]]]]
"""``act(key)`` performs the effect, passing ``key`` to the provider; returns its id and result."""
Lookup = Callable[[str], Awaitable[tuple[str, dict[str, Any]] | None]]
"""``lookup(key)`` asks the provider for the effect of ``key``: its id and result, or None."""
_COLUMNS = (
    "idempotency_key, tool, request_sha256, status, provider_id, result_json, attempts, "
    "intent_at, performed_at, provider_ref, failure, unknown_at, unknown_found_by, "
    "resolution, resolved_by, resolved_at"
)


class EffectStatus(StrEnum):
    """The state of one key in the record (see the module docstring)."""

    INTENT = "intent"
    PERFORMED = "performed"
    NOT_PERFORMED = "not_performed"
    UNKNOWN = "unknown"
    CONFIRMED_PERFORMED = "confirmed_performed"
    CONFIRMED_NOT_PERFORMED = "confirmed_not_performed"


DONE = (EffectStatus.PERFORMED, EffectStatus.CONFIRMED_PERFORMED)
UNFINISHED = (EffectStatus.INTENT, EffectStatus.UNKNOWN)


class EffectConflictError(KeelUserError):
    """The idempotency key was already used for a different tool or request."""


class EffectOutcomeUnknownError(Exception):
    """Nobody knows whether the effect of the key happened; a person must resolve it."""

    def __init__(self, outcome: UnknownOutcome) -> None:
        super().__init__(
            f"the outcome of {outcome.tool} with idempotency key {outcome.idempotency_key!r} "
            f"is unknown: an attempt recorded its intent at {outcome.intent_at.isoformat()} and "
            f"ended without recording the result (found by {outcome.found_by}); policy "
            f"{outcome.policy!r}: a person must confirm whether it happened"
        )
        self.outcome = outcome


class NotPerformed(Exception):
    """Raised by an act that knows the provider did nothing; ``error`` is re-raised."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class EffectEntry(BaseModel):
    """One row of the record."""

    idempotency_key: str
    tool: str
    request_sha256: str
    status: EffectStatus
    provider_id: str | None
    result: dict[str, Any] | None
    attempts: int
    """Entries into ``perform_once`` for the key (1 unless an attempt was retried)."""
    intent_at: datetime
    performed_at: datetime | None
    provider_ref: str | None = None
    """The provider's id known before acting (an email's Message-ID), if any."""
    failure: str | None = None
    """Why the last attempt did not perform the effect (``not_performed``)."""
    unknown_at: datetime | None = None
    unknown_found_by: str | None = None
    resolution: str | None = None
    """How an unknown outcome was resolved: ``lookup:found``, ``lookup:absent``, ``resend``,
    ``person``."""
    resolved_by: str | None = None
    resolved_at: datetime | None = None


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _attempt_name(entries: int) -> str:
    if activity.in_activity():
        info = activity.info()
        return f"record entry {entries}, activity attempt {info.attempt} of {info.workflow_id}"
    return f"record entry {entries}"


def _heartbeat(*details: Any) -> None:
    if activity.in_activity():
        activity.heartbeat(*details)


class EffectRecord:
    """The shared record of effects over a ``SqlStore`` (``store`` is open to the fakes too).

    Args:
        store: the database.
        record_retry_seconds: how long a failed ``performed`` write is retried before the
            receipt says ``recorded=False`` (inside an activity, at most until 2 s before
            its start-to-close timeout).
    """

    def __init__(self, store: SqlStore, *, record_retry_seconds: float = 20.0) -> None:
        self.store = store
        self.record_retry_seconds = record_retry_seconds

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r})"

    async def _schema(self) -> None:
        await self.store.ensure_schema(EFFECTS_TABLE, EFFECTS_DDL, columns=EFFECTS_COLUMNS)

    async def perform_once(
        self,
        key: str,
        tool: str,
        request: dict[str, Any],
        act: Act,
        *,
        policy: UnknownOutcomePolicy = "escalate",
        lookup: Lookup | None = None,
        provider_ref: str | None = None,
    ) -> tuple[EffectReceipt, dict[str, Any]]:
        """Perform the effect of ``key`` once; returns its receipt and the provider's result.

        ``policy`` says what happens when the outcome of an earlier attempt is unknown
        (``lookup`` needs ``lookup``); ``provider_ref`` is the provider's id of the effect
        when it is known before acting.

        Raises:
            EffectConflictError: ``key`` was recorded for another tool or another request.
            EffectOutcomeUnknownError: the outcome is unknown and the policy is ``escalate``.
            StoreUnavailableError: the database could not be reached before acting.
        """
        if not key:
            raise ValueError("an effect needs a non-empty idempotency key")
        if policy == "lookup" and lookup is None:
            raise ValueError("policy 'lookup' needs a lookup function")
        request_json = canonical_json(request)
        digest = hashlib.sha256(request_json.encode()).hexdigest()
        await self._schema()
        entering = _Entering(key, tool, digest, request_json, policy, provider_ref)
        async with self.store.session(hold=f"keel-effect:{key}") as session:
            step = await session.transaction(entering.enter)
            if step.replay is not None:
                return _replayed(key, *step.replay, resolved_by=step.resolved_by)
            if step.unknown is not None:
                if policy == "escalate":
                    raise EffectOutcomeUnknownError(step.unknown)
                assert lookup is not None
                found = await lookup(key)
                await session.transaction(lambda tx: _after_lookup(tx, key, found))
                if found is not None:
                    provider_id, result = found
                    return _replayed(key, provider_id, canonical_json(result), "lookup")
            try:
                provider_id, result = await act(key)
            except NotPerformed as refused:
                await self._not_performed(session, key, refused.error)
                raise refused.error from refused.error.__cause__
            result_json = canonical_json(result)
            recorded = await self._performed(session, key, provider_id, result_json)
        receipt = EffectReceipt(
            idempotency_key=key,
            provider_id=provider_id,
            replayed=False,
            recorded=recorded,
            unknown_resolved_by=step.resolved_by,
        )
        return receipt, json.loads(result_json)

    async def _not_performed(self, session: Session, key: str, error: BaseException) -> None:
        """Say the act did nothing; if the database is down the row stays ``intent`` (the
        next attempt then treats the outcome as unknown: cautious, never a silent resend)."""

        async def write(tx: Tx) -> None:
            await tx.execute(
                f"UPDATE {EFFECTS_TABLE} SET status = ?, failure = ? "
                "WHERE idempotency_key = ? AND status = ?",
                EffectStatus.NOT_PERFORMED.value,
                f"{type(error).__name__}: {error}"[:1000],
                key,
                EffectStatus.INTENT.value,
            )

        for run in (session.transaction, self.store.transaction):  # then a fresh connection
            with contextlib.suppress(StoreUnavailableError):
                await run(write)
                return

    async def _performed(
        self, session: Session, key: str, provider_id: str, result_json: str
    ) -> bool:
        """Record the effect as performed, retrying a failed write; False if it never landed."""
        deadline = asyncio.get_running_loop().time() + self._retry_budget()
        delay = 0.1
        write = _performed_write(key, provider_id, result_json)
        try:
            await session.transaction(write)
            return True
        except StoreUnavailableError:
            pass  # the session's connection is gone; fresh ones from here on
        while asyncio.get_running_loop().time() + delay < deadline:
            _heartbeat({"recording": key})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                await self.store.transaction(write)
                return True
            except StoreUnavailableError:
                continue
        return False

    def _retry_budget(self) -> float:
        budget = self.record_retry_seconds
        if activity.in_activity():
            info = activity.info()
            if info.start_to_close_timeout is not None:
                ends = info.started_time + info.start_to_close_timeout - timedelta(seconds=2)
                budget = min(budget, (ends - datetime.now(UTC)).total_seconds())
        return max(budget, 0.0)

    async def record_performed(self, key: str, provider_id: str, result: dict[str, Any]) -> bool:
        """Record an effect performed by an attempt whose own write failed; True if this call
        changed the row (False: it was already recorded or resolved by a person).

        Raises:
            StoreUnavailableError: the database could not be reached (retry).
            KeyError: the record has no intent for ``key``.
        """
        await self._schema()
        write = _performed_write(key, provider_id, canonical_json(result))

        async def record(tx: Tx) -> bool:
            row = await tx.fetchone(
                f"SELECT status FROM {EFFECTS_TABLE} WHERE idempotency_key = ?", key
            )
            if row is None:
                raise KeyError(f"the side-effect record has no intent for {key!r}")
            if EffectStatus(row[0]) not in UNFINISHED:
                return False
            await write(tx)
            return True

        async with self.store.session(hold=f"keel-effect:{key}") as session:
            return await session.transaction(record)

    async def resolve(
        self,
        key: str,
        *,
        performed: bool,
        by: str,
        provider_id: str | None = None,
        note: str | None = None,
    ) -> EffectEntry:
        """A person's answer about an unknown outcome: ``confirmed_performed`` or
        ``confirmed_not_performed`` (the next ``perform_once`` acts again).

        A key already ``performed`` (its write landed late) or already resolved is left as is.

        Raises:
            KeyError: the record has no entry for ``key``.
            StoreUnavailableError: the database could not be reached (retry).
        """
        await self._schema()

        async def write(tx: Tx) -> None:
            row = await tx.fetchone(
                f"SELECT status, provider_ref FROM {EFFECTS_TABLE} WHERE idempotency_key = ?",
                key,
            )
            if row is None:
                raise KeyError(f"the side-effect record has no entry for {key!r}")
            if EffectStatus(row[0]) not in UNFINISHED:
                return
            status = (
                EffectStatus.CONFIRMED_PERFORMED
                if performed
                else EffectStatus.CONFIRMED_NOT_PERFORMED
            )
            result = {"confirmed_by": by, "performed": performed, "note": note}
            await tx.execute(
                f"UPDATE {EFFECTS_TABLE} SET status = ?, provider_id = ?, result_json = ?, "
                "resolution = 'person', resolved_by = ?, resolved_at = ? "
                "WHERE idempotency_key = ?",
                status.value,
                (provider_id or row[1] or f"confirmed-by:{by}") if performed else None,
                canonical_json(result),
                by,
                _now(),
                key,
            )

        async with self.store.session(hold=f"keel-effect:{key}") as session:
            await session.transaction(write)
        entry = await self.get(key)
        assert entry is not None
        return entry

    async def get(self, key: str) -> EffectEntry | None:
        """The record of ``key``, if any."""
        await self._schema()

        async def read(tx: Tx) -> EffectEntry | None:
            row = await tx.fetchone(
                f"SELECT {_COLUMNS} FROM {EFFECTS_TABLE} WHERE idempotency_key = ?", key
            )
            if row is None:
                return None
            names = [name.strip() for name in _COLUMNS.split(",")]
            values = dict(zip(names, row, strict=True))
            raw = values.pop("result_json")
            values["result"] = json.loads(raw) if raw is not None else None
            return EffectEntry.model_validate(values)

        return await self.store.transaction(read)

    async def aclose(self) -> None:
        """Close the record's database connections."""
        await self.store.aclose()


class _Step(BaseModel):
    """What ``_Entering.enter`` decided: replay a recorded result, resolve an unknown
    outcome, or act (``resolved_by`` says how an unknown outcome before it was resolved)."""

    replay: tuple[str, str] | None = None
    unknown: UnknownOutcome | None = None
    resolved_by: str | None = None


class _Entering:
    """The first transaction of ``perform_once``, under the key's lock."""

    def __init__(
        self,
        key: str,
        tool: str,
        digest: str,
        request_json: str,
        policy: UnknownOutcomePolicy,
        provider_ref: str | None,
    ) -> None:
        self.key, self.tool, self.digest, self.request_json = key, tool, digest, request_json
        self.policy, self.provider_ref = policy, provider_ref

    async def enter(self, tx: Tx) -> _Step:
        row = await tx.fetchone(
            f"SELECT tool, request_sha256, status, provider_id, result_json, attempts, "
            f"intent_at, unknown_at, unknown_found_by, resolution "
            f"FROM {EFFECTS_TABLE} WHERE idempotency_key = ?",
            self.key,
        )
        if row is None:
            await tx.execute(
                f"INSERT INTO {EFFECTS_TABLE} (idempotency_key, tool, request_sha256, "
                "request_json, status, attempts, intent_at, provider_ref) "
                "VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
                self.key,
                self.tool,
                self.digest,
                self.request_json,
                EffectStatus.INTENT.value,
                _now(),
                self.provider_ref,
            )
            return _Step()
        tool, digest, raw_status, provider_id, result_json, attempts, intent_at, *unknown = row
        if (tool, digest) != (self.tool, self.digest):
            raise EffectConflictError(
                f"idempotency key {self.key!r} was already used for {tool} with request "
                f"sha256 {digest[:12]}; this call is {self.tool} with {self.digest[:12]}: "
                "derive the key from the workflow and the step, one key per effect"
            )
        status = EffectStatus(raw_status)
        if status in DONE:
            resolved = "person" if status is EffectStatus.CONFIRMED_PERFORMED else None
            return _Step(replay=(provider_id, result_json), resolved_by=resolved)
        entries = attempts + 1
        if status in (EffectStatus.NOT_PERFORMED, EffectStatus.CONFIRMED_NOT_PERFORMED):
            await self._intend_again(tx, entries)
            confirmed = status is EffectStatus.CONFIRMED_NOT_PERFORMED
            return _Step(resolved_by="person" if confirmed else None)
        unknown_at, found_by, _ = unknown
        if status is EffectStatus.INTENT:  # the attempt that recorded it ended unrecorded
            unknown_at, found_by = _now(), _attempt_name(entries)
            await tx.execute(
                f"UPDATE {EFFECTS_TABLE} SET status = ?, attempts = ?, unknown_at = ?, "
                "unknown_found_by = ? WHERE idempotency_key = ?",
                EffectStatus.UNKNOWN.value,
                entries,
                unknown_at,
                found_by,
                self.key,
            )
        else:
            await tx.execute(
                f"UPDATE {EFFECTS_TABLE} SET attempts = ? WHERE idempotency_key = ?",
                entries,
                self.key,
            )
        if self.policy == "resend":
            await self._intend_again(tx, entries, resolution="resend")
            return _Step(resolved_by="resend")
        outcome = UnknownOutcome(
            idempotency_key=self.key,
            tool=self.tool,
            policy=self.policy,
            intent_at=datetime.fromisoformat(intent_at),
            unknown_at=datetime.fromisoformat(unknown_at),
            attempts=entries,
            found_by=found_by,
            provider_ref=self.provider_ref,
        )
        return _Step(unknown=outcome, resolved_by="lookup" if self.policy == "lookup" else None)

    async def _intend_again(self, tx: Tx, entries: int, resolution: str | None = None) -> None:
        await tx.execute(
            f"UPDATE {EFFECTS_TABLE} SET status = ?, attempts = ?, intent_at = ?, failure = NULL, "
            "resolution = COALESCE(?, resolution) WHERE idempotency_key = ?",
            EffectStatus.INTENT.value,
            entries,
            _now(),
            resolution,
            self.key,
        )


async def _after_lookup(tx: Tx, key: str, found: tuple[str, dict[str, Any]] | None) -> None:
    if found is None:  # the provider never saw it: act again
        await tx.execute(
            f"UPDATE {EFFECTS_TABLE} SET status = ?, intent_at = ?, resolution = 'lookup:absent' "
            "WHERE idempotency_key = ?",
            EffectStatus.INTENT.value,
            _now(),
            key,
        )
        return
    provider_id, result = found
    await _performed_write(key, provider_id, canonical_json(result))(tx)
    await tx.execute(
        f"UPDATE {EFFECTS_TABLE} SET resolution = 'lookup:found' WHERE idempotency_key = ?", key
    )


def _performed_write(
    key: str, provider_id: str, result_json: str
) -> Callable[[Tx], Awaitable[None]]:
    async def write(tx: Tx) -> None:
        await tx.execute(
            f"UPDATE {EFFECTS_TABLE} SET status = ?, provider_id = ?, result_json = ?, "
            "performed_at = ? WHERE idempotency_key = ? AND status IN (?, ?)",
            EffectStatus.PERFORMED.value,
            provider_id,
            result_json,
            _now(),
            key,
            *(status.value for status in UNFINISHED),
        )

    return write


def _replayed(
    key: str, provider_id: str, result_json: str, resolved_by: str | None = None
) -> tuple[EffectReceipt, dict[str, Any]]:
    receipt = EffectReceipt(
        idempotency_key=key,
        provider_id=provider_id,
        replayed=True,
        unknown_resolved_by=resolved_by,
    )
    return receipt, json.loads(result_json)


class SqliteEffectRecord(EffectRecord):
    """The record in a SQLite file (WAL mode; workers on one machine share it)."""

    def __init__(self, path: str | Path, *, record_retry_seconds: float = 20.0) -> None:
        super().__init__(SqliteStore(path), record_retry_seconds=record_retry_seconds)


class PostgresEffectRecord(EffectRecord):
    """The record in PostgreSQL (table ``keel_effects``, created if missing)."""

    def __init__(self, url: str, *, record_retry_seconds: float = 20.0) -> None:
        super().__init__(PostgresStore(url), record_retry_seconds=record_retry_seconds)


def open_effect_record(settings: KeelSettings) -> EffectRecord:
    """PostgreSQL when ``KEEL_DATABASE_URL`` is set, else ``$KEEL_DATA_DIR/effects.sqlite3``.

    Nothing connects until the first use.
    """
    url = settings.database_url
    if not url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteEffectRecord(settings.data_dir / "effects.sqlite3")
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresEffectRecord(url)
    if url.startswith("sqlite:///"):
        return SqliteEffectRecord(url.removeprefix("sqlite:///"))
    raise KeelUserError(
        "KEEL_DATABASE_URL must be a PostgreSQL URL (postgresql://user@host:5432/db) or "
        f"sqlite:///path; got one starting {url.split(':', 1)[0]!r}"
    )
