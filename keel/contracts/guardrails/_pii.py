"""PII scrubbing: emails, phone numbers and Luhn-valid card numbers."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from keel.contracts.guardrails._models import (
    CARD_MARKER,
    EMAIL_MARKER,
    PHONE_MARKER,
    Change,
    GuardrailDecision,
    GuardrailState,
)

# ---------------------------------------------------------------------------------------
# PII scrubbing

_EMAIL = re.compile(
    # Local part (RFC 5322 atext and dots, at most 64 characters: keeps the scan linear),
    # then domain labels and a top-level domain that starts with a letter (xn-- included).
    r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}@(?:[\w-]{1,63}\.)+[^\W\d_][\w-]{0,61}[^\W_]"
)
_CARD = re.compile(
    # 13 to 19 digits, optionally grouped by single spaces or dashes; Luhn decides.
    r"(?<![\w+])[0-9](?:[ -]?[0-9]){12,18}(?!\w)"
)
_PHONE_INTL = re.compile(
    # "+" country code, then digits in groups (space, dot or dash) or a parenthesized
    # group: +44 20 7946 0958, +1-415-555-0132, +44 (0)20 7946 0958, +4915112345678.
    # 8 to 15 digits in all (E.164), checked after the match.
    r"(?<![\w+])\+[0-9](?:[ .-]?(?:\([0-9]{1,4}\)|[0-9])){6,18}(?![0-9])"
)
_PHONE_NANP = re.compile(
    # US / North American: (415) 555-0132, 415.555.0132, 415-555-0132, 1-800-555-0199.
    # Not a bare run of ten digits (too easily an order number), not inside a longer code.
    r"(?<![\w+.-])(?:1[ .-])?(?:\([0-9]{3}\)[ .-]?|[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}"
    r"(?![0-9]|[.-][0-9])"
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies (digits only)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _is_card(candidate: str) -> bool:
    digits = candidate.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _is_phone(candidate: str) -> bool:
    return 8 <= sum(char.isdigit() for char in candidate) <= 15


_PII_RULES: tuple[tuple[str, re.Pattern[str], str, Callable[[str], bool] | None], ...] = (
    ("email", _EMAIL, EMAIL_MARKER, None),
    ("card", _CARD, CARD_MARKER, _is_card),
    ("phone", _PHONE_INTL, PHONE_MARKER, _is_phone),
    ("phone", _PHONE_NANP, PHONE_MARKER, None),
)


def scrub_text(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``text`` with its PII replaced by markers, and the ``(kind, original)`` pairs found.

    Emails first (they may hold digits), then card numbers, then phone numbers. Repeated
    until nothing more is found (a value glued to a redacted one shows once its neighbour
    is a marker), so scrubbing scrubbed text changes nothing. Every pass that finds
    something removes an ``@`` or digits and adds none, so the loop ends.
    """
    found: list[tuple[str, str]] = []

    def replacer(
        kind: str, marker: str, accept: Callable[[str], bool] | None
    ) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            value = match.group(0)
            if accept is not None and not accept(value):
                return value
            found.append((kind, value))
            return marker

        return replace

    while "@" in text or any(char.isdigit() for char in text):
        before = len(found)
        for kind, pattern, marker, accept in _PII_RULES:
            text = pattern.sub(replacer(kind, marker, accept), text)
        if len(found) == before:
            break
    return text, found


_KIND_WORDS = {
    "email": ("email address", "email addresses"),
    "phone": ("phone number", "phone numbers"),
    "card": ("card number", "card numbers"),
}


class PiiScrubber:
    """Redact emails, phone numbers and payment card numbers in every string of the payload.

    Emails: ``local@domain.tld``. Phone numbers: international (``+`` country code, 8 to
    15 digits, grouped by spaces, dots or dashes, or not at all) and US formats
    (``(415) 555-0132``, ``415.555.0132``, ``415-555-0132``); a bare run of digits is not
    taken for a phone number. Card numbers: 13 to 19 digits, grouped or not, that pass the
    Luhn check, so an order number that fails it is kept. Numbers held as JSON numbers and
    object keys are left as they are. One ``Change`` per redaction.
    """

    name = "pii-scrubber"

    def __call__(self, payload: dict[str, Any], state: GuardrailState) -> GuardrailDecision:
        changes: list[Change] = []
        scrubbed = _scrub_value(payload, "", changes)
        if not changes:
            return GuardrailDecision(
                policy=self.name,
                action="allow",
                reason="no email addresses, phone numbers or card numbers found",
            )
        counts = {kind: sum(c.kind == kind for c in changes) for kind in _KIND_WORDS}
        what = ", ".join(f"{n} {_KIND_WORDS[kind][n != 1]}" for kind, n in counts.items() if n)
        paths = ", ".join(dict.fromkeys(c.path for c in changes))
        return GuardrailDecision(
            policy=self.name,
            action="modify",
            reason=f"redacted {what} before the model call (in {paths})",
            changes=changes,
            modified=scrubbed,
        )


def _scrub_value(value: Any, path: str, changes: list[Change]) -> Any:
    if isinstance(value, str):
        text, found = scrub_text(value)
        for kind, original in found:
            changes.append(
                Change(
                    path=path or "$",
                    kind=kind,
                    before_sha256=hashlib.sha256(original.encode("utf-8")).hexdigest(),
                    after=_MARKERS[kind],
                )
            )
        return text
    if isinstance(value, Mapping):
        return {key: _scrub_value(item, _join(path, key), changes) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [_scrub_value(item, f"{path}[{i}]", changes) for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    return value


_MARKERS = {"email": EMAIL_MARKER, "phone": PHONE_MARKER, "card": CARD_MARKER}
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _join(path: str, key: Any) -> str:
    key = str(key)
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
