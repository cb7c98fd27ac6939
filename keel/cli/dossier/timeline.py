"""Timeline rows: every event of the ledger in one line, as ``keel ledger`` describes it,
marked where the ledger broke."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keel.cli.dossier.decisions import NOT_SHOWN, as_json
from keel.cli.render import _FORMATS
from keel.contracts.ledger import EventBase

MAX_LINE_CHARS = 600
"""Characters of an event's one-line description (the event itself is in the export)."""


@dataclass
class Row:
    """One event in the timeline (or in the effects and plans tables)."""

    seq: int | None
    at: str
    type: str
    text: str
    event: EventBase | None
    state: str = "ok"
    """``ok``, ``broken`` (the event where verification failed), ``after`` (an event no
    verified signature covers: after the last one before the break, or not signed yet) or
    ``unparsed`` (it does not fit its type)."""
    link: str | None = None
    """The page id of the decision or gate the event belongs to."""

    @classmethod
    def of(cls, event: EventBase, text: str) -> Row:
        """The row of a parsed event."""
        at = event.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        return cls(event.seq, at, event.type, text, event)

    @classmethod
    def unparsed(cls, raw: Any) -> Row:
        """The row of an event that does not parse as its type, shown as stored."""
        fields = raw if isinstance(raw, dict) else {}
        seq = fields.get("seq")
        number = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        text = "does not fit its type; as stored: " + _clip(as_json(raw))
        kind = str(fields.get("type", type(raw).__name__))[:80]
        return cls(number, str(fields.get("at", ""))[:40], kind, text, None, "unparsed")

    @property
    def output(self) -> str:
        """A task's or compensation's output, as indented JSON (empty when it has none)."""
        output = getattr(self.event, "output", None)
        return as_json(output, indent=2) if output else ""

    @property
    def receipt(self) -> str:
        """An effect's receipt (idempotency key, provider id, ...) as indented JSON."""
        effect = getattr(self.event, "effect", None) or getattr(self.event, "known", None)
        return as_json(effect, indent=2) if effect else ""


def describe(event: EventBase) -> str:
    """``keel ledger``'s line for ``event`` (its type's own, else the generic one)."""
    formatter = _FORMATS.get(event.type)
    try:
        text = formatter(event) if formatter else event.describe()
    except Exception:  # a stored value a formatter does not expect: the generic line
        try:
            text = event.describe()
        except (ValueError, TypeError, RecursionError):
            text = NOT_SHOWN
    return _clip(text)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 3] + "..."
