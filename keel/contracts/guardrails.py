"""Guardrails: a chain of policies that judges an agent node's input before every model call.

Each policy looks at the node's input payload (a JSON object) and returns a
``GuardrailDecision``: ``allow``, ``deny`` (with the reason), or ``modify`` (with the changes
it made). ``apply_guardrails`` runs the chain a contract declares (``GuardrailConfig``) in a
fixed order and stops at the first denial:

1. ``PromptInjectionCheck`` on the raw text of the untrusted fields (customer text);
2. ``PiiScrubber``: emails, phone numbers and payment card numbers become markers;
3. ``TokenBudget`` on the scrubbed payload: the workflow's tokens so far plus this call's
   estimate must stay within the budget.

Everything here is pure and deterministic (no randomness, no clock, no I/O; only ``re``,
``hashlib``, ``json``, ``unicodedata`` and pydantic), so it runs in workflow code: checking a
call costs no activity, and replay reaches the same decisions.

The checks are heuristics. The PII patterns find the common shapes (see ``PiiScrubber``),
not every way to write a value; the injection patterns catch the well-known attacks, not a
determined adversary. They reduce risk; they are not a proof of safety.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CARD_MARKER",
    "EMAIL_MARKER",
    "GUARDRAIL_DENIED_ERROR",
    "PHONE_MARKER",
    "Change",
    "GuardrailAction",
    "GuardrailConfig",
    "GuardrailDecision",
    "GuardrailOutcome",
    "GuardrailPolicy",
    "GuardrailState",
    "PiiScrubber",
    "PromptInjectionCheck",
    "TokenBudget",
    "apply_guardrails",
    "estimate_tokens",
    "guardrail_chain",
    "injection_hits",
    "luhn_valid",
    "prompt_overhead_tokens",
    "run_policies",
    "scrub_text",
]

GuardrailAction = Literal["allow", "deny", "modify"]

GUARDRAIL_DENIED_ERROR = "GuardrailDenied"
"""Error type for a denied model call (e.g. a non-retryable ``ApplicationError``)."""

EMAIL_MARKER = "[email redacted]"
PHONE_MARKER = "[phone redacted]"
CARD_MARKER = "[card redacted]"


class Change(BaseModel):
    """One modification a policy made, recorded without the raw value it replaced."""

    model_config = ConfigDict(frozen=True)

    path: str
    """Where in the payload: ``customer.message``, ``items[2].note``, ``["odd key"]``."""
    kind: str
    """What was replaced: ``email``, ``phone`` or ``card`` for the PII scrubber."""
    before_sha256: str
    """sha256 of the original value (UTF-8): equal values give equal hashes, so occurrences
    can be correlated without storing the value. Short values such as phone numbers can be
    recovered from their hash by enumeration: treat the ledger as confidential anyway."""
    after: str
    """What the value became, e.g. ``[email redacted]``."""


class GuardrailDecision(BaseModel):
    """What one policy decided about one model call."""

    model_config = ConfigDict(frozen=True)

    policy: str
    action: GuardrailAction
    reason: str
    changes: list[Change] = Field(default_factory=list)
    modified: dict[str, Any] | None = Field(default=None, exclude=True, repr=False)
    """For ``modify``: the payload after this policy's changes. Not serialized: the ledger
    records the changes, and the payload itself goes to the model call."""


class GuardrailConfig(BaseModel):
    """The guardrails an agent contract declares."""

    model_config = ConfigDict(frozen=True)

    token_budget: int | None = Field(20_000, ge=1)
    """Estimated tokens one workflow may spend on model calls; ``None``: no budget."""
    scrub_pii: bool = True
    """Redact emails, phone numbers and card numbers before the model sees the input."""
    untrusted_fields: tuple[str, ...] = ()
    """Payload fields holding text from outside (customer text), checked for prompt
    injection. A dotted path reaches into objects (``email.body``); every string under the
    field (and every key) is checked. Missing fields are skipped."""


class GuardrailState(BaseModel):
    """What the workflow knows when it asks for a model call."""

    model_config = ConfigDict(frozen=True)

    tokens_used: int = Field(0, ge=0)
    """Tokens the workflow's earlier model calls used (input plus output)."""
    prompt_tokens_estimate: int = Field(0, ge=0)
    """Estimated tokens the prompt adds around the payload (system prompt, template,
    output schema, feedback): see ``prompt_overhead_tokens``. ``TokenBudget`` adds the
    payload's own estimate to it."""


class GuardrailOutcome(BaseModel):
    """The result of the chain: the payload to send, every decision, and any denial."""

    payload: dict[str, Any]
    """The payload after every modification. The caller's payload is never mutated; when no
    policy modified it, this is that same object."""
    decisions: list[GuardrailDecision]
    """In chain order, up to and including a denial."""
    denied: GuardrailDecision | None = None

    @property
    def allowed(self) -> bool:
        return self.denied is None

    @property
    def message(self) -> str:
        """A sentence for a person: why the call was refused, or that it may proceed."""
        if self.denied is None:
            return "the guardrails allowed the model call"
        return f"guardrail '{self.denied.policy}' denied the model call: {self.denied.reason}"


GuardrailPolicy = Callable[[dict[str, Any], GuardrailState], GuardrailDecision]
"""A policy: the payload (after earlier policies' modifications) and the state in, a
decision out. Policies never mutate the payload; ``modify`` carries the new one."""


# ---------------------------------------------------------------------------------------
# Token budget


def estimate_tokens(text: str) -> int:
    """An estimate of the tokens ``text`` costs: characters / 4, rounded up.

    An estimate, not a tokenizer's count: about right for English prose, low for code,
    numbers and non-Latin scripts. Deterministic, which is what workflow code needs.
    """
    return (len(text) + 3) // 4


def prompt_overhead_tokens(
    system_prompt: str,
    prompt_template: str,
    output_schema: Mapping[str, Any] | None = None,
    feedback: Sequence[str] = (),
) -> int:
    """Estimated tokens of the prompt around the payload, for ``GuardrailState``.

    Pass a contract's ``system_prompt``, ``prompt_template`` and ``output_schema`` and the
    attempt's feedback. The template's ``$field`` placeholders are counted as written; the
    payload is counted by ``TokenBudget``.
    """
    total = estimate_tokens(system_prompt) + estimate_tokens(prompt_template)
    if output_schema is not None:
        total += estimate_tokens(_canonical_json(output_schema))
    return total + sum(estimate_tokens(item) for item in feedback)


class TokenBudget:
    """Deny a call that would take the workflow past its token budget.

    The call's cost is ``state.prompt_tokens_estimate`` plus the estimate of the payload's
    canonical JSON; denied when ``tokens_used`` plus that exceeds the budget.
    """

    name = "token-budget"

    def __init__(self, budget: int) -> None:
        if budget < 1:
            raise ValueError("a token budget must be at least 1")
        self.budget = budget

    def __call__(self, payload: dict[str, Any], state: GuardrailState) -> GuardrailDecision:
        estimate = state.prompt_tokens_estimate + estimate_tokens(_canonical_json(payload))
        total = state.tokens_used + estimate
        numbers = (
            f"{state.tokens_used:,} tokens used so far + about {estimate:,} for this call "
            f"= {total:,}"
        )
        if total > self.budget:
            return GuardrailDecision(
                policy=self.name,
                action="deny",
                reason=(
                    f"token budget exceeded: {numbers}, over the workflow's budget of "
                    f"{self.budget:,} (estimate: characters / 4). Shorten the input, or raise "
                    "the contract's guardrails token_budget if this workflow needs more."
                ),
            )
        return GuardrailDecision(
            policy=self.name,
            action="allow",
            reason=f"within the token budget: {numbers} of {self.budget:,}",
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


# ---------------------------------------------------------------------------------------
# The chain


def run_policies(
    payload: dict[str, Any], policies: Sequence[GuardrailPolicy], state: GuardrailState
) -> GuardrailOutcome:
    """Run ``policies`` in order, each on the payload as the ones before left it; stop at
    the first denial."""
    decisions: list[GuardrailDecision] = []
    current = payload
    for policy in policies:
        decision = policy(current, state)
        decisions.append(decision)
        if decision.action == "deny":
            return GuardrailOutcome(payload=current, decisions=decisions, denied=decision)
        if decision.action == "modify" and decision.modified is not None:
            current = decision.modified
    return GuardrailOutcome(payload=current, decisions=decisions)


def guardrail_chain(config: GuardrailConfig) -> list[GuardrailPolicy]:
    """The policies ``config`` turns on, in their fixed order."""
    chain: list[GuardrailPolicy] = []
    if config.untrusted_fields:
        chain.append(PromptInjectionCheck(config.untrusted_fields))
    if config.scrub_pii:
        chain.append(PiiScrubber())
    if config.token_budget is not None:
        chain.append(TokenBudget(config.token_budget))
    return chain


def apply_guardrails(
    payload: dict[str, Any], config: GuardrailConfig, state: GuardrailState
) -> GuardrailOutcome:
    """Judge one model call: prompt-injection check on the raw untrusted text, then PII
    scrubbing, then the token budget on the scrubbed payload; stop at the first denial.

    Policies that ``config`` turns off are not run and leave no decision. ``payload`` is
    not mutated; ``outcome.payload`` is what to send to the model.
    """
    return run_policies(payload, guardrail_chain(config), state)


def _canonical_json(value: Any) -> str:
    # Same form as keel.contracts.agent.canonical_json; not imported, so that the agent
    # contract can import this module.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
