"""The prompt-injection check on untrusted fields."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from keel.contracts.guardrails._models import GuardrailDecision, GuardrailState
from keel.contracts.guardrails._pii import _join, scrub_text

# ---------------------------------------------------------------------------------------
# Prompt injection

_I = re.IGNORECASE

# Words that make "ignore ... rules" about the model's instructions rather than the
# customer's own (``ignore my previous email`` must pass).
_SCOPE = (
    r"(?:all|any|every|previous|prior|above|earlier|preceding|foregoing|former|system|"
    r"original|initial|developer|safety)"
)
_FILLER = r"(?:the|these|those|of|your|all|any|every|above|previous|prior|system)"
_RULES = (
    r"(?:instructions?|prompts?|directives?|commands?|programming|guidelines|guardrails|"
    r"rules|context|constraints|restrictions|directions)"
)
_AI = (
    r"(?:ai|assistant|chatbot|bot|model|llm|gpt|chatgpt|dan|jailbroken|unrestricted|"
    r"uncensored|unfiltered|unlocked|evil|admin|administrator|root|superuser)"
)

_INJECTION_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "ignore-instructions",
        re.compile(
            rf"\b(?:ignore|disregard|forget|bypass|override)\s+(?:{_FILLER}\s+){{0,3}}?"
            rf"{_SCOPE}\s+(?:{_FILLER}\s+){{0,3}}?{_RULES}\b",
            _I,
        ),
    ),
    (
        "ignore-instructions",
        re.compile(
            r"\b(?:ignore|disregard|forget|bypass|override)\s+(?:all\s+)?(?:of\s+)?your\s+"
            r"(?:[\w-]+\s+){0,2}?(?:instructions?|prompts?|programming|directives?|"
            r"guardrails|training|guidelines|rules)\b",
            _I,
        ),
    ),
    (
        "ignore-instructions",
        re.compile(
            r"\b(?:ignore|disregard|forget)\s+(?:everything|anything|all)\s+(?:that\s+)?"
            r"(?:above|before|previously|prior|earlier|"
            r"(?:you\s+(?:were|have\s+been)\s+(?:told|given|instructed)))\b",
            _I,
        ),
    ),
    (
        "ignore-instructions",
        re.compile(r"\b(?:system|admin|developer|security|safety)\s+override\b", _I),
    ),
    (
        "role-override",
        re.compile(
            rf"\byou\s+are\s+now\s+(?:(?:a|an|the|in|my)\s+)?(?:[\w-]+\s+){{0,2}}?{_AI}\b",
            _I,
        ),
    ),
    (
        "role-override",
        re.compile(
            r"\byou\s+are\s+no\s+longer\s+(?:bound|restricted|limited|an?\s+(?:ai|assistant))\b",
            _I,
        ),
    ),
    (
        "role-override",
        re.compile(
            rf"\bfrom\s+now\s+on,?\s+you\s+(?:are|will\s+be|will\s+act\s+as|must\s+act\s+as)"
            rf"\s+(?:(?:a|an|the|my)\s+)?(?:[\w-]+\s+){{0,2}}?{_AI}\b",
            _I,
        ),
    ),
    (
        "system-prompt",
        re.compile(
            r"\b(?:system|hidden|secret|developer)\s+prompt\b"
            r"|\byour\s+(?:initial|original|first)\s+(?:prompt|instructions)\b",
            _I,
        ),
    ),
    (
        "reveal-instructions",
        re.compile(
            # Verbs a customer rarely aims at "your instructions" ...
            r"\b(?:reveal|output|dump|leak|disclose|recite|write\s+out|spell\s+out)\s+"
            r"(?:me\s+|us\s+)?(?:(?:all|back|out|of|everything\s+in)\s+)*"
            r"your\s+(?:[\w-]+\s+){0,2}?(?:instructions|directives|programming|configuration)\b"
            # ... and any verb when the instructions are called hidden, system, original ...
            r"|\b(?:reveal|print|repeat|output|dump|leak|disclose|recite|show|display|"
            r"tell\s+me|write\s+out|spell\s+out)\s+(?:me\s+|us\s+)?"
            r"(?:(?:all|back|out|of|everything\s+in)\s+)*(?:your|the)\s+(?:[\w-]+\s+){0,2}?"
            r"(?:hidden|secret|internal|system|initial|original|confidential|developer)\s+"
            r"(?:instructions|directives|rules|guidelines)\b",
            _I,
        ),
    ),
    (
        "reveal-instructions",
        re.compile(
            r"\brepeat\s+(?:everything|all|the\s+(?:text|words|message))\s+"
            r"(?:above|before)\b",
            _I,
        ),
    ),
    (
        "role-play-jailbreak",
        re.compile(
            r"\b(?:dan|god|jailbreak|jailbroken|unrestricted|uncensored|unfiltered|sudo)"
            r"\s+mode\b|\bdo\s+anything\s+now\b|\bjailbreak\s+prompt\b|\bstay\s+in\s+character\b"
            r"|\byou(?:'re|\s+are)\s+(?:now\s+)?in\s+(?:[\w-]+\s+)?"
            r"(?:developer|admin|debug|maintenance|test)\s+mode\b",
            _I,
        ),
    ),
    (
        "role-play-jailbreak",
        re.compile(
            rf"\b(?:pretend|imagine)\s+(?:that\s+)?(?:you\s+are|you're|to\s+be)\s+"
            rf"(?:(?:a|an|the|my)\s+)?(?:[\w-]+\s+){{0,2}}?(?:{_AI}|hacker|developer)\b",
            _I,
        ),
    ),
    (
        "role-play-jailbreak",
        re.compile(
            r"\b(?:act|behave|respond|answer|reply|roleplay|role-play)\s+as\s+"
            r"(?:(?:a|an|the|my)\s+)?(?:[\w-]+\s+){0,2}?"
            r"(?:unrestricted|uncensored|unfiltered|jailbroken|evil|dan|rogue)\b"
            r"|\b(?:act|behave|respond|answer|reply)\s+(?:[\w-]+\s+){0,3}?without\s+(?:any\s+)?"
            r"(?:restrictions|filters|guidelines|limitations|censorship|safety|rules)\b"
            r"|\blet'?s\s+(?:play\s+a\s+game|role-?play)\s+(?:where|in\s+which)\s+you\b",
            _I,
        ),
    ),
    (
        "chat-markup",
        re.compile(
            r"<\|(?:im_start|im_end|system|user|assistant|endoftext)\|>"
            r"|\[/?(?:INST|SYS)\]|<</?SYS>>"
            r"|<\s*/?\s*(?:system|assistant|instructions?|tool_call|function_call)\s*>",
            _I,
        ),
    ),
    (
        "tool-override",
        re.compile(
            r"[\"'](?:role)[\"']\s*:\s*[\"'](?:system|assistant|developer|tool|function)[\"']"
            r"|[\"'](?:tool_calls|function_call|tool_choice|tool_use)[\"']\s*:"
            r"|[\"']confidence[\"']\s*:\s*-?[0-9.]",
            _I,
        ),
    ),
)

_PATTERN_DESCRIPTIONS = {
    "ignore-instructions": "an instruction to ignore the model's instructions",
    "role-override": "an attempt to give the model a new role",
    "system-prompt": "a reference to the system prompt",
    "reveal-instructions": "a request to reveal the model's instructions",
    "role-play-jailbreak": "a role-play jailbreak",
    "chat-markup": "chat-template markup that fakes a message boundary",
    "tool-override": "JSON that fakes a role, a tool call or an answer",
    "base64-blob": "a long base64 blob that may hide instructions",
    "invisible-unicode": "invisible Unicode characters that may hide instructions",
}

_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
_B64_ALPHABET = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}
_FLAG_TAGS = re.compile("\U0001f3f4[\U000e0020-\U000e007e]{1,8}\U000e007f")
_INVISIBLE = re.compile(
    # bidi embeddings and overrides ("Trojan source"); tag characters (ASCII smuggling);
    # runs of zero-width characters or of variation selectors (data hidden in text).
    "[\u202a-\u202e]|[\U000e0000-\U000e007f]"
    "|[\u200b-\u200d\u2060-\u2064\ufeff\u180e]{3,}"
    "|[\ufe00-\ufe0f\U000e0100-\U000e01ef]{2,}"
)


def _b64_text(blob: str) -> str | None:
    """The text a base64 blob decodes to, if it decodes to mostly printable UTF-8."""
    data = blob.rstrip("=")[:800]
    data = data[: len(data) - len(data) % 4]
    out = bytearray()
    bits = 0
    count = 0
    for char in data:
        bits = ((bits << 6) | _B64_ALPHABET[char]) & 0xFFFFFF
        count += 6
        if count >= 8:
            count -= 8
            out.append((bits >> count) & 0xFF)
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(char.isprintable() or char in "\n\r\t" for char in text)
    return text if text and printable >= 0.9 * len(text) else None


def _suspicious_blob(blob: str) -> bool:
    core = blob.rstrip("=")
    mixed = (
        any(c.isupper() for c in core)
        and any(c.islower() for c in core)
        and any(c.isdigit() for c in core)
    )
    return mixed and (len(core) >= 200 or _b64_text(blob) is not None)


def _normalize(text: str) -> str:
    """Text as the patterns read it: invisible format characters dropped, compatibility
    forms folded (NFKC: fullwidth letters become ASCII), whitespace collapsed."""
    visible = "".join(char for char in text if unicodedata.category(char) != "Cf")
    return " ".join(unicodedata.normalize("NFKC", visible).split())


def _excerpt(text: str, start: int, end: int) -> str:
    snippet = text[start:end]
    if len(snippet) > 60:
        snippet = snippet[:57] + "..."
    return scrub_text(snippet)[0]


def injection_hits(text: str) -> list[tuple[str, str]]:
    """``(pattern, excerpt)`` for every injection pattern ``text`` matches, in a fixed order."""
    hits: list[tuple[str, str]] = []
    without_flags = _FLAG_TAGS.sub("", text)
    invisible = _INVISIBLE.search(without_flags)
    if invisible:
        codes = " ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(invisible.group(0)))
        hits.append(("invisible-unicode", codes))
    normal = _normalize(text)
    seen: set[str] = set()
    for name, pattern in _INJECTION_PATTERNS:
        if name in seen:
            continue
        match = pattern.search(normal)
        if match:
            seen.add(name)
            hits.append((name, _excerpt(normal, match.start(), match.end())))
    for match in _BASE64_RUN.finditer(text):
        if _suspicious_blob(match.group(0)):
            hits.append(("base64-blob", f"{len(match.group(0))} characters"))
            break
    return hits


class PromptInjectionCheck:
    """Deny a call whose untrusted fields carry known prompt-injection patterns.

    Only the named fields are read: system-authored fields may legitimately talk about
    instructions. Matching is case-insensitive, ignores invisible characters and folds
    fullwidth letters. Patterns: instructions to ignore the instructions, "you are now"
    role overrides, the system prompt, requests to reveal the instructions, role-play
    jailbreaks, chat-template markup, JSON faking a role, a tool call or an answer,
    base64 blobs that decode to text (or are very long), and invisible Unicode (bidi
    overrides, tag characters, runs of zero-width characters or variation selectors).
    Ordinary requests ("please ignore my previous email") pass.
    """

    name = "prompt-injection"

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = tuple(fields)

    def __call__(self, payload: dict[str, Any], state: GuardrailState) -> GuardrailDecision:
        found: list[str] = []
        checked = 0
        for field in self.fields:
            present, value = _lookup(payload, field)
            if not present:
                continue
            for path, text in _strings(value, field):
                checked += 1
                for pattern, excerpt in injection_hits(text):
                    found.append(
                        f"field '{path}' matched {pattern} "
                        f'({_PATTERN_DESCRIPTIONS[pattern]}): "{excerpt}"'
                    )
        if found:
            listed = "; ".join(found[:5])
            more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
            return GuardrailDecision(
                policy=self.name,
                action="deny",
                reason=(
                    f"possible prompt injection in untrusted input: {listed}{more}. "
                    "The text was not sent to the model; have a person review it, or "
                    "remove the instructions from the input and start again."
                ),
            )
        fields = ", ".join(self.fields) or "none declared"
        return GuardrailDecision(
            policy=self.name,
            action="allow",
            reason=(
                f"no prompt-injection pattern in {checked} untrusted "
                f"{'string' if checked == 1 else 'strings'} (fields: {fields})"
            ),
        )


def _lookup(payload: Mapping[str, Any], field: str) -> tuple[bool, Any]:
    """The value at ``field``: a top-level key, or a dotted path through objects."""
    if field in payload:
        return True, payload[field]
    value: Any = payload
    for part in field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string under ``value`` (object keys included), with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            child = _join(path, key)
            yield f"{child} (key)", str(key)
            yield from _strings(item, child)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
