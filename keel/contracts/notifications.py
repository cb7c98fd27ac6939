"""Notifications of gate events: the channels a worker is configured with, the event one
activity delivers, and the exact bytes a webhook receiver gets and checks.

A gate names channels (``GateSpec.notify``); the worker defines them (``KEEL_NOTIFY_CHANNELS``
or ``KEEL_NOTIFY_CHANNELS_FILE``, a JSON object of name -> channel):

* ``webhook``: an HTTP POST of the event as JSON (``format="json"``) or as a Slack message
  (``format="slack"``: text, and blocks with a button to the signed inbox link), signed
  ``Keel-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body" under secret>`` (as Stripe
  signs), with ``Keel-Delivery-Id`` the same on every attempt of one delivery;
* ``email``: one message over SMTP (STARTTLS and AUTH), its Message-ID derived from the
  delivery's idempotency key.

Each (execution, gate, event, channel) is one effect in the side-effect record
(``idempotency_key``): never sent twice by a retry that knows it was sent; an attempt that
died mid-delivery leaves the outcome unknown and the delivery is sent again with the same
delivery id / Message-ID, so a receiver that deduplicates by it shows it once.

Pure: no I/O (workflow code imports this module).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

NOTIFY_ACTIVITY = "keel.notify.gate_event"
"""Activity that delivers one gate event to one channel (stable: histories outlive code)."""
NOTIFY_PATCH = "keel-gate-notifications"
SIGNATURE_HEADER = "Keel-Signature"
DELIVERY_HEADER = "Keel-Delivery-Id"
SIGNATURE_TOLERANCE_SECONDS = 300
"""How old a signature's timestamp a receiver should accept (a captured request replayed
later fails)."""
CHANNEL_NAME = r"^[a-z][a-z0-9_-]{0,62}$"

GateEventKind = Literal["opened", "escalated", "expired", "decided"]


class WebhookChannel(BaseModel):
    """An HTTP endpoint told of gate events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr
    """The HMAC-SHA256 key of ``Keel-Signature``; the receiver holds the same one."""
    format: Literal["json", "slack"] = "json"
    timeout_seconds: float = Field(10.0, gt=0, le=60)

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr) -> SecretStr:
        if len(secret.get_secret_value()) < 16:
            raise ValueError("a webhook secret needs at least 16 characters")
        return secret


class EmailChannel(BaseModel):
    """An SMTP server and the addresses told of gate events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["email"] = "email"
    host: str
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    """Upgrade the connection with STARTTLS before AUTH (refused if the server cannot)."""
    ca_file: str | None = None
    """CA certificates (PEM) to verify the server with instead of the system's."""
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    to: tuple[str, ...] = ()
    """Addresses told of every event."""
    addresses: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Addresses by reviewer name or role: a gate's reviewers and roles are told too."""
    timeout_seconds: float = Field(20.0, gt=0, le=120)

    @field_validator("password")
    @classmethod
    def _needs_username(cls, password: SecretStr | None, info: Any) -> SecretStr | None:
        if password is not None and not info.data.get("username"):
            raise ValueError("an SMTP password needs a username")
        return password

    def recipients(self, reviewers: list[str], roles: list[str]) -> list[str]:
        """Who is told of an event at a gate with ``reviewers`` and ``roles`` (deduplicated,
        in order)."""
        found = [*self.to]
        for name in [*reviewers, *roles]:
            found += self.addresses.get(name, ())
        return list(dict.fromkeys(found))


Channel = Annotated[WebhookChannel | EmailChannel, Field(discriminator="kind")]


class GateEvent(BaseModel):
    """Input of the notify activity: one gate event, for one channel.

    Built in workflow code from the gate's view; the secrets (webhook secret, SMTP password,
    link key) are the worker's and never in here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: GateEventKind
    channel: str = Field(pattern=CHANNEL_NAME)
    workflow_id: str
    run_id: str
    workflow_type: str
    gate: str
    title: str
    state: str
    reviewers: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    deadline: datetime | None = None
    decided_by: str | None = None
    on_behalf_of: str | None = None
    decision: str | None = None
    occurred_at: datetime
    """When the event happened (workflow time): the same on every attempt."""

    @property
    def idempotency_key(self) -> str:
        """The effect's key: execution, gate, event and channel, never the attempt."""
        return idempotency_key(self.workflow_id, self.run_id, self.gate, self.kind, self.channel)

    @property
    def delivery_id(self) -> str:
        """``Keel-Delivery-Id``: the same on every attempt of this delivery."""
        return delivery_id(self.idempotency_key)


class NotificationSent(BaseModel):
    """Output of the notify activity."""

    channel: str
    kind: GateEventKind
    delivery_id: str
    provider_id: str
    """The webhook's delivery id, or the email's Message-ID."""
    replayed: bool
    """True when an earlier attempt had already delivered it (nothing was sent now)."""
    resent_after_unknown: bool = False
    """True when an earlier attempt may have delivered it and it was sent again with the
    same delivery id (the receiver deduplicates)."""


def idempotency_key(workflow_id: str, run_id: str, gate: str, kind: str, channel: str) -> str:
    """The side-effect record's key of one gate event on one channel."""
    return f"keel-notify/{workflow_id}/{run_id}/{gate}/{kind}/{channel}"


def delivery_id(key: str) -> str:
    """A header-safe id of ``key`` (the key holds a workflow id, which may be any text)."""
    return "kd_" + hashlib.sha256(key.encode()).hexdigest()[:40]


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``."""
    return f"t={timestamp},v1={_digest(secret, body, timestamp)}"


def signature_problem(
    secret: str, body: bytes, header: str | None, now: float, *, tolerance: float = 300.0
) -> str | None:
    """Why ``header`` does not sign ``body`` under ``secret`` at ``now``, or None: what a
    receiver checks (constant-time; any of several ``v1`` values may match, for rotation).
    """
    if not header:
        return f"no {SIGNATURE_HEADER} header"
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    stamps = parts.get("t", [])
    if len(stamps) != 1 or not stamps[0].isdigit():
        return f"{SIGNATURE_HEADER} has no single t=<unix seconds>"
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance:
        return f"the signature's timestamp is {now - timestamp:.0f}s off (tolerance {tolerance}s)"
    expected = _digest(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, got) for got in parts.get("v1", [])):
        return "no v1 signature matches the body (altered, or signed with another secret)"
    return None


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


HEADLINES: dict[GateEventKind, str] = {
    "opened": "Gate waiting for review",
    "escalated": "Gate escalated",
    "expired": "Gate expired",
    "decided": "Gate decided",
}


def event_body(event: GateEvent, link: str) -> dict[str, Any]:
    """The JSON a ``format="json"`` webhook receives."""
    return {
        "type": f"keel.gate.{event.kind}",
        "delivery_id": event.delivery_id,
        "occurred_at": event.occurred_at.isoformat(),
        "workflow_id": event.workflow_id,
        "run_id": event.run_id,
        "workflow_type": event.workflow_type,
        "gate": event.gate,
        "title": event.title,
        "state": event.state,
        "reviewers": event.reviewers,
        "roles": event.roles,
        "deadline": event.deadline.isoformat() if event.deadline else None,
        "decided_by": event.decided_by,
        "on_behalf_of": event.on_behalf_of,
        "decision": event.decision,
        "inbox_url": link,
    }


def summary_lines(event: GateEvent) -> list[str]:
    """What a person is told of ``event``, a line each (Slack text, email body)."""
    lines = [
        f"{HEADLINES[event.kind]}: {event.title}",
        f"Gate {event.gate} of {event.workflow_type} {event.workflow_id} is {event.state}.",
    ]
    who = [*event.reviewers, *(f"role {role}" for role in event.roles)]
    if event.kind != "decided" and who:
        lines.append(f"Reviewers: {', '.join(who)}")
    if event.deadline and event.kind in ("opened", "escalated"):
        lines.append(f"Deadline: {event.deadline:%Y-%m-%d %H:%M} UTC")
    if event.decided_by:
        by = event.decided_by
        if event.on_behalf_of:
            by = f"{by} on behalf of {event.on_behalf_of}"
        lines.append(f"Decided by {by}: {event.decision or event.state}")
    return lines


def slack_body(event: GateEvent, link: str) -> dict[str, Any]:
    """The message a ``format="slack"`` webhook receives (Slack's incoming-webhook shape:
    ``text`` for notifications, ``blocks`` with a button to the signed inbox link)."""
    headline, *rest = summary_lines(event)
    label = "Review in the inbox" if event.kind in ("opened", "escalated") else "Open in the inbox"
    return {
        "text": f"{headline} ({event.workflow_id})",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(rest)[:3000]}},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": label},
                        "url": link,
                        "action_id": "keel-open-gate",
                        **({"style": "primary"} if event.kind == "opened" else {}),
                    }
                ],
            },
        ],
    }
