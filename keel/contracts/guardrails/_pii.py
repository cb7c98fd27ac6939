"""PII scrubbing: emails, phone numbers, payment cards, IBANs, US SSNs and CVVs.

Values become numbered markers (``[phone redacted #1]``) that carry nothing of the value:
no hash (a plain hash of a phone number is reversed by enumeration in seconds), no HMAC
(its key would have to reach workflow code, and so history). Within one payload, equal
values get the same number, so the model (and a reader of the ledger) can still tell that
two mentions are the same number.

Deterministic: ``re`` and ``phonenumbers`` (pure Python, its metadata shipped in the
package), so it runs in workflow code.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from keel.contracts.guardrails._models import (
    DEFAULT_PHONE_REGIONS,
    PII_KINDS,
    Change,
    GuardrailDecision,
    GuardrailState,
    pii_marker,
)

# ---------------------------------------------------------------------------------------
# The patterns

_EMAIL = re.compile(
    # Local part (RFC 5322 atext and dots, at most 64 characters: keeps the scan linear),
    # then domain labels and a top-level domain that starts with a letter (xn-- included).
    r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}@(?:[\w-]{1,63}\.)+[^\W\d_][\w-]{0,61}[^\W_]"
)
# Separators people put between digit groups: space, tab, dot, dash, slash, NBSP, the
# thin and narrow spaces, figure space.
_SEP = "[ \t.\\-/\u00a0\u2002-\u2009\u202f\u205f\u3000]"
_CARD = re.compile(
    # 13 to 19 digits, a separator (or two) allowed between any two; Luhn decides.
    rf"(?<![\w+.,-])[0-9](?:{_SEP}{{0,2}}[0-9]){{12,18}}(?![0-9]|[.,-]?[0-9])"
)
_IBAN = re.compile(
    # Country, check digits, then the account in groups; the length is the country's.
    r"(?<![A-Za-z0-9])([A-Za-z]{2})([0-9]{2})((?:[ \-\u00a0]?[A-Za-z0-9]){10,32})"
)
_SSN = re.compile(
    # AAA-GG-SSSS (dashes or spaces, the same twice); valid area, group and serial only.
    r"(?<![\w-])(?!000|666|9[0-9]{2})([0-9]{3})([ -])(?!00)([0-9]{2})\2(?!0000)([0-9]{4})(?![\w-])"
)
_SSN_BARE = re.compile(
    # Nine digits in a row, only right after the words that name them.
    r"(?i)\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?|ss#)\s*(?:is|:|#|=|-)?\s*"
    r"(?!000|666|9[0-9]{2})([0-9]{3})(?!00)([0-9]{2})(?!0000)([0-9]{4})(?![0-9])"
)
_CVV = re.compile(
    # Three or four digits right after the words that name a card's security code.
    r"(?i)\b(?:cvv2?|cvc2?|cid|csc|cvn|cav2|card\s+verification(?:\s+(?:value|code|number))?|"
    r"security\s+code|sec(?:urity)?\.?\s+code|three[- ]digit\s+code|c[oó]digo\s+de\s+seguridad|"
    r"kartenpr[uü]fnummer|pr[uü]fziffer|cryptogramme(?:\s+visuel)?|code\s+de\s+s[eé]curit[eé]|"
    r"codice\s+di\s+sicurezza|c[oó]digo\s+cvv)"
    r"(?:\s*(?:is|was|number|no\.?|code|=|:|#|-|es|est|ist|e|é))*\s*[:=#-]?\s*([0-9]{3,4})(?![0-9])"
)
_PHONE_CANDIDATE = re.compile(
    # "+" or "00" and a country code, or a national number: digit groups with single
    # separators, a parenthesized area code allowed. 7 to 15 digits, checked after.
    r"(?<![\w+.,/-])(?:\+|00)?(?:\([0-9]{1,5}\)[ .\-\u00a0]?|[0-9])"
    r"(?:[ .\-/\u00a0\u2009\u202f]?(?:\([0-9]{1,5}\)|[0-9])){5,18}(?![0-9]|[.,-][0-9])"
)
_PHONE_CONTEXT = re.compile(
    r"(?i)(?:phone|tel|telephone|mobile|cell|call|fax|whatsapp|sms|text\s+me|ring|reach\s+me|"
    r"contact|number|n[uú]mero|telefon\w*|t[eé]l[eé]phone|portable|handy|cellulare|"
    r"telem[oó]vel|celular|móvil|movil)\W{0,6}(?:\w+\W{1,3}){0,2}$"
)
_DATE = re.compile(
    r"[0-9]{4}[-./][0-9]{1,2}[-./][0-9]{1,2}|[0-9]{1,2}[-./][0-9]{1,2}[-./][0-9]{2,4}"
    r"|[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
)

# Shapes that are not phone numbers although some region would take their digits: an SSN's
# 3-2-4 grouping.
_NOT_PHONE = re.compile(r"[0-9]{3}-[0-9]{2}-[0-9]{4}")

# IBAN lengths by country (ISO 13616 registry).
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


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


def iban_valid(iban: str) -> bool:
    """ISO 13616: the country's length, and the mod-97 checksum (letters and digits only)."""
    iban = iban.upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    moved = iban[4:] + iban[:4]
    number = "".join(str(int(char, 36)) for char in moved)
    return int(number) % 97 == 1


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


# ---------------------------------------------------------------------------------------
# Finding values


@dataclass
class _Found:
    start: int
    end: int
    kind: str
    key: str
    """The value in canonical form (E.164, digits, upper case): equal values, one number."""


def _find_emails(text: str) -> list[_Found]:
    return [_Found(m.start(), m.end(), "email", m.group(0).lower()) for m in _EMAIL.finditer(text)]


def _find_cards(text: str) -> list[_Found]:
    found = []
    for match in _CARD.finditer(text):
        digits = _digits(match.group(0))
        if digits[0] in "23456" and luhn_valid(digits):
            found.append(_Found(match.start(), match.end(), "card", digits))
    return found


def _find_ibans(text: str) -> list[_Found]:
    found = []
    for match in _IBAN.finditer(text):
        country = match.group(1).upper()
        length = _IBAN_LENGTHS.get(country)
        if length is None:
            continue
        # Take the country's number of characters, separators skipped, and stop there.
        need = length - 4
        compact = []
        end = match.start(3)
        for index, char in enumerate(match.group(3)):
            if char.isalnum():
                compact.append(char)
                if len(compact) == need:
                    end = match.start(3) + index + 1
                    break
        if len(compact) < need:
            continue
        if end < len(text) and text[end].isalnum():
            continue  # runs on: part of a longer code
        iban = country + match.group(2) + "".join(compact).upper()
        if iban_valid(iban):
            found.append(_Found(match.start(), end, "iban", iban))
    return found


def _find_ssns(text: str) -> list[_Found]:
    found = [
        _Found(m.start(), m.end(), "ssn", m.group(1) + m.group(3) + m.group(4))
        for m in _SSN.finditer(text)
    ]
    found += [
        _Found(m.start(1), m.end(3), "ssn", m.group(1) + m.group(2) + m.group(3))
        for m in _SSN_BARE.finditer(text)
    ]
    return found


def _find_cvvs(text: str) -> list[_Found]:
    return [_Found(m.start(1), m.end(1), "cvv", m.group(1)) for m in _CVV.finditer(text)]


def _find_phones(text: str, regions: Sequence[str]) -> list[_Found]:
    found = []
    for match in _PHONE_CANDIDATE.finditer(text):
        found.extend(_phone_in(text, match.start(), match.group(0), regions))
    return found


def _phone_in(text: str, start: int, value: str, regions: Sequence[str]) -> list[_Found]:
    """The phone number a candidate run is, if it is one (the whole run: a valid prefix of
    a longer number is not taken)."""
    digits = _digits(value)
    if not 7 <= len(digits) <= 15 or _DATE.fullmatch(value) or _NOT_PHONE.fullmatch(value):
        return []
    international = value.startswith(("+", "00"))
    separators = sum(1 for c in value if not c.isdigit() and c not in "()")
    named = _PHONE_CONTEXT.search(text[max(0, start - 40) : start]) is not None
    # A national number: grouped like one (two separators or more, a trunk "0" or an area
    # code in parentheses), or named a phone; a bare or once-split run of digits is an
    # order number, a range or a code.
    national_shape = separators >= 2 or value.startswith(("0", "("))
    if not (international or national_shape or named):
        return []
    e164 = _phone_e164(value, tuple(regions), international)
    if e164 is None:
        return []
    return [_Found(start, start + len(value), "phone", e164)]


@functools.lru_cache(maxsize=4096)
def _phone_e164(value: str, regions: tuple[str, ...], international: bool) -> str | None:
    # phonenumbers is slow (a parse and a validity check cost about 0.3 ms) and a number
    # repeats in a thread; a pure function of its arguments, so caching changes nothing.
    number = _parse_phone(value, regions, international)
    if number is None:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _parse_phone(
    value: str, regions: Sequence[str], international: bool
) -> phonenumbers.PhoneNumber | None:
    if international:
        text = "+" + value[2:] if value.startswith("00") else value
        tries: Sequence[str | None] = [None]
    else:
        text = value
        tries = regions
    for region in tries:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return number
    return None


def scrub_text(
    text: str,
    regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
    numbering: _Numbering | None = None,
) -> tuple[str, list[tuple[str, str]]]:
    """``text`` with its PII replaced by numbered markers, and the ``(kind, original)`` pairs
    found, in the order they appear.

    Emails first (they may hold digits), then IBANs, card numbers, SSNs, CVVs and phone
    numbers; a span taken by one kind is not read again. ``regions``: where a phone number
    written without its country code may be from, tried in order. ``numbering`` carries the
    numbers across the strings of one payload. Scrubbing scrubbed text changes nothing.
    """
    scrubbed, found = _scrub(text, regions, numbering or _Numbering())
    return scrubbed, [(kind, original) for kind, original, _marker in found]


def _scrub(
    text: str, regions: Sequence[str], numbering: _Numbering
) -> tuple[str, list[tuple[str, str, str]]]:
    # Again on the result while something is found: a value glued to one just redacted
    # ("+4915112345678+4915112345679") shows once its neighbour is a marker. Each pass that
    # finds something replaces digits or an "@" by a marker, so this ends; bounded anyway.
    found: list[tuple[str, str, str]] = []
    for _ in range(_MAX_PASSES):
        text, more = _scrub_once(text, regions, numbering)
        found.extend(more)
        if not more:
            break
    return text, found


_MAX_PASSES = 4
_ASCII_DIGIT = re.compile("[0-9]")


def _may_hold_pii(text: str) -> bool:
    """Whether ``text`` has an "@" or a digit (``str.isdigit``), which every PII kind has."""
    if "@" in text:
        return True
    if text.isascii():  # one regex scan instead of a generator step per character
        return _ASCII_DIGIT.search(text) is not None
    return any(char.isdigit() for char in text)


def _scrub_once(
    text: str, regions: Sequence[str], numbering: _Numbering
) -> tuple[str, list[tuple[str, str, str]]]:
    taken: list[_Found] = []

    def free(item: _Found) -> bool:
        return all(item.end <= t.start or item.start >= t.end for t in taken)

    finders: tuple[Callable[[str], list[_Found]], ...] = (
        _find_emails,
        _find_ibans,
        _find_cards,
        _find_ssns,
        _find_cvvs,
        lambda t: _find_phones(t, regions),
    )
    if _may_hold_pii(text):
        for finder in finders:
            for item in finder(text):
                if free(item):
                    taken.append(item)
    taken.sort(key=lambda item: item.start)
    out: list[str] = []
    found: list[tuple[str, str, str]] = []
    position = 0
    for item in taken:
        marker = pii_marker(item.kind, numbering.number(item.kind, item.key))
        out.append(text[position : item.start])
        out.append(marker)
        found.append((item.kind, text[item.start : item.end], marker))
        position = item.end
    out.append(text[position:])
    return "".join(out), found


@dataclass
class _Numbering:
    """Numbers per kind, in order of first appearance; equal values share one."""

    numbers: dict[tuple[str, str], int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def number(self, kind: str, key: str) -> int:
        if (kind, key) not in self.numbers:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.numbers[(kind, key)] = self.counts[kind]
        return self.numbers[(kind, key)]


_KIND_WORDS = {
    "email": ("email address", "email addresses"),
    "phone": ("phone number", "phone numbers"),
    "card": ("card number", "card numbers"),
    "iban": ("IBAN", "IBANs"),
    "ssn": ("social security number", "social security numbers"),
    "cvv": ("card security code", "card security codes"),
}
assert tuple(_KIND_WORDS) == PII_KINDS


class PiiScrubber:
    """Redact PII in every string of the payload, as numbered markers.

    Emails: ``local@domain.tld``. Phone numbers (``phonenumbers``): international (``+`` or
    ``00`` and a country code) in any grouping, and national formats of ``regions`` (tried
    in order: ``020 7946 0958`` for GB, ``030 12345678`` for DE, ``(415) 555-0132`` for
    US); a bare run of digits counts only right after a word like "phone" or "call", so an
    order number is kept; dates and IP addresses are not phones. Card numbers: 13 to 19
    digits starting 2 to 6, any separators between them (spaces, dots, dashes, slashes,
    NBSP, thin spaces), passing Luhn. IBANs: the country's length and the mod-97 checksum,
    grouped or not. US SSNs: ``AAA-GG-SSSS`` (or spaces) with a valid area (not 000, 666,
    9xx), group (not 00) and serial (not 0000); nine bare digits only after "SSN". CVVs: 3
    or 4 digits right after "CVV", "CVC", "security code" and the like (a few languages).
    Numbers held as JSON numbers and object keys are left as they are. One ``Change`` per
    redaction, with the marker and no trace of the value.
    """

    name = "pii-scrubber"

    def __init__(self, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> None:
        self.regions = tuple(regions)

    def __call__(self, payload: dict[str, Any], state: GuardrailState) -> GuardrailDecision:
        changes: list[Change] = []
        scrubbed = _scrub_under(payload, (), changes, self.regions, _Numbering())
        if not changes:
            return GuardrailDecision(
                policy=self.name,
                action="allow",
                reason="no email addresses, phone numbers, card numbers, IBANs, SSNs or "
                "card security codes found",
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


def redact_pii(value: Any, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> Any:
    """``value`` (any JSON value) with the PII in its strings replaced by numbered markers,
    as the scrubber does before a model call: for what the ledger records of a payload
    (a gate's context) when it must keep no raw PII."""
    return _scrub_under(value, (), [], regions, _Numbering())


def _scrub_under(
    value: Any,
    parts: tuple[str | int, ...],
    changes: list[Change],
    regions: Sequence[str],
    numbering: _Numbering,
) -> Any:
    # ``parts``: keys (as text) and list indices down to ``value``; the path is written out
    # only for a change (most strings have none, and writing each path cost more than
    # reading its string).
    kind = type(value)  # exact types first: in the workflow sandbox isinstance is slow
    if kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is str or isinstance(value, str):
        text, found = _scrub(value, regions, numbering)
        if found:
            path = _path(parts)
            for pii_kind, _original, marker in found:
                changes.append(Change(path=path or "$", kind=pii_kind, after=marker))
        return text
    if kind is dict or isinstance(value, Mapping):
        return {
            key: _scrub_under(item, (*parts, str(key)), changes, regions, numbering)
            for key, item in value.items()
        }
    if kind is list or isinstance(value, list | tuple):
        items = [
            _scrub_under(item, (*parts, i), changes, regions, numbering)
            for i, item in enumerate(value)
        ]
        return items if isinstance(value, list) else tuple(items)
    return value


def _path(parts: tuple[str | int, ...]) -> str:
    """The path ``parts`` lead down, e.g. ``a.b[0]["odd key"]`` (an int is a list index)."""
    path = ""
    for part in parts:
        path = f"{path}[{part}]" if type(part) is int else _join(path, part)
    return path


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _join(path: str, key: Any) -> str:
    key = str(key)
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
