"""What ``keel start``, ``ledger``, ``gates``, ``approve`` and ``reject`` do, against a
connected client. Each returns an exit code (``keel.cli.output``) or raises ``CliError``.

None of them needs the code of the app whose workflow it talks to: ledgers are read as JSON
(events of types this process does not know stay whole and still verify), gates and
reviews go through the queries and the update every Keel workflow has.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from keel import __version__
from keel.cli.ledgers import QUERY_TIMEOUT, cmd_ledger, full_chain, read_ledger
from keel.cli.output import OK, USAGE, CliError, emit, emit_lines, report
from keel.cli.render import escape, gates_text, ui_link
from keel.contracts.gates import GateView, ReviewReceipt
from keel.contracts.reviews import Authentication, Device, sign_review
from keel.settings import KeelSettings
from keel.workers.app import Entry
from keel.workers.apps import find_entry, resolve_apps
from keel.workers.keys import load_reviewer_key

__all__ = ["cmd_gates", "cmd_ledger", "cmd_review", "cmd_start", "full_chain", "read_ledger"]


MAX_START_FILE_BYTES = 2 * 1024 * 1024
"""Largest input file ``keel start --workflow-type`` reads (Temporal's default payload limit)."""
FILE_SLACK = 2
"""An entry's input file may be this many times its ``max_input_bytes`` (indentation); a
larger one is refused by its size, unread. The compact JSON is then held to the limit."""


def read_json(path: str, max_bytes: int = MAX_START_FILE_BYTES) -> Any:
    """The JSON value in the file ``path``, of at most ``max_bytes`` bytes.

    Raises:
        CliError: the file is missing, unreadable, larger than ``max_bytes`` (refused by its
            size before it is read), not JSON or nested too deeply to parse (exit 2).
    """
    shown = escape(path)
    try:
        with Path(path).open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > max_bytes:
                raise CliError(f"{shown} is {size} bytes; the limit is {max_bytes}", USAGE)
            data = file.read(max_bytes + 1)  # a pipe or device has no size to check first
    except OSError as exc:
        raise CliError(f"cannot read {shown}: {escape(exc.strerror or str(exc))}", USAGE) from exc
    if len(data) > max_bytes:
        raise CliError(f"{shown} holds more than {max_bytes} bytes, the limit", USAGE)
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise CliError(f"{shown} is nested too deeply to read as JSON", USAGE) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{shown} is not valid JSON: {escape(str(exc))}", USAGE) from exc


async def start(
    client: Client,
    settings: KeelSettings,
    entry: Entry,
    payload: dict[str, Any],
    *,
    workflow_id: str | None = None,
    task_queue: str | None = None,
) -> WorkflowHandle[Any, Any]:
    """Validate ``payload`` for ``entry`` (nothing starts if it is invalid), then start it."""
    try:
        size = len(json.dumps(payload).encode())
    except RecursionError as exc:
        raise ValueError("the input is nested too deeply") from exc
    if size > entry.max_input_bytes:
        raise ValueError(f"input is {size} bytes; the limit is {entry.max_input_bytes}")
    entry.input_model.model_validate(payload)
    return await client.start_workflow(
        entry.workflow_type,
        entry.wrap(payload),
        id=workflow_id or f"{entry.name}-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue or settings.task_queue,
        static_summary=f"{entry.name}: {payload.get(entry.title_field, '')}"[:200],
        static_details=_facts(payload),
    )


def _facts(payload: dict[str, Any]) -> str:
    """The input's short scalar fields, as Markdown for the UI's Details card."""
    lines = [
        f"- **{name}**: {value}"
        for name, value in payload.items()
        if isinstance(value, str | int | float) and len(str(value)) <= 80
    ]
    return "\n".join(lines[:8])


async def cmd_start(client: Client, settings: KeelSettings, args: Any) -> int:
    """``keel start ENTRY --input FILE`` (validated here first) or ``keel start
    --workflow-type TYPE --input FILE`` (the input as is, for apps this CLI never loaded)."""
    if args.workflow_type and args.scenario:
        raise CliError("give an ENTRY or --workflow-type, not both", USAGE)
    try:
        if args.workflow_type:
            handle = await _start_by_type(client, settings, args, read_json(args.input))
        else:
            handle = await _start_entry(client, settings, args)
    except WorkflowAlreadyStartedError as exc:
        raise CliError(f"a workflow with id {exc.workflow_id!r} is already running", USAGE) from exc
    url = ui_link(settings.ui_url, client.namespace, handle.id, handle.result_run_id)
    emit(
        args,
        f"started {escape(handle.id)} (run {escape(handle.result_run_id or '')})\n{url}",
        {"workflow_id": handle.id, "run_id": handle.result_run_id, "ui_url": url},
    )
    return OK


async def _start_entry(
    client: Client, settings: KeelSettings, args: Any
) -> WorkflowHandle[Any, Any]:
    if not args.scenario:
        raise CliError(
            "name the ENTRY to start (e.g. contract-review), or give --workflow-type TYPE", USAGE
        )
    found = find_entry(resolve_apps(args.app or ()), args.scenario)
    if found is None:
        raise CliError(
            f"no loaded app has an entry {args.scenario!r}; load its app with --app "
            "MODULE[:ATTR] (or KEEL_APPS), or start its workflow by type: keel start "
            "--workflow-type TYPE --input FILE",
            USAGE,
        )
    payload = read_json(args.input, FILE_SLACK * found[1].max_input_bytes)
    if not isinstance(payload, dict):
        raise CliError(f"{escape(args.input)} must hold a JSON object", USAGE)
    try:
        return await start(
            client,
            settings,
            found[1],
            payload,
            workflow_id=args.id,
            task_queue=args.task_queue,
        )
    except ValidationError as exc:
        lines = "\n".join(
            f"  {escape('.'.join(map(str, e['loc'])))}: {escape(e['msg'])}"
            for e in exc.errors()[:MAX_LISTED_PROBLEMS]
        )
        more = len(exc.errors()) - MAX_LISTED_PROBLEMS
        if more > 0:
            lines += f"\n  and {more} more problems"
        raise CliError(
            f"{escape(args.input)} is not a valid {escape(args.scenario)} input; nothing was "
            f"started:\n{lines}",
            USAGE,
        ) from exc
    except ValueError as exc:
        raise CliError(f"{escape(str(exc))}; nothing was started", USAGE) from exc


MAX_LISTED_PROBLEMS = 50
"""Problems of an invalid input ``keel start`` lists (then a count of the rest)."""


async def _start_by_type(
    client: Client, settings: KeelSettings, args: Any, payload: Any
) -> WorkflowHandle[Any, Any]:
    """Keel workflows validate their input in workflow code: an invalid one fails the run,
    non-retryably, with the reasons in its ledger."""
    title = payload.get("title", "") if isinstance(payload, dict) else ""
    try:
        handle: WorkflowHandle[Any, Any] = await client.start_workflow(
            args.workflow_type,
            payload,
            id=args.id or f"{args.workflow_type.lower()}-{uuid.uuid4().hex[:12]}",
            task_queue=args.task_queue or settings.task_queue,
            static_summary=f"{args.workflow_type}: {title}"[:200],
            static_details=_facts(payload) if isinstance(payload, dict) else None,
        )
    except RecursionError as exc:
        raise CliError(f"{escape(args.input)} is nested too deeply to send", USAGE) from exc
    return handle


async def open_gates(client: Client) -> list[tuple[str, GateView]]:
    """Every gate waiting for a reviewer, across running executions; an execution whose
    worker does not answer is skipped with a note on stderr. The executions are asked at
    once (``MAX_CONCURRENT_QUERIES`` at a time), so a few whose workers are gone cost one
    query timeout, not one each."""
    query = "KeelPendingGates IS NOT NULL AND ExecutionStatus = 'Running'"
    executions = [e async for e in client.list_workflows(query)]
    slots = asyncio.Semaphore(MAX_CONCURRENT_QUERIES)

    async def gates_of(workflow_id: str, run_id: str | None) -> list[GateView]:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        async with slots:
            try:
                views: list[GateView] = await handle.query(
                    "gates", result_type=list[GateView], rpc_timeout=QUERY_TIMEOUT
                )
            except (WorkflowQueryFailedError, RPCError) as exc:
                print(
                    f"keel: skipped {escape(workflow_id)}: gates query failed: {escape(str(exc))}",
                    file=sys.stderr,
                )
                return []
        return views

    answers = await asyncio.gather(*(gates_of(e.id, e.run_id) for e in executions))
    return [
        (execution.id, gate)
        for execution, gates in zip(executions, answers, strict=True)
        for gate in gates
        if gate.state.open
    ]


MAX_CONCURRENT_QUERIES = 20
"""``gates`` queries ``keel gates`` has in flight at once."""


async def cmd_gates(client: Client, settings: KeelSettings, args: Any) -> int:
    """List the gates waiting for a reviewer."""
    rows = await open_gates(client)
    emit_lines(
        args,
        gates_text(rows),
        ({"workflow_id": wid, **gate.model_dump(mode="json")} for wid, gate in rows),
    )
    return OK


async def send_review(client: Client, workflow_id: str, payload: dict[str, Any]) -> ReviewReceipt:
    """Decide a gate through the ``review`` update; raises if the workflow refuses it."""
    handle = client.get_workflow_handle(workflow_id)
    receipt: ReviewReceipt = await handle.execute_update(
        "review", payload, result_type=ReviewReceipt
    )
    return receipt


async def cmd_review(client: Client, settings: KeelSettings, args: Any) -> int:
    """``keel approve`` / ``keel reject``: a decision signed with the reviewer's own key
    (``KEEL_REVIEWER_KEY_FILE``); exit 2 when the workflow refuses it."""
    modifications = None
    if getattr(args, "modify", None):
        try:
            modifications = json.loads(args.modify)
        except (json.JSONDecodeError, RecursionError) as exc:
            return report(args, f"--modify is not valid JSON: {escape(str(exc))}", USAGE)
    key = load_reviewer_key(settings)
    run_id = (await client.get_workflow_handle(args.workflow_id).describe()).run_id
    host = socket.gethostname()
    decision = "modify" if modifications is not None else args.command
    payload = sign_review(
        key,
        gate=args.gate,
        decision=decision,
        reviewer=args.reviewer,
        workflow_id=args.workflow_id,
        run_id=run_id,
        comment=args.comment,
        modifications=modifications,
        auth=Authentication(
            method="reviewer-key",
            issuer=f"keel-cli@{host}",
            device=Device(user_agent=f"keel-cli/{__version__}", address=host),
        ),
    )
    try:
        receipt = await send_review(client, args.workflow_id, payload)
    except WorkflowUpdateFailedError as exc:
        reason = getattr(exc.cause, "message", None) or str(exc.cause or exc)
        return report(args, f"refused: {escape(reason)}", USAGE)
    count = (
        f"{receipt.approvals} of {receipt.approvals_needed} approvals, "
        if receipt.approvals_needed > 1
        else ""
    )
    again = ", already decided: this is the same decision" if receipt.repeated else ""
    emit(
        args,
        f"{escape(receipt.gate)}: {receipt.state.value} "
        f"({count}ledger event #{receipt.ledger_seq}{again})",
        {"workflow_id": args.workflow_id, **receipt.model_dump(mode="json")},
    )
    return OK
