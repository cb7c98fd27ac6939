"""The progress stream of long-running workflows: events with ids, kept in a Redis Stream.

A workflow numbers its events (``ProgressEvent``, id ``<workflow id>:<seq>``) in workflow
code, so the numbering is deterministic; the ``keel.progress.append`` activity
(``ProgressActivities``) appends them idempotently (``ProgressStream``): a retried append
adds nothing twice and leaves no gap. ``keel.progress.server`` serves a workflow's events as
Server-Sent Events that resume from ``Last-Event-ID``; ``keel watch`` reads them.

Modules: ``events`` (the event, ids, stream keys: no I/O, safe in workflow code),
``reporter`` (the workflow side), ``stream`` (Redis), ``activities``, ``server`` (HTTP).
"""

from keel.progress.events import (
    APPEND_ACTIVITY,
    AppendProgress,
    ProgressEvent,
    ProgressView,
    event_id,
    seq_of,
    stream_key,
)

__all__ = [
    "APPEND_ACTIVITY",
    "AppendProgress",
    "ProgressEvent",
    "ProgressView",
    "event_id",
    "seq_of",
    "stream_key",
]
