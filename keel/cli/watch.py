"""``keel watch ID``: follow a workflow's progress stream on a terminal, reconnecting by itself.

It reads the progress server's SSE stream (``keel.progress.server``; ``KEEL_PROGRESS_URL``)
and, when the connection drops or the server restarts, reconnects with the ``Last-Event-ID``
of the last event it showed, so it shows every event exactly once, in order, and stops after
the workflow's final event. On a terminal it draws a progress bar; otherwise (a pipe, a log)
one plain line per event; with ``-o json``, each event as one JSON object per line. A
workflow that closed without its final event (failed, terminated, its stream expired) is
found out by asking Temporal after a silence (``keel.cli.watch_status``).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, TextIO
from urllib.parse import quote

import httpx

from keel.cli.output import FAILURE, OK, UNREACHABLE, USAGE, CliError, wants_json
from keel.cli.render import escape
from keel.cli.watch_status import StreamState, ended_without_final_event, no_events_yet
from keel.progress.events import ProgressEvent
from keel.settings import KeelSettings

WAIT_HINT_SECONDS = 10.0
"""Without a first event by then (and Temporal not asked), say what may be wrong."""
READ_TIMEOUT_SECONDS = 60.0
"""The server sends a keepalive every 15 s: this long without a byte is a dead connection."""
MAX_BACKOFF_SECONDS = 5.0
MAX_BUSY_WAIT_SECONDS = 30.0
"""The longest a server's ``Retry-After`` (it serves its limit of streams) is taken at its word."""
BAR_WIDTH = 30


class _Ended(Exception):
    """The server answered 204: the events the client asked for after were the last."""


class _ServerFault(Exception):
    """The server (or a proxy before it) answered 5xx: every stream taken, its Redis out of
    reach, restarting. Wait (its ``Retry-After``, if any), then again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


async def cmd_watch(settings: KeelSettings, args: Any) -> int:
    """Show ``args.workflow_id``'s progress until its final event (or until Temporal says
    the workflow closed without one: ``keel.cli.watch_status``)."""
    base = (args.url or settings.progress_url).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise CliError(f"the progress URL must be http(s)://...: {escape(base)}", USAGE)
    url = f"{base}/progress/{quote(args.workflow_id, safe='')}"
    view = _view(args)
    state = StreamState(last_id=args.last_event_id)
    timeout = httpx.Timeout(READ_TIMEOUT_SECONDS, connect=5.0)
    loop = asyncio.get_running_loop()
    hint = (
        None
        if args.check_after > 0
        else loop.call_later(WAIT_HINT_SECONDS, _hint, view, args, state)
    )
    async with httpx.AsyncClient(timeout=timeout) as client:
        reader = asyncio.create_task(_follow(client, url, args, view, state))
        tasks: set[asyncio.Task[Any]] = {reader}
        if args.check_after > 0:
            tasks.add(
                asyncio.create_task(ended_without_final_event(settings, args, state, view.note))
            )
        try:
            while True:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    view.close()
                    return reader.result()  # OK, or the CliError it raised
                (check,) = done
                if check.exception() is None:
                    view.close()
                    raise CliError(str(check.result()), FAILURE)
                # A bug in the check must not end the watch: the stream alone decides now.
                view.note(f"cannot ask Temporal any more: {check.exception()!r}")
                tasks = {reader}
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if hint is not None:
                hint.cancel()


def _hint(view: _Lines, args: Any, state: StreamState) -> None:
    if not state.shown:
        view.note(no_events_yet(args.workflow_id))


async def _follow(
    client: httpx.AsyncClient, url: str, args: Any, view: _Lines, state: StreamState
) -> int:
    """Read the stream until its final event, reconnecting after the last event shown."""
    failing_since: float | None = None
    backoff = 0.2
    while True:
        try:
            async for event in _events(client, url, state):
                state.saw(event.id)
                failing_since, backoff = None, 0.2
                view.show(event)
                if event.final:
                    return OK
            problem = "the server ended the stream before the final event"
        except httpx.TransportError as err:
            problem = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        except _Ended:
            after = state.last_id or "the start"
            view.note(f"nothing after {after}: the workflow's progress has ended")
            return OK
        except _ServerFault as fault:
            problem = str(fault)
            backoff = max(backoff, fault.retry_after)
        finally:
            state.open = False
        now = time.monotonic()
        failing_since = failing_since or now
        if now - failing_since > args.reconnect_for:
            raise CliError(
                f"no progress from {escape(url)} for {args.reconnect_for:.0f} s ({problem})",
                UNREACHABLE,
            )
        view.note(f"connection lost ({problem}); reconnecting after {state.last_id or 'the start'}")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


async def _events(
    client: httpx.AsyncClient, url: str, state: StreamState
) -> AsyncIterator[ProgressEvent]:
    """The events of one connection (``state.open`` while the server streams them)."""
    headers = {"Accept": "text/event-stream"}
    if state.last_id:
        headers["Last-Event-ID"] = state.last_id
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 204:
            raise _Ended
        if response.status_code >= 500:  # busy, its Redis out of reach, a proxy's 502
            body = (await response.aread()).decode(errors="replace")[:300]
            raise _ServerFault(
                f"HTTP {response.status_code}: {escape(body)}", _retry_after(response)
            )
        if response.status_code != 200:
            body = (await response.aread()).decode(errors="replace")[:300]
            raise CliError(f"{escape(url)}: HTTP {response.status_code} {escape(body)}", USAGE)
        state.opened()
        async for data in sse_data(response.aiter_lines()):
            yield ProgressEvent.model_validate_json(data)


def _retry_after(response: httpx.Response) -> float:
    """The seconds a ``Retry-After`` asks for (a number; a date or nonsense: the backoff)."""
    given = response.headers.get("retry-after", "")
    try:
        seconds = float(given)
    except ValueError:
        return 0.0
    return 0.0 if math.isnan(seconds) else min(max(seconds, 0.0), MAX_BUSY_WAIT_SECONDS)


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each SSE event in ``lines`` (comments, ``id``, ``retry`` skipped: the
    event's own JSON carries its id)."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


class _Lines:
    """One plain line per event (not a terminal)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def show(self, event: ProgressEvent) -> None:
        count = f"{event.done}/{event.total}"
        print(
            f"{escape(event.id)} {event.kind:<9} {count} {escape(event.message)}",
            file=self.out,
            flush=True,
        )

    def note(self, text: str) -> None:
        print(f"keel watch: {escape(text)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.out.flush()


class _Json(_Lines):
    """Each event as one JSON object per line (``-o json``)."""

    def show(self, event: ProgressEvent) -> None:
        print(json.dumps(event.model_dump(mode="json")), file=self.out, flush=True)


class _Bar(_Lines):
    """A progress bar redrawn in place; the workflow's milestones printed above it."""

    def show(self, event: ProgressEvent) -> None:
        if event.kind in ("started", "continued", "finished"):
            self._clear()
            print(f"{event.kind}: {escape(event.message)}", file=self.out)
        share = event.done / event.total if event.total else 0.0
        filled = int(share * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        line = f"[{bar}] {event.done}/{event.total} {share:4.0%} run {event.run}  "
        line += escape(event.message)[:60]
        self._clear()
        self.out.write(line)
        self.out.flush()

    def note(self, text: str) -> None:
        self._clear()
        super().note(text)

    def close(self) -> None:
        self.out.write("\n")
        self.out.flush()

    def _clear(self) -> None:
        self.out.write("\r\x1b[2K")


def _view(args: Any) -> _Lines:
    if wants_json(args):
        return _Json(sys.stdout)
    return _Bar(sys.stdout) if sys.stdout.isatty() else _Lines(sys.stdout)
