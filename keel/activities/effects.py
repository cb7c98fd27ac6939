"""The side-effect record: perform each external effect once, whatever Temporal retries.

Activities run at least once. A tool with an external effect takes an idempotency key
derived from the workflow and the step (never the attempt) and calls ``perform_once``:

1. the key's lock is taken (serializes two workers, or a retry racing its first attempt);
2. a ``performed`` record for the key is returned as is (``replayed=True``), without acting;
3. otherwise the intent is recorded (tool, sha256 of the canonical request JSON, time),
   the provider acts with the same key as *its* idempotency key, and the provider's id and
   result are recorded as ``performed``.

A worker killed between acting and recording leaves an ``intent`` row; the retry acts
again and the provider, deduplicating on the key, returns its first action. The record is a
SQLite file by default and PostgreSQL when ``KEEL_DATABASE_URL`` names one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from keel.activities.sqlstore import PostgresStore, SqliteStore, SqlStore, Tx
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
Act = Callable[[str], Awaitable[tuple[str, dict[str, Any]]]]
"""``act(key)`` performs the effect, passing ``key`` to the provider; returns its id and result."""


class EffectConflictError(KeelUserError):
    """The idempotency key was already used for a different tool or request."""


class EffectEntry(BaseModel):
    """One row of the record."""

    idempotency_key: str
    tool: str
    request_sha256: str
    status: str
    """``intent`` (acting, or an attempt died before recording) or ``performed``."""
    provider_id: str | None
    result: dict[str, Any] | None
    attempts: int
    intent_at: datetime
    performed_at: datetime | None


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class EffectRecord:
    """The shared record of effects over a ``SqlStore`` (``store`` is open to the fakes too)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r})"

    async def perform_once(
        self, key: str, tool: str, request: dict[str, Any], act: Act
    ) -> tuple[EffectReceipt, dict[str, Any]]:
        """Perform the effect of ``key`` once; returns its receipt and the provider's result.

        Raises:
            EffectConflictError: ``key`` was recorded for another tool or another request.
        """
        if not key:
            raise ValueError("an effect needs a non-empty idempotency key")
        request_json = canonical_json(request)
        digest = hashlib.sha256(request_json.encode()).hexdigest()
        await self.store.ensure_schema(EFFECTS_TABLE, EFFECTS_DDL)

        async def intend(tx: Tx) -> tuple[str, str] | None:
            row = await tx.fetchone(
                f"SELECT tool, request_sha256, status, provider_id, result_json "
                f"FROM {EFFECTS_TABLE} WHERE idempotency_key = ?",
                key,
            )
            if row is None:
                await tx.execute(
                    f"INSERT INTO {EFFECTS_TABLE} (idempotency_key, tool, request_sha256, "
                    "request_json, status, attempts, intent_at) "
                    "VALUES (?, ?, ?, ?, 'intent', 1, ?)",
                    key,
                    tool,
                    digest,
                    request_json,
                    _now(),
                )
                return None
            known_tool, known_digest, status, provider_id, result_json = row
            if (known_tool, known_digest) != (tool, digest):
                raise EffectConflictError(
                    f"idempotency key {key!r} was already used for {known_tool} with request "
                    f"sha256 {known_digest[:12]}; this call is {tool} with {digest[:12]}: "
                    "derive the key from the workflow and the step, one key per effect"
                )
            if status == "performed":
                return provider_id, result_json
            await tx.execute(
                f"UPDATE {EFFECTS_TABLE} SET attempts = attempts + 1 WHERE idempotency_key = ?",
                key,
            )
            return None

        async with self.store.session(hold=f"keel-effect:{key}") as session:
            recorded = await session.transaction(intend)
            if recorded is not None:
                provider_id, result_json = recorded
                receipt = EffectReceipt(idempotency_key=key, provider_id=provider_id, replayed=True)
                return receipt, json.loads(result_json)
            provider_id, result = await act(key)
            result_json = canonical_json(result)

            async def performed(tx: Tx) -> None:
                await tx.execute(
                    f"UPDATE {EFFECTS_TABLE} SET status = 'performed', provider_id = ?, "
                    "result_json = ?, performed_at = ? WHERE idempotency_key = ?",
                    provider_id,
                    result_json,
                    _now(),
                    key,
                )

            await session.transaction(performed)
        receipt = EffectReceipt(idempotency_key=key, provider_id=provider_id, replayed=False)
        return receipt, json.loads(result_json)

    async def get(self, key: str) -> EffectEntry | None:
        """The record of ``key``, if any."""
        await self.store.ensure_schema(EFFECTS_TABLE, EFFECTS_DDL)

        async def read(tx: Tx) -> EffectEntry | None:
            row = await tx.fetchone(
                f"SELECT idempotency_key, tool, request_sha256, status, provider_id, "
                f"result_json, attempts, intent_at, performed_at "
                f"FROM {EFFECTS_TABLE} WHERE idempotency_key = ?",
                key,
            )
            if row is None:
                return None
            names = (*EffectEntry.model_fields,)
            values = dict(zip(names, row, strict=True))
            values["result"] = json.loads(row[5]) if row[5] is not None else None
            return EffectEntry.model_validate(values)

        return await self.store.transaction(read)

    async def aclose(self) -> None:
        """Close the record's database connections."""
        await self.store.aclose()


class SqliteEffectRecord(EffectRecord):
    """The record in a SQLite file (WAL mode; workers on one machine share it)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(SqliteStore(path))


class PostgresEffectRecord(EffectRecord):
    """The record in PostgreSQL (table ``keel_effects``, created if missing)."""

    def __init__(self, url: str) -> None:
        super().__init__(PostgresStore(url))


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
