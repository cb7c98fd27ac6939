"""The ``send_email`` tool: a reply sent over SMTP once per idempotency key, never resent
or skipped silently when a send's outcome is unknown (``unknown_outcome``: escalate).

Importing this module registers ``send_email`` in the tool catalog (side-effecting, no gate
of its own: the scenario that uses it decides what needs approval before sending).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from keel.contracts.tools import CATALOG, ToolSpec

EMAIL_ADDRESS_PATTERN = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
"""An ASCII ``local@domain`` address without display name (what ``EmailStr`` accepts, minus
internationalized addresses, plus dotless domains such as ``localhost``)."""
MESSAGE_ID_PATTERN = r"^<[^<>@\s]+@[^<>@\s]+>$"
MESSAGE_ID_DOMAIN = "keel"


def message_id_for(idempotency_key: str) -> str:
    """The Message-ID header of the email sent under ``idempotency_key``.

    Derived from the key alone, so every attempt of one send carries the same Message-ID and
    a receiver can recognise a duplicate; the key itself (a workflow id) is not disclosed.
    """
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{MESSAGE_ID_DOMAIN}>"


class SendEmailInput(BaseModel):
    """One email to one recipient."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(max_length=254, pattern=EMAIL_ADDRESS_PATTERN)
    subject: str = Field(min_length=1, max_length=900, pattern=r"^[^\r\n]*$")
    """One header line: no CR or LF (header injection)."""
    body: str = Field(min_length=1, max_length=100_000)
    """Plain text."""
    in_reply_to: str | None = Field(None, max_length=998, pattern=MESSAGE_ID_PATTERN)
    """Message-ID (``<id@domain>``) of the message answered; sets In-Reply-To and
    References."""


class SendEmailOutput(BaseModel):
    """What the SMTP server said when it accepted the message."""

    message_id: str
    """The Message-ID header, ``message_id_for(idempotency_key)``; the effect's provider id."""
    accepted_at: datetime
    smtp_response: str
    """The server's final reply to DATA, e.g. ``250 Message accepted for delivery``."""


SEND_EMAIL = CATALOG.register(
    ToolSpec(
        name="send_email",
        description=(
            "Send a plain-text email to one recipient over SMTP, once per task (optionally "
            "as a reply to a Message-ID); if a send's outcome is unknown, a person confirms."
        ),
        input_model=SendEmailInput,
        output_model=SendEmailOutput,
        side_effects=True,
        needs_approval=False,
    )
)
