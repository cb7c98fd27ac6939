"""The payroll system this example pays through: a local SQLite file standing in for a real
payroll API. Like a real one, it honours the idempotency key: a second payout with the same
key returns the first one instead of paying again."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from keel import AppContext
from temporalio import activity

from expense_approval.contracts import RECORD_PAYOUT, Payout, PayoutRecorded

SCHEMA = """CREATE TABLE IF NOT EXISTS payouts (
    scope TEXT NOT NULL, idempotency_key TEXT NOT NULL, payout_id TEXT NOT NULL,
    claim_id TEXT NOT NULL, employee TEXT NOT NULL, amount_usd REAL NOT NULL,
    category TEXT NOT NULL, PRIMARY KEY (scope, idempotency_key))"""


def database(data_dir: Path) -> Path:
    """The payroll file under ``KEEL_DATA_DIR``."""
    return data_dir / "expense-payroll.sqlite3"


class Payroll:
    """Payouts in ``path``, kept apart per ``scope`` (one per worker in tests and demos)."""

    def __init__(self, path: Path, scope: str = "default") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.scope = scope
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def payouts(self) -> list[dict[str, Any]]:
        """Every payout of this scope, oldest first."""
        cursor = self._db.execute(
            "SELECT * FROM payouts WHERE scope = ? ORDER BY rowid", (self.scope,)
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    @activity.defn(name=RECORD_PAYOUT)
    async def record_payout(self, payout: Payout) -> PayoutRecorded:
        """Pay the claim, once per idempotency key."""
        key = payout.idempotency_key
        if not key:
            raise ValueError("a payout needs an idempotency key")
        row = self._db.execute(
            "SELECT payout_id FROM payouts WHERE scope = ? AND idempotency_key = ?",
            (self.scope, key),
        ).fetchone()
        if row is not None:
            return PayoutRecorded(payout_id=row[0], idempotency_key=key, replayed=True)
        payout_id = f"PAY-{uuid.uuid4().hex[:10]}"
        claim = payout.claim
        self._db.execute(
            "INSERT INTO payouts VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                self.scope,
                key,
                payout_id,
                claim.claim_id,
                claim.employee,
                claim.amount_usd,
                payout.category,
            ),
        )
        return PayoutRecorded(payout_id=payout_id, idempotency_key=key)


@asynccontextmanager
async def open_payroll(context: AppContext) -> AsyncIterator[Sequence[Callable[..., Any]]]:
    """The app's activities for one worker (``App.activities``)."""
    payroll = Payroll(database(context.settings.data_dir), context.scope)
    try:
        yield [payroll.record_payout]
    finally:
        payroll.close()
