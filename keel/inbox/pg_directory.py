"""The directory as a PostgreSQL table, for teams that keep reviewers in a database.

One row a principal: ``subject`` (primary key), ``display_name``, ``email``, ``roles`` (a
JSON array), ``password_hash`` (argon2, or NULL for accounts that sign in through OIDC only)
and ``delegations`` (a JSON array of ``{"to", "until"}``). The table is created if missing;
rows are read on each look-up, so a change in the table applies at once.
"""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
from psycopg import sql
from pydantic import ValidationError

from keel.errors import KeelUserError
from keel.inbox.directory import Principal

_COLUMNS = ("subject", "display_name", "email", "roles", "password_hash", "delegations")
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
CONNECT_TIMEOUT_SECONDS = 5


class PostgresDirectory:
    """Principals in the PostgreSQL table ``table`` of the database at ``url``."""

    def __init__(self, url: str, table: str) -> None:
        if not _TABLE_NAME.match(table):
            raise KeelUserError(f"directory table {table!r}: use lower-case letters, digits, _")
        self.url = url
        self.table = table
        self.description = f"postgresql table {table}"
        self._created = False

    def get(self, subject: str) -> Principal | None:
        """The principal named ``subject``, if any."""
        rows = self._select(sql.SQL("WHERE subject = %s"), (subject,))
        return rows[0] if rows else None

    def principals(self) -> list[Principal]:
        """Every principal, by subject."""
        return self._select(sql.SQL("ORDER BY subject"), ())

    def put(self, principal: Principal) -> None:
        """Insert ``principal``, or replace the row of the same subject."""
        row = principal.model_dump(mode="json")
        values = [json.dumps(row[c]) if c in ("roles", "delegations") else row[c] for c in _COLUMNS]
        statement = sql.SQL(
            "INSERT INTO {t} ({cols}) VALUES ({vals}) ON CONFLICT (subject) DO UPDATE SET {sets}"
        ).format(
            t=sql.Identifier(self.table),
            cols=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
            vals=sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)),
            sets=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in _COLUMNS[1:]
            ),
        )
        self._execute(statement, values)

    def _select(self, tail: sql.SQL, params: tuple[Any, ...]) -> list[Principal]:
        statement = (
            sql.SQL("SELECT {cols} FROM {t} ").format(
                cols=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), t=sql.Identifier(self.table)
            )
            + tail
        )
        rows = self._execute(statement, params)
        try:
            return [
                Principal.model_validate(
                    {k: v for k, v in zip(_COLUMNS, row, strict=True) if v is not None}
                )
                for row in rows
            ]
        except ValidationError as err:
            raise KeelUserError(
                f"directory {self.description}: a row is malformed: {err}"
            ) from None

    def _execute(self, statement: sql.Composed, params: Any) -> list[tuple[Any, ...]]:
        try:
            with psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
            ) as conn:
                if not self._created:
                    conn.execute(self._create())
                    self._created = True
                cursor = conn.execute(statement, params)
                return list(cursor.fetchall()) if cursor.description else []
        except psycopg.Error as err:
            raise KeelUserError(f"directory {self.description}: {err}") from None

    def _create(self) -> sql.Composed:
        return sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} (subject text PRIMARY KEY, display_name text NOT "
            "NULL DEFAULT '', email text, roles jsonb NOT NULL DEFAULT '[]', password_hash "
            "text, delegations jsonb NOT NULL DEFAULT '[]')"
        ).format(t=sql.Identifier(self.table))
