# ruff: noqa: RUF002
"""Normalising untrusted text before the injection patterns read it.

An attacker writes instructions so that a pattern does not see them: look-alike letters
(Cyrillic ``о`` for ``o``), zero-width characters between letters, fullwidth forms, accents,
HTML entities and comments, URL-encoding, base64, rot13, reversed text, letters spaced
apart. ``views`` turns one text into every form the patterns read, each tagged with how it
was derived, so a hit can say "in base64-decoded text".

Everything here is pure and deterministic (``re``, ``unicodedata``, ``html``, ``codecs``,
``urllib.parse`` and a generated table), so it runs in workflow code.
"""

from __future__ import annotations

import codecs
import html
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote_plus

from keel.contracts.guardrails._confusables import FOLD

MAX_DECODE_DEPTH = 2
"""How deep decodings nest (base64 of URL-encoded text is two)."""
MAX_DECODED_BLOBS = 32
"""Base64 runs decoded per text, at most: a text of many blobs cannot make the check slow."""

# Characters that render as nothing (format characters, variation selectors, tag
# characters, the combining grapheme joiner, Hangul fillers, soft hyphen).
_INVISIBLE_CHARS = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e0fff"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a]"
)
# Arabic diacritics and tatweel (kashida): decoration an attacker can sprinkle freely.
_ARABIC_MARKS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
# Runs of whitespace but line breaks, as one space: a lone space is left alone (most of them,
# and replacing each by itself is what made this slow), which changes no result.
_SPACE = re.compile(r"[^\S\n]{2,}|[^\S\n ]")
_NEWLINES = re.compile(r" ?\n[\s]*")
_LINE_BREAK_RUN = re.compile(r"\n\s*")
_ODD_ASCII_SPACE = re.compile("[\t\r\x0b\x0c\x1c-\x1f]")
# Leetspeak inside a word that has letters: "1gn0re", "pr3vious".
_LEET_WORD = re.compile(r"(?<!\w)(?=\w*[a-z])(?=\w*[0-9@$])[\w@$]{3,}")
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
# Letters spaced apart: "i g n o r e", "i.g.n.o.r.e", "i-g-n-o-r-e", one a line (four
# letters or more).
_SPACED = re.compile(r"(?<!\w)(?:\w[ .\-_*|/\n]{1,2}){3,}\w(?!\w)")
_SPACED_SEPARATORS = re.compile(r"[ .\-_*|/\n]")
# As they were before ``keel-guardrail-needles-2`` (no line breaks), for runs recorded before.
_SPACED_LEGACY = re.compile(r"(?<!\w)(?:\w[ .\-_*|/]{1,2}){3,}\w(?!\w)")
_SPACED_SEPARATORS_LEGACY = re.compile(r"[ .\-_*|/]")
_NOT_LETTER = re.compile(r"[^a-z]+")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_HTML_TAG = re.compile(r"</?[a-zA-Z][^<>]{0,200}>")
_URL_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")
_CODE_ESCAPE = re.compile(r"\\u[0-9a-fA-F]{4}|\\x[0-9a-fA-F]{2}")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUES = {c: i for i, c in enumerate(_B64)} | {"-": 62, "_": 63}


@dataclass(frozen=True)
class View:
    """One form of the text the patterns read."""

    text: str
    how: str
    """How it was derived: ``""`` for the text itself, else e.g. ``base64-decoded``."""
    script: str
    """``plain`` (NFKC, casefolded, invisible characters dropped: every language's
    patterns), ``latin`` (also accents dropped, look-alikes and leetspeak folded to ASCII:
    the patterns of languages written in Latin letters), ``both`` (a text with nothing to
    fold: every pattern) or ``squashed`` (a ``latin`` text with everything but letters
    removed: a few strong phrases are looked for there)."""


def plain(text: str) -> str:
    """``text`` with invisible characters dropped, NFKC, casefolded, whitespace collapsed
    (line breaks kept, one per run: role headers are told by where a line starts)."""
    if text.isascii():  # nothing invisible, NFKC changes nothing, casefold is lower
        text = text.lower()
    else:
        text = _INVISIBLE_CHARS.sub("", text)
        text = unicodedata.normalize("NFKC", text).casefold()
        text = _ARABIC_MARKS.sub("", text)
    return _collapse_whitespace(text)


def _collapse_whitespace(text: str) -> str:
    r"""``_NEWLINES.sub("\n", _SPACE.sub(" ", text)).strip()``, without the scans that
    would change nothing: most text has single spaces only and few line breaks."""
    if not text.isascii() or "  " in text or _ODD_ASCII_SPACE.search(text):
        text = _SPACE.sub(" ", text)
    if "\n" in text:
        # Runs are single spaces now: a space before a line break, then the break and the
        # whitespace after it, become one line break (a literal-led pattern: a fast scan).
        text = _LINE_BREAK_RUN.sub("\n", text.replace(" \n", "\n"))
    return text.strip()


def skeleton(plain_text: str) -> str:
    """A ``plain`` text with accents dropped and look-alikes and leetspeak folded to ASCII."""
    if not plain_text.isascii():
        stripped = "".join(
            c for c in unicodedata.normalize("NFD", plain_text) if not unicodedata.combining(c)
        )
        plain_text = stripped.translate(FOLD)
    return _LEET_WORD.sub(lambda m: m.group(0).translate(_LEET), plain_text)


def unspaced(latin: str, *, legacy: bool = False) -> str:
    """Runs of letters spaced apart joined up: ``i g n o r e`` -> ``ignore``; ``legacy``:
    as before ``keel-guardrail-needles-2`` (letters one a line not joined)."""
    spaced, separators = (
        (_SPACED_LEGACY, _SPACED_SEPARATORS_LEGACY) if legacy else (_SPACED, _SPACED_SEPARATORS)
    )
    return spaced.sub(lambda m: separators.sub("", m.group(0)), latin)


def squashed(latin: str) -> str:
    """A ``latin`` text with everything but letters removed: ``i-g-n  o.r.e`` -> ``ignore``."""
    return _NOT_LETTER.sub("", latin)


def rot13(text: str) -> str:
    """``text`` in rot13 (its own inverse)."""
    return codecs.encode(text, "rot13")


def b64_text(blob: str) -> str | None:
    """The text a base64 (or base64url) run decodes to, if it is mostly printable UTF-8."""
    data = blob.rstrip("=")[:4000]
    data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data
    out = bytearray()
    bits = 0
    count = 0
    for char in data:
        bits = ((bits << 6) | _B64_VALUES[char]) & 0xFFFFFF
        count += 6
        if count >= 8:
            count -= 8
            out.append((bits >> count) & 0xFF)
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(char.isprintable() or char in "\n\r\t" for char in text)
    letters = sum(char.isalpha() for char in text)
    if not text or printable < 0.95 * len(text) or letters < 0.5 * len(text):
        return None
    return text


def decodings(text: str) -> list[tuple[str, str]]:
    """``(how, decoded)`` for each encoding ``text`` seems to hold, one level deep."""
    found: list[tuple[str, str]] = []
    if "&" in text:
        unescaped = html.unescape(text)
        if unescaped != text:
            found.append(("html-entities-decoded", unescaped))
    if "<" in text:
        stripped = _HTML_TAG.sub("", _HTML_COMMENT.sub("", text))
        if stripped != text:
            found.append(("html-comments-and-tags-removed", stripped))
    if _URL_ESCAPE.search(text):
        decoded = unquote_plus(text)
        if decoded != text:
            found.append(("url-decoded", decoded))
    if "\\" in text and _CODE_ESCAPE.search(text):
        found.append(
            ("escapes-decoded", _CODE_ESCAPE.sub(lambda m: chr(int(m.group(0)[2:], 16)), text))
        )
    blobs = 0
    for match in _BASE64_RUN.finditer(text):
        run = match.group(0)
        if run.isalpha() or run.isdigit():
            continue  # a plain word or number, not an encoding
        text_of_blob = b64_text(run)
        if text_of_blob is not None:
            found.append(("base64-decoded", text_of_blob))
        blobs += 1
        if blobs >= MAX_DECODED_BLOBS:
            break
    return found


def views(text: str, *, legacy: bool = False) -> list[View]:
    """Every form of ``text`` the patterns read, the text itself first.

    For the text and each decoding (nested up to ``MAX_DECODE_DEPTH``): its ``plain`` form
    and its ``latin`` skeleton; for the text itself also the skeleton unspaced, in rot13 and
    reversed. Identical forms are read once.
    """
    out: list[View] = []
    seen: set[tuple[str, str]] = set()

    def add(value: str, how: str, script: str) -> None:
        if (value, script) not in seen and value:
            seen.add((value, script))
            out.append(View(value, how, script))

    def expand(raw: str, how: str, depth: int) -> None:
        base = plain(raw)
        latin = skeleton(base)
        if latin == base:  # nothing to fold: one form, read by every pattern
            add(base, how, "both")
        else:
            add(base, how, "plain")
            add(latin, how, "latin")
        if depth == 0:
            joined = unspaced(latin, legacy=legacy)
            if joined != latin:  # letters spaced apart: read them also with nothing between
                add(joined, "letters-joined", "latin")
                add(squashed(latin), "letters-only", "squashed")
            add(rot13(latin), "rot13-decoded", "latin")
            add(latin[::-1], "reversed", "latin")
        if depth < MAX_DECODE_DEPTH:
            for kind, decoded in decodings(raw):
                expand(decoded, kind if not how else f"{how}, {kind}", depth + 1)

    expand(text, "", 0)
    return out
