"""The SQLite store keeps its connections open between transactions (opening one costs
about 3 ms, a fifth of an effect's record), ties none up while a session waits, and never
hands on one that failed or was left inside a transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from keel.activities.effects import SqliteEffectRecord
from keel.activities.sqlstore import SqliteStore, StoreUnavailableError, Tx


class CountingStore(SqliteStore):
    """A SQLite store that counts the connections it opens."""

    opened = 0

    def _connect(self) -> sqlite3.Connection:
        self.opened += 1
        return super()._connect()


async def one(tx: Tx) -> int:
    row = await tx.fetchone("SELECT 1")
    assert row is not None
    return int(row[0])


async def test_sequential_sessions_share_one_connection(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "db.sqlite3")
    for _ in range(20):
        assert await store.transaction(one) == 1
        async with store.session(hold="a-lock") as session:
            await session.transaction(one)
    assert store.opened == 1
    await store.aclose()
    assert await store.transaction(one) == 1  # a closed store opens a fresh one
    assert store.opened == 2


async def test_sessions_held_at_once_tie_up_no_connection_and_idle_ones_are_capped(
    tmp_path: Path,
) -> None:
    # A session holding its lock while a provider acts keeps no connection: transactions
    # take one and give it back, so four sessions held at once share one.
    store = CountingStore(tmp_path / "db.sqlite3", max_idle_connections=2)
    inside = asyncio.Event()
    release = asyncio.Event()
    held = 0

    async def hold_a_session(name: str) -> None:
        nonlocal held
        async with store.session(hold=name) as session:
            await session.transaction(one)
            held += 1
            if held == 4:
                inside.set()
            await release.wait()
            await session.transaction(one)

    tasks = [asyncio.create_task(hold_a_session(f"lock-{i}")) for i in range(4)]
    await inside.wait()
    assert store.opened == 1
    release.set()
    await asyncio.gather(*tasks)
    assert store.opened == 1
    # Connections beyond the cap are closed when given back: take three out at once.
    conns = [await store._take() for _ in range(3)]
    assert store.opened == 3  # the idle one, then two new
    for conn in conns:
        store._give_back(conn, reusable=True)
    assert len(store._idle) == 2
    await store.aclose()


async def test_a_connection_the_database_failed_under_is_not_reused(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "db.sqlite3")
    await store.transaction(one)

    async def fails(tx: Tx) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(StoreUnavailableError):
        await store.transaction(fails)
    await store.transaction(one)
    assert store.opened == 2
    await store.aclose()


async def test_a_session_cancelled_inside_a_transaction_gives_no_connection_back(
    tmp_path: Path,
) -> None:
    store = CountingStore(tmp_path / "db.sqlite3")
    started = asyncio.Event()

    async def slow(tx: Tx) -> None:
        await tx.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(store.transaction(slow))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.transaction(one) == 1
    assert store.opened == 2
    await store.aclose()


async def test_effects_recorded_through_pooled_connections_replay(tmp_path: Path) -> None:
    record = SqliteEffectRecord(tmp_path / "effects.sqlite3")
    calls = 0

    async def act(key: str) -> tuple[str, dict[str, str]]:
        nonlocal calls
        calls += 1
        return f"sent-{key}", {"to": "a@example.com"}

    for _ in range(3):
        receipts = [
            (await record.perform_once(f"k{i}", "send_email", {"i": i}, act))[0] for i in range(5)
        ]
    assert calls == 5
    assert all(r.replayed for r in receipts)
    await record.aclose()


async def test_an_effect_takes_only_the_lock_waits_and_the_commits_to_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # BEGIN IMMEDIATE (it may wait for another process's lock) and COMMIT (fsync) run in a
    # thread; the single-row statements between them run on the event loop, where a hop
    # to a thread would cost more than they do.
    record = SqliteEffectRecord(tmp_path / "effects.sqlite3")

    async def act(key: str) -> tuple[str, dict[str, str]]:
        return f"sent-{key}", {"to": "a@example.com"}

    await record.perform_once("warm", "send_email", {"i": 0}, act)  # schema, connection
    hops: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", repr(func)))
        return await to_thread(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    receipt, result = await record.perform_once("k", "send_email", {"i": 1}, act)
    assert (receipt.replayed, receipt.recorded, result) == (False, True, {"to": "a@example.com"})
    assert hops == ["execute", "commit", "execute", "commit"]
    again, _ = await record.perform_once("k", "send_email", {"i": 1}, act)
    assert again.replayed
    await record.aclose()
