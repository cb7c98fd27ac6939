"""``keel.progress.append``: the activity that puts a workflow's progress events in its stream.

Safe to retry at any point (``ProgressStream.append`` skips what is already there), so it
runs with Temporal's default unlimited retries: Redis down means progress waits, it is
never dropped.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from keel.progress.events import APPEND_ACTIVITY, AppendProgress
from keel.progress.stream import ProgressGapError, ProgressStream
from keel.settings import KeelSettings


class ProgressActivities:
    """The append activity over one ``ProgressStream``."""

    def __init__(self, stream: ProgressStream) -> None:
        self.stream = stream

    @classmethod
    def open(cls, settings: KeelSettings) -> ProgressActivities:
        """Over the Redis of ``KEEL_REDIS_URL``, with the configured prefix and retention."""
        return cls(
            ProgressStream.open(
                settings.redis_url,
                prefix=settings.progress_stream_prefix,
                retention_seconds=settings.progress_retention_seconds,
            )
        )

    async def aclose(self) -> None:
        """Close the Redis connections."""
        await self.stream.aclose()

    def activities(self) -> list[Any]:
        """The activities to register on a worker."""
        return [self.append]

    @activity.defn(name=APPEND_ACTIVITY)
    async def append(self, request: AppendProgress) -> int:
        """Append the events not yet in the stream; returns the stream's last seq."""
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
