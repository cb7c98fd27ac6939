"""A small async SQL store over SQLite or PostgreSQL.

The side-effect record and the fake provider systems of the sample worlds keep their state
in it, so every worker pointed at the same database shares that state. SQL is written once
with ``?`` placeholders and portable types (TEXT, INTEGER, ``ON CONFLICT ... DO UPDATE``).

Two kinds of serialization:

* ``Session.transaction(fn, lock=name)`` runs ``fn`` in a short write transaction that is
  serialized against every other transaction taking the same lock (PostgreSQL: a
  transaction-scoped advisory lock; SQLite: ``BEGIN IMMEDIATE``, which serializes all writers).
* ``store.session(hold=name)`` holds a named lock for the whole session, across awaits and
  processes, and the operating system releases it if the process dies (PostgreSQL: a
  session-level advisory lock on the session's connection; SQLite: ``flock`` on one of 256
  lock files next to the database). The side-effect record holds one while a provider acts.

SQLite connections are kept open between transactions (up to ``max_idle_connections``):
opening one costs about 3 ms, a fifth of a whole effect's record. A session holds no
connection of its own, so a session waiting on a provider ties none up. PostgreSQL
connections come from two ``psycopg_pool.AsyncConnectionPool`` (one for sessions that hold a
lock while a provider acts, one for short transactions, so a session waiting for a
transaction's connection can never starve the pool it holds one of). Each connection is
checked when it is taken, so a connection the server or the network cut is replaced, not
handed out. A database that cannot be reached (refused, cut, timed out, SQLite locked past
its busy timeout) raises
``StoreUnavailableError``: transient, retry later.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # imported when a PostgreSQL store is used: a SQLite worker never loads them
    import psycopg
    from psycopg_pool import AsyncConnectionPool

T = TypeVar("T")
Row = tuple[Any, ...]


class StoreUnavailableError(Exception):
    """The database could not be reached or did not answer in time (retry later)."""


def _pg_unavailable(err: BaseException) -> bool:
    import psycopg
    from psycopg_pool import PoolTimeout

    return isinstance(err, psycopg.OperationalError | psycopg.InterfaceError | PoolTimeout)


def _sqlite_unavailable(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, sqlite3.OperationalError) and any(
        word in text for word in ("locked", "unable to open", "disk i/o", "busy")
    )


class Tx(ABC):
    """Statements inside one transaction; placeholders are ``?``."""

    @abstractmethod
    async def fetchall(self, sql: str, *params: Any) -> list[Row]:
        """Every row the query returns."""

    async def fetchone(self, sql: str, *params: Any) -> Row | None:
        """The first row the query returns, or ``None``."""
        rows = await self.fetchall(sql, *params)
        return rows[0] if rows else None

    async def execute(self, sql: str, *params: Any) -> None:
        """Run a statement that returns no rows."""
        await self.fetchall(sql, *params)


class Session(ABC):
    """One connection; see ``SqlStore.session``."""

    @abstractmethod
    async def transaction(self, fn: Callable[[Tx], Awaitable[T]], *, lock: str | None = None) -> T:
        """Run ``fn`` in a write transaction serialized with others taking ``lock``."""


def lock_id(name: str) -> int:
    """A signed 64-bit advisory lock id for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class _KeyedLocks:
    """In-process asyncio locks by name, dropped when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(name, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


class SqlStore(ABC):
    """A database shared by workers."""

    def __init__(self) -> None:
        self._schemas: set[str] = set()
        self._held = _KeyedLocks()

    @abstractmethod
    def _open(self, hold: str | None) -> AbstractAsyncContextManager[Session]: ...

    @asynccontextmanager
    async def session(self, hold: str | None = None) -> AsyncIterator[Session]:
        """A connection, holding the named lock ``hold`` (if given) until the session ends."""
        if hold is None:
            async with self._open(None) as session:
                yield session
            return
        async with self._held.hold(hold), self._open(hold) as session:
            yield session

    async def transaction(self, fn: Callable[[Tx], Awaitable[T]], *, lock: str | None = None) -> T:
        """``fn`` in a write transaction on a fresh session."""
        async with self.session() as session:
            return await session.transaction(fn, lock=lock)

    async def ensure_schema(
        self,
        name: str,
        ddl: Sequence[str],
        *,
        columns: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """Run the ``CREATE ... IF NOT EXISTS`` statements of ``name`` once per store, then
        add the ``columns`` (table -> column -> SQL type) a table made by an older version
        lacks."""
        if name in self._schemas:
            return

        async def create(tx: Tx) -> None:
            for statement in ddl:
                await tx.execute(statement)
            for table, wanted in (columns or {}).items():
                have = await self._columns(tx, table)
                for column, sql_type in wanted.items():
                    if column not in have:
                        await tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")

        await self.transaction(create, lock="keel-schema")
        self._schemas.add(name)

    @abstractmethod
    async def _columns(self, tx: Tx, table: str) -> set[str]: ...

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release the store's connections."""


# --- SQLite ----------------------------------------------------------------------------------


class _SqliteTx(Tx):
    """Statements inside a ``BEGIN IMMEDIATE`` transaction.

    The write lock is held and WAL readers never wait, so a statement that touches a row or
    a few (``execute``, ``fetchone``: the effect record's, the archive's inserts) runs on the
    event loop: a thread hop costs more than the statement. ``fetchall``, which may return
    many rows, runs in a thread.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def fetchall(self, sql: str, *params: Any) -> list[Row]:
        return await asyncio.to_thread(lambda: self.conn.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, *params: Any) -> Row | None:
        cursor = self.conn.execute(sql, params)
        try:
            row: Row | None = cursor.fetchone()
        finally:
            cursor.close()  # the statement is done before the commit, not when collected
        return row

    async def execute(self, sql: str, *params: Any) -> None:
        self.conn.execute(sql, params).close()


class _SqliteSession(Session):
    """Transactions of one session; each takes an idle connection of the store and gives it
    back (the session's named lock is a file lock, not a connection's)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    async def transaction(self, fn: Callable[[Tx], Awaitable[T]], *, lock: str | None = None) -> T:
        # One writer per process at a time (SQLite has one writer anyway), so at most one
        # thread waits in BEGIN IMMEDIATE and the thread pool cannot fill with waiters.
        async with self.store._writer:
            conn = await self.store._take()
            broken = False
            try:
                await asyncio.to_thread(conn.execute, "BEGIN IMMEDIATE")
                result = await fn(_SqliteTx(conn))
                await asyncio.to_thread(conn.commit)
            except BaseException as err:
                if not isinstance(err, Exception):
                    # Cancelled: a thread may still be running a statement on the connection.
                    broken = True
                try:
                    conn.rollback()
                except sqlite3.Error:
                    broken = True
                if _sqlite_unavailable(err):
                    broken = True
                    raise StoreUnavailableError(f"SQLite database unavailable: {err}") from err
                raise
            finally:
                self.store._give_back(conn, reusable=not broken)
            return result


class SqliteStore(SqlStore):
    """A SQLite file in WAL mode (the directory is created).

    Args:
        path: the database file.
        busy_timeout_seconds: how long a statement waits for another process's write lock.
        max_idle_connections: connections kept open for the next transactions (a
            transaction takes one, or opens one when none is idle, and gives it back when it
            ends cleanly; a process runs its transactions one at a time, so one connection
            is usually all it opens).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_seconds: float = 30.0,
        max_idle_connections: int = 8,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.busy_timeout_seconds = busy_timeout_seconds
        self.max_idle_connections = max_idle_connections
        self._writer = asyncio.Lock()
        self._wal = False
        self._idle: list[sqlite3.Connection] = []
        self._locks_made = False

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_seconds,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_seconds * 1000)}")
            if not self._wal:
                self._enable_wal(conn)
                self._wal = True
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (persistent); SQLite does not wait on a busy switch, we do."""
        deadline = time.monotonic() + self.busy_timeout_seconds
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    async def _columns(self, tx: Tx, table: str) -> set[str]:
        return {str(row[1]) for row in await tx.fetchall(f"PRAGMA table_info({table})")}

    @asynccontextmanager
    async def _open(self, hold: str | None) -> AsyncIterator[Session]:
        lock_file = await self._flock(hold) if hold is not None else None
        try:
            yield _SqliteSession(self)
        finally:
            if lock_file is not None:
                lock_file.close()  # releases the flock

    async def _take(self) -> sqlite3.Connection:
        """An idle connection (the most recently used), else a new one."""
        if self._idle:
            return self._idle.pop()
        try:
            return await asyncio.to_thread(self._connect)
        except sqlite3.OperationalError as err:
            if _sqlite_unavailable(err):
                raise StoreUnavailableError(f"SQLite database unavailable: {err}") from err
            raise

    def _give_back(self, conn: sqlite3.Connection, *, reusable: bool) -> None:
        """Keep ``conn`` for the next session, unless it failed, is mid-transaction (a
        session cancelled inside one), or enough are idle already."""
        if reusable and not conn.in_transaction and len(self._idle) < self.max_idle_connections:
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        """Close the idle connections (sessions still open close theirs when they end)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _flock(self, name: str) -> IO[bytes]:
        """Exclusive ``flock`` on the lock file of ``name``'s stripe, polled without a thread."""
        directory = self.path.with_name(self.path.name + ".locks")
        if not self._locks_made:
            directory.mkdir(parents=True, exist_ok=True)
            self._locks_made = True
        stripe = hashlib.sha256(name.encode()).hexdigest()[:2]
        try:
            lock_file = open(directory / f"{stripe}.lock", "ab")  # noqa: SIM115 (returned open)
        except FileNotFoundError:  # the directory was removed since: make it again
            directory.mkdir(parents=True, exist_ok=True)
            lock_file = open(directory / f"{stripe}.lock", "ab")  # noqa: SIM115
        delay = 0.002
        try:
            while True:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return lock_file
                except BlockingIOError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
        except BaseException:
            lock_file.close()
            raise


# --- PostgreSQL ------------------------------------------------------------------------------


class _PgTx(Tx):
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def fetchall(self, sql: str, *params: Any) -> list[Row]:
        cursor = await self.conn.execute(sql.replace("?", "%s"), params)
        return await cursor.fetchall() if cursor.description else []


class _PgSession(Session):
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def transaction(self, fn: Callable[[Tx], Awaitable[T]], *, lock: str | None = None) -> T:
        import psycopg

        try:
            async with self.conn.transaction():
                if lock is not None:
                    await self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id(lock),))
                return await fn(_PgTx(self.conn))
        except (psycopg.OperationalError, psycopg.InterfaceError) as err:
            raise StoreUnavailableError(f"PostgreSQL unavailable: {err}") from err


class PostgresStore(SqlStore):
    """A PostgreSQL database through two connection pools (see the module docstring).

    Args:
        url: the ``postgresql://`` URL.
        connect_timeout_seconds: per connection attempt.
        max_connections: per pool (so at most twice this many connections).
        acquire_timeout_seconds: how long a session waits for a connection before the
            database counts as unavailable.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_seconds: int = 10,
        max_connections: int = 20,
        acquire_timeout_seconds: float = 15.0,
    ) -> None:
        super().__init__()
        self.url = url
        self.connect_timeout_seconds = connect_timeout_seconds
        self.max_connections = max_connections
        self.acquire_timeout_seconds = acquire_timeout_seconds
        self._pools: dict[bool, AsyncConnectionPool[Any]] = {}

    def __repr__(self) -> str:
        return "PostgresStore(<url>)"  # the URL may hold a password

    async def _pool(self, held: bool) -> AsyncConnectionPool[Any]:
        pool = self._pools.get(held)
        if pool is None:
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(
                self.url,
                min_size=0,
                max_size=self.max_connections,
                kwargs={
                    "autocommit": True,
                    "connect_timeout": self.connect_timeout_seconds,
                    **_CLIENT_KEEPALIVES,
                },
                configure=_server_keepalives,
                check=AsyncConnectionPool.check_connection,
                timeout=self.acquire_timeout_seconds,
                # Give up a failing reconnection soon: the next session starts a fresh one, so
                # a database back after an outage of minutes is used within seconds, not
                # after the pool's backoff has grown to match the outage.
                reconnect_timeout=max(self.acquire_timeout_seconds, 5.0),
                name=f"keel-{'held' if held else 'tx'}",
                open=False,
            )
            self._pools[held] = pool
            await pool.open(wait=False)
        return pool

    @asynccontextmanager
    async def _open(self, hold: str | None) -> AsyncIterator[Session]:
        pool = await self._pool(hold is not None)
        try:
            async with pool.connection() as conn:
                if hold is None:
                    yield _PgSession(conn)
                    return
                # Session-level: held across transactions, released when the connection ends
                # (or here, before the connection goes back to the pool).
                await conn.execute("SELECT pg_advisory_lock(%s)", (lock_id(hold),))
                try:
                    yield _PgSession(conn)
                finally:
                    await _unlock(conn, hold)
        except StoreUnavailableError:
            raise
        except Exception as err:
            if _pg_unavailable(err):
                raise StoreUnavailableError(f"PostgreSQL unavailable: {err}") from err
            raise

    async def _columns(self, tx: Tx, table: str) -> set[str]:
        rows = await tx.fetchall(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?",
            table,
        )
        return {str(row[0]) for row in rows}

    async def aclose(self) -> None:
        """Close both pools (and every connection in them)."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()


_CLIENT_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
"""libpq keepalives: a connection to a server that vanished without a reset (a network
partition) fails within ~25 s instead of the kernel's two hours."""


async def _server_keepalives(conn: psycopg.AsyncConnection[Any]) -> None:
    """The same on the server's side of the connection: a backend whose client vanished
    (and with it the advisory lock it holds for an effect in flight) ends within ~25 s."""
    await conn.execute(
        "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; "
        "SET tcp_keepalives_count = 3"
    )


async def _unlock(conn: psycopg.AsyncConnection[Any], name: str) -> None:
    """Release the session lock; a connection that cannot is closed (the server releases it
    then), so the pool never hands out a connection still holding a lock."""
    import psycopg

    try:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id(name),))
    except psycopg.Error:
        await conn.close()
