"""``keel.progress.append``: the activity that puts a workflow's progress events in its stream.

Safe to retry at any point (``ProgressStream.append`` skips what is already there), so it
runs with Temporal's default unlimited retries: Redis down means progress waits, it is
never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from keel.progress.events import APPEND_ACTIVITY, AppendProgress
from keel.settings import KeelSettings

if TYPE_CHECKING:
    from keel.progress.stream import ProgressStream


class ProgressActivities:
    """The append activity over one ``ProgressStream``, opened on the first append (so a
    worker that appends no progress never loads the Redis client)."""

    def __init__(self, stream: ProgressStream | Callable[[], ProgressStream]) -> None:
        self._stream = stream if not callable(stream) else None
        self._open = stream if callable(stream) else None

    @classmethod
    def open(cls, settings: KeelSettings) -> ProgressActivities:
        """Over the Redis of ``KEEL_REDIS_URL``, with the configured prefix and retention."""

        def stream() -> ProgressStream:
            from keel.progress.stream import ProgressStream

            return ProgressStream.open(
                settings.redis_url,
                prefix=settings.progress_stream_prefix,
                retention_seconds=settings.progress_retention_seconds,
            )

        return cls(stream)

    @property
    def stream(self) -> ProgressStream:
        """The stream store (opened now if it was not yet)."""
        if self._stream is None:
            assert self._open is not None
            self._stream = self._open()
        return self._stream

    async def aclose(self) -> None:
        """Close the Redis connections, if any were opened."""
        if self._stream is not None:
            await self._stream.aclose()

    def activities(self) -> list[Any]:
        """The activities to register on a worker."""
        return [self.append]

    @activity.defn(name=APPEND_ACTIVITY)
    async def append(self, request: AppendProgress) -> int:
        """Append the events not yet in the stream; returns the stream's last seq."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        from keel.progress.stream import ProgressGapError

        try:
            _, last = await self.stream.append(request.workflow_id, request.events)
        except (RedisConnectionError, RedisTimeoutError, OSError) as err:
            raise ApplicationError(
                f"the progress stream's Redis cannot be reached ({err}); check KEEL_REDIS_URL",
                type="ProgressStoreUnavailable",
            ) from None
        except ProgressGapError as err:
            raise ApplicationError(str(err), type="ProgressGap") from None
        except ResponseError as err:  # KEEL_FOREIGN: the key holds someone else's stream
            raise ApplicationError(
                f"the progress stream cannot be appended to ({err}): choose another "
                "KEEL_PROGRESS_STREAM_PREFIX or remove the key; the append is retried",
                type="ProgressStreamRefused",
            ) from None
        return last
