"""A workflow's progress events in a Redis Stream, appended at most once each, in order.

Each event is stored under the stream entry id ``0-<seq>``. One Lua script appends a batch:
an event whose seq is not above the stream's last is already there (a retried activity's
append) and is skipped; the next one must be exactly last + 1, so a stream never has a gap
(an append that would leave one is refused, and the activity retries). The script runs
atomically in Redis, so two attempts racing (a worker that was presumed dead and was not)
still append each event once.

A stream whose key is gone (expired after ``retention_seconds`` without an append, or
deleted) starts again at whatever event comes next; nothing else may skip a seq.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError, ResponseError

from keel.progress.events import DEFAULT_STREAM_PREFIX, ProgressEvent, stream_key

APPEND_SCRIPT = """
local top = 0
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  top = tonumber(string.match(last[1][1], '^0%-(%d+)$') or '-1')
  if top < 0 then
    return redis.error_reply('KEEL_FOREIGN ' .. KEYS[1] .. ' holds entries Keel did not write')
  end
end
local fresh = top == 0
local added = 0
for i = 2, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > top then
    if seq ~= top + 1 and not fresh then
      local want = top + 1
      return redis.error_reply('KEEL_GAP next in ' .. KEYS[1] .. ' is ' .. want .. ', not ' .. seq)
    end
    redis.call('XADD', KEYS[1], '0-' .. seq, 'event', ARGV[i + 1])
    top = seq
    fresh = false
    added = added + 1
  end
end
if tonumber(ARGV[1]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return {added, top}
"""

READ_COUNT = 500
"""Entries one read returns at most."""


class ProgressGapError(Exception):
    """An append would leave a gap in the stream (events before it are missing)."""


class ProgressStream:
    """Append and read workflows' progress events (redis-py asyncio)."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = DEFAULT_STREAM_PREFIX,
        retention_seconds: int = 7 * 24 * 3600,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.retention_seconds = retention_seconds
        self._append = redis.register_script(APPEND_SCRIPT)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_STREAM_PREFIX,
        retention_seconds: int = 7 * 86400,
        max_connections: int | None = None,
        client_name: str | None = None,
    ) -> ProgressStream:
        """A stream store over the Redis at ``url`` (connections are made on first use).

        With ``max_connections``, it never holds more connections than that: a caller
        waits for one to be free (the progress server's readers, which each hold one while
        they wait for events). ``client_name`` names its connections in ``CLIENT LIST``."""
        options: dict[str, Any] = {"socket_connect_timeout": 5, "health_check_interval": 15}
        if client_name is not None:
            options["client_name"] = client_name
        if max_connections is None:
            redis = Redis.from_url(url, **options)
        else:
            redis = Redis.from_pool(
                BlockingConnectionPool.from_url(
                    url, max_connections=max_connections, timeout=None, **options
                )
            )
        return cls(redis, prefix=prefix, retention_seconds=retention_seconds)

    async def problem(self, timeout: float = 2.0) -> str | None:
        """Why Redis cannot be used right now (unreachable, refused), or None."""
        try:
            await asyncio.wait_for(self.redis.ping(), timeout)
        except (TimeoutError, RedisError, OSError) as err:
            return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        return None

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()

    def key(self, workflow_id: str) -> str:
        """The Redis key of ``workflow_id``'s stream."""
        return stream_key(workflow_id, self.prefix)

    async def append(self, workflow_id: str, events: Sequence[ProgressEvent]) -> tuple[int, int]:
        """Append the ``events`` not yet in the stream; returns (added, last seq).

        Raises:
            ProgressGapError: the first new event is not the one after the stream's last.
            ValueError: an event belongs to another workflow, or they are out of order.
        """
        seqs = [e.seq for e in events]
        if any(e.workflow_id != workflow_id for e in events):
            raise ValueError(f"every event must belong to workflow {workflow_id!r}")
        if seqs != sorted(set(seqs)):
            raise ValueError(f"events must be in increasing seq order, got {seqs[:10]}")
        args: list[Any] = [self.retention_seconds]
        for event in events:
            args += [event.seq, event.model_dump_json()]
        try:
            added, last = await self._append(keys=[self.key(workflow_id)], args=args)
        except ResponseError as err:
            if "KEEL_GAP" in str(err):
                raise ProgressGapError(str(err).removeprefix("KEEL_GAP ")) from None
            raise
        return int(added), int(last)

    async def read(
        self, workflow_id: str, after_seq: int = 0, *, block_ms: int | None = None
    ) -> list[ProgressEvent]:
        """The events after ``after_seq``, oldest first (at most ``READ_COUNT``); with
        ``block_ms``, waits that long for one when there is none yet."""
        # Any: redis-py types replies for both wire protocols; this client speaks RESP2.
        found: Any = await self.redis.xread(
            {self.key(workflow_id): f"0-{after_seq}"}, count=READ_COUNT, block=block_ms
        )
        entries = found[0][1] if found else []
        return [ProgressEvent.model_validate_json(fields[b"event"]) for _, fields in entries]

    async def all(self, workflow_id: str) -> list[ProgressEvent]:
        """Every event of ``workflow_id`` in the stream, oldest first."""
        events: list[ProgressEvent] = []
        while batch := await self.read(workflow_id, events[-1].seq if events else 0):
            events += batch
        return events

    async def last(self, workflow_id: str) -> ProgressEvent | None:
        """The newest event of ``workflow_id``, if its stream has any."""
        entries: Any = await self.redis.xrevrange(self.key(workflow_id), count=1)
        return ProgressEvent.model_validate_json(entries[0][1][b"event"]) if entries else None
