"""Sign-in sessions and API tokens: signed, expiring, revocable at logout.

A session is a cookie holding ``{sid, sub, csrf}`` signed with the inbox's session secret
(itsdangerous, HMAC-SHA512 over the payload and its timestamp): nothing server-side to
store, and nothing a browser can alter. It is ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (no other site's page sends it) and expires. Every form carries the
session's CSRF token, compared in constant time. A visitor who has not signed in gets a
session without ``sub``, so the sign-in form is protected too; signing in starts a new
session (new id, new token), so a session id planted before sign-in is worthless.

API tokens for local accounts are the same construction under another salt.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from keel.settings import KeelSettings

COOKIE = "keel_inbox_session"
SECRET_NAME = "keys/inbox-session-secret"
MAX_COOKIE_CHARS = 4_000


@dataclass(frozen=True)
class Session:
    """One browser's session: who signed in (None: nobody yet) and its CSRF token."""

    sid: str
    csrf: str
    subject: str | None = None
    method: str = "password"
    issuer: str | None = None
    started: float = field(default_factory=time.time)
    """When the session began: it ends ``max_age`` after that, however often it is used
    (re-sealing the cookie on each page does not extend it)."""

    def csrf_matches(self, token: str | None) -> bool:
        """Whether a submitted form's token is this session's."""
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


def new_session(
    subject: str | None = None, *, method: str = "password", issuer: str | None = None
) -> Session:
    """A fresh session (new id and CSRF token)."""
    return Session(secrets.token_urlsafe(16), secrets.token_urlsafe(24), subject, method, issuer)


class SessionSigner:
    """Seals sessions into cookie values and API tokens, and opens them again."""

    def __init__(self, secret: bytes, *, max_age_seconds: int) -> None:
        self.max_age_seconds = max_age_seconds
        self._cookies = URLSafeTimedSerializer(secret, salt="keel-inbox-session")
        self._tokens = URLSafeTimedSerializer(secret, salt="keel-inbox-api-token")
        self._revoked: dict[str, float] = {}

    def seal(self, session: Session) -> str:
        """The cookie value for ``session``."""
        return self._cookies.dumps(_fields(session))

    def open(self, value: str | None) -> Session | None:
        """The session a cookie value holds, or None (absent, altered, expired, logged out)."""
        return self._open(self._cookies, value)

    def token(self, session: Session) -> str:
        """An API bearer token for a signed-in session."""
        return self._tokens.dumps(_fields(session))

    def open_token(self, value: str) -> Session | None:
        """The session an API token holds, or None."""
        return self._open(self._tokens, value)

    def revoke(self, session: Session) -> None:
        """End ``session`` now (logout), though its cookie may still be presented."""
        now = time.time()
        self._revoked = {s: t for s, t in self._revoked.items() if t > now}
        self._revoked[session.sid] = now + self.max_age_seconds

    def _open(self, serializer: URLSafeTimedSerializer, value: str | None) -> Session | None:
        if not value or len(value) > MAX_COOKIE_CHARS:
            return None
        try:
            data: Any = serializer.loads(value, max_age=self.max_age_seconds)
        except BadSignature:  # SignatureExpired is one
            return None
        try:
            session = Session(**data)
        except TypeError:
            return None
        if session.sid in self._revoked or time.time() - session.started > self.max_age_seconds:
            return None
        return session


def _fields(session: Session) -> dict[str, Any]:
    return {
        "sid": session.sid,
        "csrf": session.csrf,
        "subject": session.subject,
        "method": session.method,
        "issuer": session.issuer,
        "started": session.started,
    }


def load_session_secret(settings: KeelSettings) -> bytes:
    """``KEEL_INBOX_SESSION_SECRET``, else ``data_dir/keys/inbox-session-secret`` (generated
    0600 on first use, kept so sessions survive a restart)."""
    if settings.inbox_session_secret is not None:
        return settings.inbox_session_secret.get_secret_value().encode()
    path = settings.data_dir / SECRET_NAME
    if not path.exists():
        _write_secret(path)
    return path.read_bytes().strip()


def _write_secret(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48) + "\n")
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process made one first: use theirs
    finally:
        temporary.unlink()
