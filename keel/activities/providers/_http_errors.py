"""HTTP details shared by the SDK-backed providers: Retry-After parsing, status classes."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

# 408 (request timeout) and 409 (conflict, e.g. a lock held by a concurrent request) are
# transient by the providers' own documentation, as are 429 and every 5xx (incl. 529).
_RETRYABLE_4XX = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """Whether a provider HTTP status is worth retrying.

    Args:
        status: HTTP status code of the error response.

    Returns:
        True for 408, 409, 429 and every 5xx status.
    """
    return status in _RETRYABLE_4XX or status >= 500


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Read how long the server asked us to wait before retrying.

    ``retry-after-ms`` (sent by OpenAI) wins over ``retry-after`` because it is more
    precise; ``retry-after`` may be a number of seconds or an HTTP-date (RFC 9110).

    Args:
        headers: response headers; any mapping, looked up case-insensitively.

    Returns:
        Seconds to wait (0 for a date already past), or None when absent or unparsable.
    """
    if not headers:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        seconds = _number(lowered.get(name))
        if seconds is not None:
            return seconds / divisor
    return _http_date_delay(lowered.get("retry-after"))


def _number(value: str | None) -> float | None:
    """A finite, non-negative number, or None (a negative wait or NaN means nothing)."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _http_date_delay(value: str | None) -> float | None:
    """Seconds from now until an HTTP-date, clamped at 0; None if it is not a date."""
    if not value:
        return None
    parsed = email.utils.parsedate_tz(value.strip())
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())
