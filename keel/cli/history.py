"""``keel replay`` (determinism, with the apps' code) and ``keel export`` (ledgers of every
Keel execution, whichever app it belongs to)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf.json_format import ParseError
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.worker import Replayer

from keel.cli.ledgers import load_event_types, write_export
from keel.cli.output import (
    FAILURE,
    OK,
    USAGE,
    CliError,
    emit,
    output_file,
    report,
    wants_json,
)
from keel.cli.render import escape
from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.workers.app import workflow_type_of
from keel.workers.apps import resolve_apps, workflows_of
from keel.workers.codec import ENCODING, HOW_TO_CONFIGURE, KEY_ID, EncryptionCodec, codec_keyring
from keel.workers.runtime import refusing, worker_data_converter, workflow_runner


def is_history_file(target: str) -> bool:
    """Whether ``keel replay TARGET`` means a history file rather than a workflow id."""
    return target.endswith(".json") or Path(target).is_file()


def load_history(path: str) -> WorkflowHistory:
    """A history exported by ``temporal workflow show --output json``, the UI or
    ``WorkflowHistory.to_json``; its workflow id is read from the history (the file
    name only when the history does not say).

    Raises:
        CliError: the file is missing or is not a workflow history (exit 2).
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", USAGE) from exc
    try:
        parsed = WorkflowHistory.from_json("", text)
    except (ParseError, ValueError, TypeError, KeyError) as exc:
        raise CliError(f"{path} is not a workflow history: {exc}", USAGE) from exc
    if not parsed.events or not parsed.events[0].HasField(
        "workflow_execution_started_event_attributes"
    ):
        raise CliError(f"{path} is not a workflow history: it does not start a workflow", USAGE)
    started = parsed.events[0].workflow_execution_started_event_attributes
    return WorkflowHistory(started.workflow_id or Path(path).stem, parsed.events)


def history_type(history: WorkflowHistory) -> str:
    """The workflow type a history is of."""
    return str(history.events[0].workflow_execution_started_event_attributes.workflow_type.name)


async def cmd_replay(client: Client | None, settings: KeelSettings, args: Any) -> int:
    """Replay a history (a file, or a workflow id's latest run) with the loaded apps' code;
    exit 1 if it does not replay."""
    if is_history_file(args.target):
        history = load_history(args.target)
    elif client is None:
        raise CliError("replaying by workflow id needs a reachable Temporal server", USAGE)
    else:
        history = await client.get_workflow_handle(args.target).fetch_history()
    apps = resolve_apps(args.app or ())
    workflows = workflows_of(apps)
    kind = history_type(history)
    known = {workflow_type_of(w) for w in workflows}
    if kind not in known:
        raise CliError(
            f"{history.workflow_id} is a {kind} workflow, which no loaded app defines (loaded: "
            f"{', '.join(a.name for a in apps) or 'none'}); load the app that does with "
            "--app MODULE[:ATTR] or KEEL_APPS=MODULE (the module must be importable here)",
            USAGE,
        )
    replayer = Replayer(
        workflows=workflows,
        data_converter=replay_converter(client, settings, history),
        runtime=_quiet_runtime(),
        workflow_runner=workflow_runner(),  # the workers' sandbox: replay runs as they ran
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    record: dict[str, Any] = {
        "workflow_id": history.workflow_id,
        "workflow_type": kind,
        "events": len(history.events),
        "deterministic": result.replay_failure is None,
    }
    if result.replay_failure is not None:
        record["error"] = f"{type(result.replay_failure).__name__}: {result.replay_failure}"
        if wants_json(args):
            print(json.dumps(record))
        return report(args, f"replay of {history.workflow_id} failed: {record['error']}", FAILURE)
    emit(
        args,
        f"replayed {history.workflow_id} ({kind}): {len(history.events)} history events, "
        "deterministic",
        record,
    )
    return OK


def replay_converter(
    client: Client | None, settings: KeelSettings, history: WorkflowHistory
) -> DataConverter:
    """The workers' converter, with the client's codec keys (else those configured): an
    encrypted history replays decrypted.

    Raises:
        CliError: the history is encrypted with a key this process does not have (exit 2).
    """
    if client is not None:
        converter = refusing(client.data_converter)
    else:
        try:
            keyring = codec_keyring(settings, target=settings.temporal_address, embedded=False)
        except KeelUserError:
            keyring = None  # a plaintext history replays without keys
        converter = worker_data_converter(keyring)
    codec = converter.payload_codec
    known = codec.keyring.keys if isinstance(codec, EncryptionCodec) else {}
    start = history.events[0].workflow_execution_started_event_attributes
    for payload in start.input.payloads:
        if payload.metadata.get("encoding") == ENCODING:
            key_id = payload.metadata.get(KEY_ID, b"").decode("utf-8", "replace")
            if key_id not in known:
                raise CliError(
                    f"{history.workflow_id}'s history is encrypted with key id {key_id[:64]!r}, "
                    f"which this process does not have: {HOW_TO_CONFIGURE}",
                    USAGE,
                )
    return converter


def _quiet_runtime() -> Runtime:
    """A Temporal runtime whose core logs only errors: a failed replay is reported once, by
    ``keel replay``, not also as the core's warning."""
    quiet = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=quiet)))


async def cmd_export(client: Client, settings: KeelSettings, args: Any) -> int:
    """Write every selected execution's ledger as JSON lines (one event per line, with its
    ``workflow_id`` and ``run_id``); executions without a Keel ledger are skipped with a
    note on stderr. With ``--dataset``: training data instead (``keel.cli.dataset``)."""
    if getattr(args, "dataset", None):
        from keel.cli.dataset import export_dataset

        return await export_dataset(client, settings, args)
    if getattr(args, "metadata", None):
        raise CliError("--metadata goes with --dataset chat|preference", USAGE)
    from keel.cli.dataset import selected_ledgers, source_of

    load_event_types(args)
    counts = {"events": 0, "executions": 0, "skipped": 0, "archived": 0}
    selection = selected_ledgers(
        client,
        settings,
        source=source_of(args),
        query=args.query,
        workflow_type=getattr(args, "workflow_type", None),
    )
    with output_file(args.out) as out:
        async for selected in selection:
            if selected.problem is not None:
                print(
                    f"keel: skipped {escape(selected.workflow_id)}: {selected.problem}",
                    file=sys.stderr,
                )
                counts["skipped"] += 1
                continue
            counts["events"] += write_export(out, selected.workflow_id, selected.runs)
            counts["executions"] += 1
            counts["archived"] += selected.origin == "archive"
    summary = f"exported {counts['events']} ledger events of {counts['executions']} executions"
    if counts["archived"]:
        summary += f" ({counts['archived']} from the ledger archive: Temporal no longer has them)"
    if counts["skipped"]:
        summary += f" ({counts['skipped']} without a Keel ledger skipped)"
    print(json.dumps(counts) if wants_json(args) else summary, file=sys.stderr)
    return OK
