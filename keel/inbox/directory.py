"""Who the reviewers are: principals with roles, password hashes and delegations.

A directory is a JSON file (the embedded default, and small teams) or a PostgreSQL table
(``keel.inbox.pg_directory``); both answer the same three questions: who is this subject,
does this password open their account, and who has delegated to them while away. Passwords
are stored only as argon2id hashes (argon2-cffi's defaults, tuned by its authors for
interactive logins).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from keel.contracts.gates import MAX_NAME_CHARS
from keel.errors import KeelUserError

MAX_ROLES = 20
"""Most roles one principal holds (what a signed review may carry)."""
MAX_PASSWORD_CHARS = 1_000
"""Longest password accepted (argon2 hashes any length; a bound keeps requests small)."""
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
"""Verified against when the subject is unknown, so a wrong name takes as long as a wrong
password and sign-in does not reveal which accounts exist."""

Subject = Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"^[^\s/]+$")


class Delegation(BaseModel):
    """The owner's gates may be decided by ``to``, on the owner's behalf, until ``until``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: str = Subject
    until: AwareDatetime


class Principal(BaseModel):
    """A reviewer as the directory knows them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Subject
    """The name gate specs, signatures and the ledger use (``legal.priya``)."""
    display_name: str = Field("", max_length=MAX_NAME_CHARS)
    email: str | None = Field(None, max_length=MAX_NAME_CHARS)
    roles: tuple[str, ...] = Field((), max_length=MAX_ROLES)
    password_hash: str | None = None
    """argon2 hash; None: the account cannot sign in with a password (OIDC only)."""
    delegations: tuple[Delegation, ...] = ()

    @property
    def name(self) -> str:
        """What pages call them."""
        return self.display_name or self.subject

    def delegates_to(self, subject: str, now: datetime) -> bool:
        """Whether ``subject`` may act for this principal at ``now``."""
        return any(d.to == subject and now < d.until for d in self.delegations)


class Directory(Protocol):
    """Where principals come from (``FileDirectory``, ``PostgresDirectory``)."""

    description: str
    """Where the directory is, for messages and the signature's ``auth.issuer``."""

    def get(self, subject: str) -> Principal | None:
        """The principal named ``subject``, if any."""
        ...

    def principals(self) -> list[Principal]:
        """Every principal (for delegation look-ups and ``keel inbox users list``)."""
        ...


def hash_password(password: str) -> str:
    """The argon2id hash to store for ``password``.

    Raises:
        KeelUserError: the password is empty or longer than ``MAX_PASSWORD_CHARS``.
    """
    if not password or len(password) > MAX_PASSWORD_CHARS:
        raise KeelUserError(f"a password is 1 to {MAX_PASSWORD_CHARS} characters")
    return _HASHER.hash(password)


def authenticate(directory: Directory, subject: str, password: str) -> Principal | None:
    """The principal if ``password`` opens ``subject``'s account, else None (slow on
    purpose: run it off the event loop)."""
    principal = directory.get(subject) if 0 < len(subject) <= MAX_NAME_CHARS else None
    stored = principal.password_hash if principal else None
    try:
        _HASHER.verify(stored or _DUMMY_HASH, password[:MAX_PASSWORD_CHARS])
    except (VerificationError, InvalidHashError):
        return None
    return principal if stored else None


def delegators_of(directory: Directory, subject: str, now: datetime) -> list[Principal]:
    """The principals who delegated to ``subject`` and whose delegation holds at ``now``."""
    return [p for p in directory.principals() if p.delegates_to(subject, now)]


class DirectoryFile(BaseModel):
    """The JSON file's shape: ``{"principals": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    principals: list[Principal] = Field(default_factory=list)


class FileDirectory:
    """Principals in a JSON file, read again when the file changes (edits need no restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file:{path}"
        self._stamp: tuple[int, int] | None = None
        self._by_subject: dict[str, Principal] = {}

    def get(self, subject: str) -> Principal | None:
        """The principal named ``subject``, if any."""
        return self._load().get(subject)

    def principals(self) -> list[Principal]:
        """Every principal, in the file's order."""
        return list(self._load().values())

    def _load(self) -> dict[str, Principal]:
        try:
            stat = self.path.stat()
        except OSError as err:
            raise KeelUserError(f"directory {self.path}: {err.strerror or err}") from None
        if self._stamp != (stat.st_mtime_ns, stat.st_size):
            self._by_subject = {p.subject: p for p in read_directory_file(self.path).principals}
            self._stamp = (stat.st_mtime_ns, stat.st_size)
        return self._by_subject

    def save(self, principals: Iterable[Principal]) -> None:
        """Replace the file's principals (written whole, then renamed into place; 0600)."""
        write_directory_file(self.path, list(principals))
        self._stamp = None


def read_directory_file(path: Path) -> DirectoryFile:
    """The directory file ``path``.

    Raises:
        KeelUserError: the file is unreadable, not JSON, or not a directory (two principals
            with one subject included).
    """
    try:
        directory = DirectoryFile.model_validate_json(path.read_bytes())
    except OSError as err:
        raise KeelUserError(f"directory {path}: {err.strerror or err}") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise KeelUserError(f"directory {path}: {where}: {first['msg']}") from None
    subjects = [p.subject for p in directory.principals]
    if duplicates := sorted({s for s in subjects if subjects.count(s) > 1}):
        raise KeelUserError(f"directory {path}: subjects listed twice: {', '.join(duplicates)}")
    return directory


def write_directory_file(path: Path, principals: Sequence[Principal]) -> None:
    """Write ``principals`` to ``path`` as a directory file (mode 0600: it holds hashes)."""
    body = DirectoryFile(principals=list(principals)).model_dump(mode="json", exclude_none=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(body, indent=2) + "\n")
    os.replace(temporary, path)
