"""What an attacker who can write the store does to a ledger, as functions over its stored
JSON objects (one workflow's chain, oldest first); shared by the integrity, ``keel verify``
and standalone-verifier tests.

Each forgery returns a new list and leaves its input alone. "Resealed" forgeries recompute
every hash (and the heads the signatures name) from the change on, as someone who knows the
scheme would; only the signatures, which they cannot recompute, give them away.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from temporalio.client import Client

from keel.contracts.ledger import HEAD_PURPOSE, LEDGER_SCHEME, head_message
from keel.contracts.signing import Keyring, SigningKey
from tests.helpers import decide

Raw = list[dict[str, Any]]


def rehash(event: dict[str, Any]) -> str:
    body = {key: value for key, value in event.items() if key != "hash"}
    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def reseal(events: Raw, start: int = 0, *, signer: SigningKey | None = None) -> Raw:
    """Renumber, relink and rehash from ``start`` on; signatures name the new heads (and are
    re-made by ``signer`` if given: an attacker's own key)."""
    out = copy.deepcopy(events)
    by_old: dict[str, str] = {}
    for index in range(len(out)):
        event = out[index]
        if index >= start:
            event["seq"] = (out[index - 1]["seq"] + 1) if index else event["seq"]
            event["prev_hash"] = out[index - 1]["hash"] if index else event["prev_hash"]
            if event["type"] == "ChainHeadSigned":
                event["covers_hash"] = by_old.get(event["covers_hash"], event["covers_hash"])
                if signer is not None:
                    _resign(event, signer)
            if event["type"] == "LedgerContinued":
                event["previous_head"] = event["prev_hash"]
            old, event["hash"] = event["hash"], rehash(event)
            by_old[old] = event["hash"]
    return out


def _resign(event: dict[str, Any], signer: SigningKey) -> None:
    message = head_message(
        LEDGER_SCHEME,
        event["workflow_id"],
        event["run_id"],
        event["covers_seq"],
        event["covers_hash"],
        event["reason"],
    )
    signature = signer.sign(HEAD_PURPOSE, message)
    event["key_id"], event["signature"] = signature.key_id, signature.signature


def index_of(events: Raw, kind: str, **match: Any) -> int:
    return next(
        i
        for i, e in enumerate(events)
        if e["type"] == kind and all(e.get(k) == v for k, v in match.items())
    )


def changed(events: Raw, index: int, **fields: Any) -> Raw:
    out = copy.deepcopy(events)
    out[index].update(fields)
    return out


def dropped(events: Raw, index: int) -> Raw:
    return [e for i, e in enumerate(copy.deepcopy(events)) if i != index]


def swapped(events: Raw, index: int) -> Raw:
    out = copy.deepcopy(events)
    out[index], out[index + 1] = out[index + 1], out[index]
    return out


def last_signed_index(events: Raw) -> int:
    return max(i for i, e in enumerate(events) if e["type"] == "ChainHeadSigned")


FORGERIES: dict[str, Callable[[Raw], Raw]] = {}
"""Each forgery of the issue, by name, over a ledger with a decided gate (``GateDecided``)."""


def forgery(name: str) -> Callable[[Callable[[Raw], Raw]], Callable[[Raw], Raw]]:
    def register(fn: Callable[[Raw], Raw]) -> Callable[[Raw], Raw]:
        FORGERIES[name] = fn
        return fn

    return register


@forgery("changed-field")
def _changed_reviewer(events: Raw) -> Raw:
    return changed(events, index_of(events, "GateDecided"), reviewer="gc.morgan")


@forgery("dropped-event")
def _dropped(events: Raw) -> Raw:
    return dropped(events, index_of(events, "Routed"))


@forgery("reordered-pair")
def _reordered(events: Raw) -> Raw:
    return swapped(events, index_of(events, "GateDecided") - 1)


@forgery("resealed-chain")
def _resealed(events: Raw) -> Raw:
    i = index_of(events, "GateDecided")
    return reseal(changed(events, i, reviewer="gc.morgan"), i)


@forgery("injected-field")
def _injected(events: Raw) -> Raw:
    i = index_of(events, "GateDecided")
    return reseal(changed(events, i, approved_by_board=True), i)


@forgery("untrusted-key")
def _untrusted(events: Raw) -> Raw:
    i = index_of(events, "GateDecided")
    return reseal(changed(events, i, reviewer="gc.morgan"), i, signer=SigningKey.generate())


@forgery("truncated")
def _truncated(events: Raw) -> Raw:
    """The last signed head and every event after it removed."""
    return copy.deepcopy(events[: last_signed_index(events)])


@forgery("truncated-to-an-earlier-head")
def _truncated_earlier(events: Raw) -> Raw:
    """Back to the gate's first signed head: the decision, completion and their signatures
    gone; what is left is signed throughout."""
    return copy.deepcopy(events[: index_of(events, "GateOpened") + 2])


def write_keyring(path: Path, *keys: SigningKey) -> Path:
    path.write_text(json.dumps(Keyring([k.public_key for k in keys]).to_json()))
    return path


def write_export(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def with_events(records: list[dict[str, Any]], events: Raw) -> list[dict[str, Any]]:
    """Export records of one workflow with ``events`` in place of theirs; each event keeps
    the run id and status of the record at its position (the last record's past the end)."""
    out = []
    for index, event in enumerate(events):
        template = records[min(index, len(records) - 1)]
        out.append({**template, "event": event})
    return out


# --- real ledgers, recorded by a worker on the time-skipping server --------------------------


@dataclass
class RealLedgers:
    """Export records (``keel export``'s format) of real runs, and the worker's keyring."""

    review_id: str
    review: list[dict[str, Any]]
    """A medium contract review: gate decided by legal.sam, completed."""
    incident_id: str
    incident: list[dict[str, Any]]
    """An incident that continued as new twice (three runs), oldest run first."""
    keyring: Path
    other_keyring: Path
    """A keyring that trusts another key only."""

    def events(self, records: list[dict[str, Any]]) -> Raw:
        return [record["event"] for record in records]


async def record_ledgers(client: Client, tmp: Path) -> RealLedgers:
    from keel.cli.ledgers import chain_runs, export_records
    from keel.scenarios.incident import IncidentInvestigationWorkflow
    from keel.testing import offline_settings
    from keel.workers.keys import load_worker_keys
    from tests.conftest import keel_worker
    from tests.helpers import review, start_review, wait_for_gate
    from tests.samples import load_sample
    from tests.standins import ScriptedPlanner, StandInTools, plan, rollback, task

    async with keel_worker(client) as tq:
        handle = await start_review(client, tq, "medium", prefix="verify")
        await wait_for_gate(handle, "standard-review")
        await decide(handle, review("standard-review", "approve", "legal.sam"))
        await handle.result()
        review_records = [
            r for run in await chain_runs(client, handle.id) for r in export_records(handle.id, run)
        ]
    planner = ScriptedPlanner(
        plan(rollback("first")),
        plan(task("look", "metrics_lookup")),
        plan(task("notify", "update_incident"), done=True, summary="mitigated"),
    )
    async with keel_worker(client, provider=planner, tools=StandInTools().activities()) as tq:
        page = {**load_sample("incident-page"), "continue_after_rounds": 1}
        incident = await client.start_workflow(
            IncidentInvestigationWorkflow.run,
            {"page": page},
            id=f"verify-incident-{uuid.uuid4()}",
            task_queue=tq,
        )
        await wait_for_gate(incident, "approve-first")
        await decide(incident, review("approve-first", "approve", "oncall.lead"))
        await incident.result()
        incident_records = [
            r
            for run in await chain_runs(client, incident.id)
            for r in export_records(incident.id, run)
        ]
    worker_key = load_worker_keys(offline_settings()).signing
    return RealLedgers(
        review_id=handle.id,
        review=review_records,
        incident_id=incident.id,
        incident=incident_records,
        keyring=write_keyring(tmp / "trusted-keys.json", worker_key),
        other_keyring=write_keyring(tmp / "other-keys.json", SigningKey.generate()),
    )


def forged_links(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The incident's export with the last run's continue-as-new link forged: pointing at
    another previous run, or at another previous head (each resealed from there on)."""
    events = [record["event"] for record in records]
    i = max(n for n, e in enumerate(events) if e["type"] == "LedgerContinued")
    first_run = records[0]["run_id"]
    other_run = reseal(changed(events, i, previous_run_id=first_run), i)
    other_head = changed(events, i, previous_head="e" * 64)
    other_head[i]["hash"] = rehash(other_head[i])
    return {
        "link-to-another-run": with_events(records, other_run),
        "link-to-another-head": with_events(records, reseal(other_head, i + 1)),
    }
