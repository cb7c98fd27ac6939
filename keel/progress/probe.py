"""Whether a Redis answers, without loading redis-py: one ``PING`` over RESP.

A worker checks this at start so that a Redis that does not answer is said at once; the
client library (about 9 MiB resident) is loaded only when progress is first appended.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 6379


async def redis_problem(url: str, timeout: float = 2.0) -> str | None:
    """Why the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``) cannot be reached
    right now, or None when it answers (any reply counts: a Redis that wants a password
    answers ``-NOAUTH`` to a bare ``PING``; the client authenticates on first use)."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "unix":
            opened = asyncio.open_unix_connection(unquote(parts.path))
        elif scheme in ("redis", "rediss"):
            tls = ssl.create_default_context() if scheme == "rediss" else None
            opened = asyncio.open_connection(
                parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORT, ssl=tls
            )
        else:
            return f"not a Redis URL (scheme {scheme!r}; use redis://, rediss:// or unix://)"
        async with asyncio.timeout(timeout):
            reader, writer = await opened
            try:
                writer.write(b"*1\r\n$4\r\nPING\r\n")
                await writer.drain()
                reply = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return f"TimeoutError: no answer in {timeout:g} s"
    except (OSError, ValueError) as err:  # refused, unresolvable, a bad port in the URL
        return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    if reply[:1] not in (b"+", b"-"):
        return f"not a Redis: it answered {reply[:40]!r}"
    return None
