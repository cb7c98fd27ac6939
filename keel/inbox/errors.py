"""What the inbox answers when it will not do what was asked: one exception a status.

The web pages and the API both map these to their status codes; every message says what
happened and, where the reviewer can do something about it, what.
"""

from __future__ import annotations


class InboxError(Exception):
    """Base: ``status`` is the HTTP status, ``reasons`` the details (shown one a line)."""

    status = 400

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reasons = reasons or []


class NotSignedIn(InboxError):
    """No valid session or bearer token."""

    status = 401


class Forbidden(InboxError):
    """Signed in, but not allowed to do this (a gate they see, an action they may not take)."""

    status = 403


class GateNotFound(InboxError):
    """No such gate, or none this reviewer may see (the two look the same on purpose)."""

    status = 404


class GateClosed(InboxError):
    """The gate was already decided or expired."""

    status = 409


class InvalidDecision(InboxError):
    """The decision is incomplete or its modifications do not fit the gate's schema."""

    status = 422


class DecisionRefused(InboxError):
    """The workflow verified the signed decision and refused it (its reasons attached)."""

    status = 409


class TemporalUnavailable(InboxError):
    """Temporal, or the workflow's worker, did not answer."""

    status = 503
