"""What the ``keel`` subcommands do, against a connected client. Each returns an exit code."""

from __future__ import annotations

import json
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistory,
    WorkflowUpdateFailedError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from keel.cli.render import gates_text, ledger_text, ui_link
from keel.contracts.gates import GateView, ReviewReceipt
from keel.contracts.ledger import LedgerContinued, LedgerEvent, parse_ledger
from keel.settings import KeelSettings
from keel.workers.app import App, Entry
from keel.workers.apps import find_entry, resolve_apps, workflows_of


def err(message: str) -> int:
    print(f"keel: {message}", file=sys.stderr)
    return 2


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
    size = len(json.dumps(payload).encode())
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
    try:
        payload = json.loads(Path(args.input).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return err(f"cannot read {args.input}: {exc}")
    if not isinstance(payload, dict):
        return err(f"{args.input} must hold a JSON object")
    found = find_entry(resolve_apps(args.app or ()), args.scenario)
    if found is None:
        return err(f"no loaded app has an entry {args.scenario!r}; load its app with --app")
    try:
        handle = await start(client, settings, found[1], payload, workflow_id=args.id)
    except ValidationError as exc:
        lines = "\n".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return err(
            f"{args.input} is not a valid {args.scenario} input; nothing was started:\n{lines}"
        )
    except ValueError as exc:
        return err(f"{exc}; nothing was started")
    print(f"started {handle.id} (run {handle.result_run_id})")
    print(ui_link(settings.ui_url, client.namespace, handle.id, handle.result_run_id))
    return 0


async def full_chain(client: Client, workflow_id: str) -> list[LedgerEvent]:
    """The ledger across every run of a workflow that continued as new, oldest first:
    each run's first event names the run before it."""
    events = await read_ledger(client, workflow_id)
    while events and isinstance(events[0], LedgerContinued):
        previous = client.get_workflow_handle(workflow_id, run_id=events[0].previous_run_id)
        earlier: list[LedgerEvent] = await previous.query("ledger", result_type=list[LedgerEvent])
        events = earlier + events
    return events


async def read_ledger(
    client: Client, workflow_id: str, run_id: str | None = None
) -> list[LedgerEvent]:
    """The ledger of one run: from its result when it completed, else by query."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    description = await handle.describe()
    if description.status is WorkflowExecutionStatus.COMPLETED:
        # Every Keel result carries its ledger; read it as JSON, so this works for any app.
        result = await client.get_workflow_handle(workflow_id, run_id=run_id).result()
        if isinstance(result, dict) and isinstance(result.get("ledger"), list):
            return parse_ledger(result["ledger"])
    events: list[LedgerEvent] = await handle.query("ledger", result_type=list[LedgerEvent])
    return events


async def cmd_ledger(client: Client, settings: KeelSettings, args: Any) -> int:
    events = await full_chain(client, args.workflow_id)
    if args.json:
        for event in events:
            print(event.model_dump_json())
    else:
        print(ledger_text(events))
    return 0


async def open_gates(client: Client) -> list[tuple[str, GateView]]:
    """Every gate waiting for a reviewer, across running executions."""
    rows: list[tuple[str, GateView]] = []
    query = "KeelPendingGates IS NOT NULL AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        for gate in await handle.query("gates", result_type=list[GateView]):
            if gate.state.open:
                rows.append((execution.id, gate))
    return rows


async def cmd_gates(client: Client, settings: KeelSettings, args: Any) -> int:
    rows = await open_gates(client)
    if args.json:
        for workflow_id, gate in rows:
            print(json.dumps({"workflow_id": workflow_id, **gate.model_dump(mode="json")}))
    else:
        print(gates_text(rows))
    return 0


async def send_review(client: Client, workflow_id: str, payload: dict[str, Any]) -> ReviewReceipt:
    """Decide a gate through the ``review`` update; raises if the workflow refuses it."""
    handle = client.get_workflow_handle(workflow_id)
    receipt: ReviewReceipt = await handle.execute_update(
        "review", payload, result_type=ReviewReceipt
    )
    return receipt


async def cmd_review(client: Client, settings: KeelSettings, args: Any) -> int:
    payload: dict[str, Any] = {
        "gate": args.gate,
        "decision": "reject" if args.command == "reject" else "approve",
        "reviewer": args.reviewer,
        "comment": args.comment,
        "device": args.device or f"keel-cli@{socket.gethostname()}",
    }
    if getattr(args, "modify", None):
        try:
            payload["modifications"] = json.loads(args.modify)
        except json.JSONDecodeError as exc:
            return err(f"--modify is not valid JSON: {exc}")
        payload["decision"] = "modify"
    try:
        receipt = await send_review(client, args.workflow_id, payload)
    except WorkflowUpdateFailedError as exc:
        return err(f"refused: {exc.cause.message if exc.cause else exc}")  # type: ignore[attr-defined]
    print(f"{receipt.gate}: {receipt.state.value} (ledger event #{receipt.ledger_seq})")
    return 0


async def cmd_replay(client: Client | None, settings: KeelSettings, args: Any) -> int:
    target = Path(args.target)
    if target.suffix == ".json" and target.exists():
        history = WorkflowHistory.from_json(target.stem, target.read_text())
    else:
        if client is None:
            return err("replaying by workflow id needs a reachable Temporal server")
        history = await client.get_workflow_handle(args.target).fetch_history()
    replayer = Replayer(
        workflows=workflows_of(resolve_apps(args.app or ())), data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)
    print(f"replayed {history.workflow_id}: {len(history.events)} history events, deterministic")
    return 0


async def cmd_export(client: Client, settings: KeelSettings, args: Any) -> int:
    out = open(args.out, "w") if args.out else sys.stdout  # noqa: SIM115
    count = 0
    query = args.query or _types_query(resolve_apps(args.app or ()))
    try:
        async for execution in client.list_workflows(query):
            for event in await read_ledger(client, execution.id):
                record = {"workflow_id": execution.id, **event.model_dump(mode="json")}
                out.write(json.dumps(record) + "\n")
                count += 1
    finally:
        if args.out:
            out.close()
    print(f"exported {count} ledger events", file=sys.stderr)
    return 0


def _types_query(apps: list[App]) -> str:
    """A visibility query for every execution of the apps' workflows."""
    names = [
        getattr(w, "__temporal_workflow_definition").name for app in apps for w in app.workflows
    ]
    return "WorkflowType IN (" + ", ".join(f"'{n}'" for n in names) + ")"
