"""Scrubbing secrets out of provider error texts before Keel stores them anywhere.

A provider's error can echo the credential it refused (OpenAI's 401 says "Incorrect API
key provided: sk-proj-abc*****xyz"). Whatever Keel keeps of such an error (the activity's
``ApplicationError`` in Temporal history, ``AgentCallFailed``/``NodeFailed`` in the ledger,
the worker's log line, the activity's span) goes through ``scrub_secrets`` first.

Pure functions over ``re``, no I/O: the agent-node activity calls them with the worker's
configured keys, and workflow code calls them again (patterns only) as defence in depth.

What is replaced, each by a marker such as ``[redacted:openai-key]``:

- the exact values passed as ``known`` (the worker's configured API keys, of any shape);
- masked echoes: any token with a run of four or more ``*`` (``sk-proj-abc****xyz``);
- OpenAI (``sk-``, ``sk-proj-``, ...) and Anthropic (``sk-ant-``) keys, AWS access key
  ids (``AKIA``/``ASIA``), GitHub tokens (``ghp_``, ``github_pat_``, ...), Google API
  keys (``AIza``), Slack tokens (``xox?-``), JWTs (``eyJ...`` in three segments);
- ``Bearer``/``Basic`` credentials, the value of ``api_key=...``, ``api-key: ...``,
  ``secret``, ``password``, ``token``, ``authorization`` pairs, and the user info of a URL
  (``https://user:pass@host``);
- long high-entropy runs: 32 or more hex digits, or 32 or more base64/base64url characters
  mixing upper case, lower case and digits.

What stays: ordinary words and identifiers (``risk-classifier@1``, order numbers such as
``AB-104233``), URLs without credentials, UUIDs, and provider request ids (``req_...``,
``msg_...``, ``chatcmpl-...``), which support needs. A 64-hex SHA-256 digest *inside a
provider error text* is replaced: it cannot be told from a hex key (Azure OpenAI keys are
32 hex digits). That costs nothing, because the scrubber runs only over provider error
texts, never over the ledger's own hashes and digests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MIN_KNOWN_SECRET_CHARS = 6
"""Shorter configured values are not matched verbatim (they would shred ordinary text);
the patterns still apply to them."""

_BOUNDARY = r"(?<![A-Za-z0-9_\-])"
_TOKEN_CHARS = r"[A-Za-z0-9_\-*]"

# Order matters: specific shapes first, so a key gets its own label, generic runs last.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("anthropic-key", re.compile(_BOUNDARY + r"sk-ant-" + _TOKEN_CHARS + r"{8,}")),
    ("openai-key", re.compile(_BOUNDARY + r"sk-" + _TOKEN_CHARS + r"{12,}")),
    ("masked-key", re.compile(r"[A-Za-z0-9_\-]*\*{4,}[A-Za-z0-9_\-*]*")),
    ("github-token", re.compile(_BOUNDARY + r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,})")),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("google-api-key", re.compile(_BOUNDARY + r"AIza[A-Za-z0-9_\-]{30,}")),
    ("slack-token", re.compile(_BOUNDARY + r"xox[abposr]-[A-Za-z0-9\-]{10,}")),
    ("jwt", re.compile(_BOUNDARY + r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]+")),
)
_URL_USERINFO = re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@")
_SCHEME_CREDENTIAL = re.compile(
    r"\b(Bearer|Basic|Token)(\s+)(?!\[redacted)([A-Za-z0-9._~+/\-=*]{8,})", re.IGNORECASE
)
_KEY_VALUE = re.compile(
    r"((?<![A-Za-z0-9])[A-Za-z0-9_\-]*"
    r"(?:api[_\- ]?key|secret|password|passwd|token|authorization|credentials?)"
    r"[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token)\s+)?)"
    r"(?!\[redacted)(?!(?:bearer|basic|token)\s)([^\s\"',;&)\]}]{4,})",
    re.IGNORECASE,
)
_LONG_RUN = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{32,}={0,2}")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")
_ID_PREFIXES = ("req_", "req-", "msg_", "chatcmpl-", "resp_", "run_", "call_", "toolu_")


def marker(kind: str) -> str:
    """The text that stands in for a removed secret of ``kind``."""
    return f"[redacted:{kind}]"


def scrub_secrets(text: str, known: Iterable[str | None] = ()) -> str:
    """``text`` with everything key-shaped replaced by a ``[redacted:<kind>]`` marker.

    Args:
        text: a provider error message (or any text bound for history, ledger or logs).
        known: exact secret values to remove whatever their shape (the configured API
            keys); empty, ``None`` and very short values are skipped.

    Returns:
        The scrubbed text; unchanged when nothing secret-shaped was found.
    """
    values = sorted(
        {v for v in known if v and len(v) >= MIN_KNOWN_SECRET_CHARS}, key=len, reverse=True
    )
    for value in values:
        if value in text:
            text = text.replace(value, marker(_kind_of(value)))
    text = _URL_USERINFO.sub(marker("credentials") + "@", text)
    for kind, pattern in _PATTERNS:
        text = pattern.sub(marker(kind), text)
    text = _KEY_VALUE.sub(lambda m: f"{m[1]}{marker('secret')}", text)
    text = _SCHEME_CREDENTIAL.sub(_scheme_credential, text)
    return _LONG_RUN.sub(_long_run, text)


def scrub_value(value: Any, known: Iterable[str | None] = ()) -> Any:
    """``value`` with every string in it (keys included) scrubbed: for error details."""
    secrets = tuple(known)
    if isinstance(value, str):
        return scrub_secrets(value, secrets)
    if isinstance(value, dict):
        return {scrub_value(k, secrets): scrub_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_value(v, secrets) for v in value)
    return value


def _kind_of(value: str) -> str:
    """The label of a known secret: the pattern it matches, else ``configured-secret``."""
    for kind, pattern in _PATTERNS:
        if kind != "masked-key" and pattern.fullmatch(value):
            return kind
    return "configured-secret"


def _scheme_credential(match: re.Match[str]) -> str:
    """``Bearer <anything>``; ``Basic``/``Token`` only before a value no word looks like."""
    scheme, space, value = match[1], match[2], match[3]
    if scheme.lower() != "bearer" and not re.search(r"[0-9+/=]", value):
        return match[0]  # "Basic information", "token expired"
    return f"{scheme}{space}{marker('credential')}"


def _long_run(match: re.Match[str]) -> str:
    run = match[0]
    if run.startswith(_ID_PREFIXES):
        return run
    if _HEX.fullmatch(run):
        return marker("hex-secret")
    body = run.rstrip("=")
    mixed = (
        any(c.isupper() for c in body)
        and any(c.islower() for c in body)
        and any(c.isdigit() for c in body)
    )
    return marker("high-entropy") if mixed else run
