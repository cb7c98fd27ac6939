"""What ``keel watch`` asks Temporal while a workflow's progress stream is silent.

A stream ends with the workflow's final event, but a workflow that fails, is terminated or
cancelled, or whose stream expired, never sends one: the watcher would wait for ever,
kept alive by the server's keepalives. So after ``--check-after`` seconds without an
event, ``keel watch`` describes the workflow. Closed, while the progress server has an
open stream for it and nothing arrives in a short grace period (the server hands over what
Redis holds at once), it is over: ``keel watch`` says how it closed and exits 1. Running or
not started yet, it keeps waiting and says so once. Temporal out of reach changes nothing
but the note: the stream alone decides then.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from keel.cli.output import CliError
from keel.settings import KeelSettings

ENDED_GRACE_SECONDS = 2.0
"""How long a closed workflow's open stream must stay silent before the watch ends."""


@dataclass
class StreamState:
    """What the watch has seen, shared between the stream's reader and the check."""

    shown: int = 0
    last_id: str | None = None
    open: bool = False
    """The progress server answered 200 and the connection is still up."""
    opened_at: float = 0.0
    """When that connection was opened (the server hands over what Redis holds at once)."""
    last_change: float = field(default_factory=time.monotonic)
    """When an event last arrived (or the check last asked): silence is measured from it."""

    def opened(self) -> None:
        """The progress server answered 200."""
        self.open, self.opened_at = True, time.monotonic()

    def saw(self, event_id: str) -> None:
        """An event was shown."""
        self.shown += 1
        self.last_id = event_id
        self.last_change = time.monotonic()


async def ended_without_final_event(
    settings: KeelSettings, args: Any, state: StreamState, note: Any
) -> str:
    """Wait until Temporal says the workflow closed while its stream, open, stayed silent;
    the message that says so. Notes (``note(text)``) what it finds out meanwhile, once each."""
    workflow_id: str = args.workflow_id
    client: Any = None
    said: set[str] = set()

    def once(text: str) -> None:
        if text not in said:
            said.add(text)
            note(text)

    while True:
        silent_for = time.monotonic() - state.last_change
        if silent_for < args.check_after:
            await asyncio.sleep(args.check_after - silent_for)
            continue
        state.last_change = time.monotonic()  # ask again only after another silence
        if client is None:
            client, problem = await _client(settings, args)
            if client is None:
                if not state.shown:
                    once(no_events_yet(workflow_id, f"Temporal not asked: {problem}"))
                continue
        status = await _status(client, workflow_id)
        if status in ("RUNNING", None) or status.startswith("cannot"):
            if not state.shown:
                once(_waiting(workflow_id, status, client.namespace))
            continue
        shown, began = state.shown, time.monotonic()
        await asyncio.sleep(ENDED_GRACE_SECONDS)
        # Silent on one connection open for the whole grace period: nothing is left unread.
        if state.open and state.opened_at <= began and state.shown == shown:
            return _ended(workflow_id, status, state)


def no_events_yet(workflow_id: str, detail: str | None = None) -> str:
    """What to say when a stream is still empty and nobody knows why."""
    more = f"; {detail}" if detail else ""
    return (
        f"no events for {workflow_id} yet: is the id right? (a workflow's stream starts "
        f"with its first event{more}; still waiting)"
    )


def _waiting(workflow_id: str, status: str | None, namespace: str) -> str:
    if status == "RUNNING":
        return f"{workflow_id} is running and has written no progress yet; still waiting"
    if status is None:
        return (
            f"no workflow {workflow_id} in namespace {namespace} (yet): is the id right? "
            "still waiting"
        )
    return f"no events for {workflow_id} yet, and Temporal {status}; still waiting"


def _ended(workflow_id: str, status: str, state: StreamState) -> str:
    if not state.shown and state.last_id is None:
        return (
            f"{workflow_id} has closed ({status}) and its progress stream holds no events: "
            "they expired (KEEL_PROGRESS_RETENTION_SECONDS after the last one) or it wrote "
            f"none; `keel ledger {workflow_id}` shows what it decided"
        )
    after = f"after {state.last_id}" if state.last_id else "at its start"
    return (
        f"{workflow_id} has closed ({status}) without its final progress event (the stream "
        f"stops {after}); `keel ledger {workflow_id}` shows what it decided"
    )


async def _client(settings: KeelSettings, args: Any) -> tuple[Any, str]:
    from keel.cli.connection import open_client

    # Only the workflow's status is read, never a payload: no codec keys needed for it.
    plain = settings.model_copy(update={"codec": "off"})
    try:
        return await open_client(plain, args), ""
    except CliError as err:
        return None, str(err)


async def _status(client: Any, workflow_id: str) -> str | None:
    """The workflow's status name (``RUNNING``, ``TERMINATED``...), None when Temporal has no
    such workflow, or ``cannot ...`` when it would not say."""
    from temporalio.service import RPCError, RPCStatusCode

    try:
        described = await asyncio.wait_for(
            client.get_workflow_handle(workflow_id).describe(), timeout=10
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        return f"cannot say ({err.status.name if err.status else 'error'}: {err.message})"
    except (TimeoutError, RuntimeError, OSError) as err:
        return f"cannot say ({type(err).__name__}: {err})"
    return described.status.name if described.status else "cannot say (no status)"
