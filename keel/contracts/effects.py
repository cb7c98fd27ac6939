"""What the side-effect record says when an effect's outcome is unknown, and how it resolves.

An attempt that dies after acting, or whose record write fails for good, leaves the record
unable to say whether the effect happened. Each tool declares what happens then
(``ToolSpec.unknown_outcome``):

* ``lookup``: the tool asks the provider whether the effect of the key happened, and
  records what it finds (acting again only if the provider says it did not happen);
* ``resend``: the tool acts again with the same key; the receiver deduplicates (an email
  with the same Message-ID);
* ``escalate``: the activity fails with the non-retryable ``EffectOutcomeUnknown``, whose
  details are an ``UnknownOutcome``; a person confirms, and the record is resolved through
  the tool's ``resolve`` activity (``resolve_activity_name``).

A record write that fails after the effect is retried inside the activity; if the database
stays down, the activity returns with ``EffectReceipt.recorded`` false and the workflow
records the effect through the tool's ``record`` activity (``record_activity_name``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

UnknownOutcomePolicy = Literal["lookup", "resend", "escalate"]

EFFECT_OUTCOME_UNKNOWN = "EffectOutcomeUnknown"
"""``ApplicationError`` type (non-retryable): nobody knows whether the effect happened."""
EFFECT_STORE_UNAVAILABLE = "EffectStoreUnavailable"
"""``ApplicationError`` type (retryable, without an attempt limit in Keel's workflows): the
database of the side-effect record could not be reached; nothing was acted on since."""


class UnknownOutcome(BaseModel):
    """What the record knows about an effect whose outcome is unknown (the error's details)."""

    idempotency_key: str
    tool: str
    policy: UnknownOutcomePolicy
    intent_at: datetime
    """When the attempt that may have acted recorded its intent."""
    unknown_at: datetime
    """When a later attempt found that intent unfinished and marked it unknown."""
    attempts: int
    """Entries into the record for this key so far (the finding one included)."""
    found_by: str
    """Which attempt found it (record entry, and Temporal activity attempt if any)."""
    provider_ref: str | None = None
    """The effect's id at the provider when it is known before acting (the Message-ID)."""


def unknown_outcome_of(details: Any) -> UnknownOutcome | None:
    """The ``UnknownOutcome`` of an ``EffectOutcomeUnknown`` error's first detail, if any."""
    if isinstance(details, UnknownOutcome):
        return details
    try:
        return UnknownOutcome.model_validate(details)
    except ValueError:
        return None


class RecordOutcomeInput(BaseModel):
    """Input of a tool's ``record`` activity: an effect performed but not yet recorded."""

    idempotency_key: str
    tool: str
    provider_id: str
    result: dict[str, Any]


class ResolveOutcomeInput(BaseModel):
    """Input of a tool's ``resolve`` activity: a person's answer about an unknown outcome."""

    idempotency_key: str
    tool: str
    performed: bool
    """True: the effect happened (``confirmed_performed``); False: it did not
    (``confirmed_not_performed``, and the next attempt acts again)."""
    by: str = Field(min_length=1, max_length=200)
    """Who confirmed (the reviewer)."""
    provider_id: str | None = Field(None, max_length=998)
    """The provider's id of the effect, when the person confirms it happened."""
    note: str | None = Field(None, max_length=2_000)


class ResolvedOutcome(BaseModel):
    """Output of a tool's ``resolve`` activity: the record after the resolution."""

    idempotency_key: str
    status: str
    resolved_by: str | None
    resolved_at: datetime | None


def record_activity_name(tool: str) -> str:
    """Activity that records a performed effect of ``tool`` after the tool's own write failed."""
    return f"keel.tool.{tool}.record_outcome"


def resolve_activity_name(tool: str) -> str:
    """Activity that records a person's resolution of an unknown outcome of ``tool``."""
    return f"keel.tool.{tool}.resolve_outcome"
