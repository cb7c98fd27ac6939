"""Progress events, their ids and their stream keys: plain models, safe in workflow code."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

APPEND_ACTIVITY = "keel.progress.append"
"""The activity that appends a workflow's events to its stream (a stable name: histories
outlive code)."""
DEFAULT_STREAM_PREFIX = "keel:progress"
MAX_EVENTS_PER_APPEND = 200
"""Events one append carries (a batch's records and its summary fit many times over)."""

EventKind = Literal["started", "record", "batch", "continued", "finished"]


class ProgressEvent(BaseModel):
    """One step of a long-running workflow, as a watcher sees it.

    ``seq`` counts from 1 per workflow id, across continue-as-new; ``id`` is
    ``<workflow id>:<seq>``, the SSE ``id:`` a client resumes from. ``final`` marks the
    last event of the workflow: a stream ends after it.
    """

    # Readers ignore fields they do not know: a newer worker's events still parse.
    model_config = ConfigDict(extra="ignore")

    id: str
    seq: int = Field(ge=1)
    workflow_id: str
    kind: EventKind
    done: int = Field(ge=0)
    total: int = Field(ge=0)
    message: str = Field(max_length=500)
    at: datetime
    run: int = Field(1, ge=1)
    """Which run (1 + continue-as-new count) recorded the event."""
    data: dict[str, Any] = Field(default_factory=dict)
    """What the event is about (an enriched record, a batch's counts, the outcome)."""
    final: bool = False


class AppendProgress(BaseModel):
    """Input of ``keel.progress.append``: events of one workflow, in ``seq`` order."""

    workflow_id: str
    events: list[ProgressEvent] = Field(min_length=1, max_length=MAX_EVENTS_PER_APPEND)


class ProgressView(BaseModel):
    """What the ``progress`` query answers: where the workflow is, and its last event id."""

    workflow_id: str
    done: int
    total: int
    run: int
    last_event_id: str | None
    message: str
    finished: bool


def event_id(workflow_id: str, seq: int) -> str:
    """``<workflow id>:<seq>``: the event's id, and its SSE ``id:``."""
    return f"{workflow_id}:{seq}"


def seq_of(last_event_id: str | None, workflow_id: str) -> int:
    """The ``seq`` a ``Last-Event-ID`` names for ``workflow_id``; 0 (from the start) when it
    is absent or names another workflow.

    Raises:
        ValueError: the id names this workflow but its seq is not a non-negative integer.
    """
    if not last_event_id:
        return 0
    prefix, _, seq = last_event_id.strip().rpartition(":")
    if prefix != workflow_id:
        return 0
    if not seq.isdigit():
        raise ValueError(f"Last-Event-ID {last_event_id[:200]!r} ends in no sequence number")
    return int(seq)


def stream_key(workflow_id: str, prefix: str = DEFAULT_STREAM_PREFIX) -> str:
    """The Redis Stream of ``workflow_id``'s events."""
    return f"{prefix}:{workflow_id}"
