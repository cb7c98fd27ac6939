"""``keel verify`` on real ledgers: an export file (no server needed) verifies, each forgery
of it exits 1 with the event number and the reason; by workflow id through Temporal."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from keel.contracts.integrity import verify_ledger
from keel.contracts.signing import Keyring
from keel.offline import OfflineProvider
from keel.testing import offline_settings
from keel.workers.apps import resolve_apps
from keel.workers.keys import load_worker_keys, read_keyring
from keel.workers.runtime import build_worker, connect
from tests.conftest import CODEC_KEYS, codec_settings
from tests.helpers import decide, review, run_keel, start_review, wait_for_gate
from tests.ledger_forgeries import (
    FORGERIES,
    RealLedgers,
    changed,
    forged_links,
    index_of,
    record_ledgers,
    with_events,
    write_export,
    write_keyring,
)
from tests.samples import load_sample


@pytest.fixture(scope="module")
async def real(
    ts_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> RealLedgers:
    return await record_ledgers(ts_env.client, tmp_path_factory.mktemp("verify"))


async def keel(*args: str, env: dict[str, str] | None = None, expect: int) -> str:
    """``keel ARGS`` in a subprocess with no Temporal server reachable (files need none)."""
    no_server = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1", "KEEL_DATA_DIR": "/nonexistent"}
    return await run_keel(*args, env=env or no_server, expect=expect)


def keyring_of(real: RealLedgers) -> Keyring:
    return read_keyring(real.keyring)


async def test_a_real_export_verifies(real: RealLedgers, tmp_path: Path) -> None:
    export = write_export(tmp_path / "ledgers.jsonl", real.review + real.incident)
    out = await keel("verify", str(export), "--keys", str(real.keyring), expect=0)
    assert f"{real.review_id}: verified" in out and f"{real.incident_id}: verified" in out
    assert "scheme keel-ledger/2: signed by ed25519:" in out
    last = len(real.review) - 1  # the completion signature covers the event before it
    assert f"at #{last} (completion)" in out
    as_json = await keel("verify", str(export), "--keys", str(real.keyring), "-o", "json", expect=0)
    reports = {r["workflow_id"]: r for r in map(json.loads, as_json.splitlines())}
    assert reports[real.review_id]["ok"] and reports[real.review_id]["unsigned"] == 0
    signed = [s["reason"] for s in reports[real.review_id]["signed"]]
    assert signed == ["gate-opened:standard-review", "gate-approved:standard-review", "completion"]
    incident = [s["reason"] for s in reports[real.incident_id]["signed"]]
    assert incident.count("continue-as-new") == 2 and incident[-1] == "completion"


@pytest.mark.parametrize("name", sorted(FORGERIES))
async def test_each_forgery_of_an_export_exits_1_with_its_event_and_reason(
    real: RealLedgers, tmp_path: Path, name: str
) -> None:
    forged = FORGERIES[name](real.events(real.review))
    expected = verify_ledger(forged, keyring=keyring_of(real), closed=True)
    assert not expected.ok and expected.broken_at is not None and expected.reason
    export = write_export(tmp_path / f"{name}.jsonl", with_events(real.review, forged))
    out = await keel("verify", str(export), "--keys", str(real.keyring), expect=1)
    assert f"{real.review_id}: FAILED" in out
    assert f"LEDGER BROKEN at event #{expected.broken_at}: {expected.reason}" in out


async def test_the_issue_s_edit_is_caught_even_resealed(real: RealLedgers, tmp_path: Path) -> None:
    """legal.sam -> gc.morgan in the GateDecided, every hash recomputed: only the signature
    over the gate's decided head gives it away."""
    resealed = FORGERIES["resealed-chain"](real.events(real.review))
    decided = resealed[index_of(resealed, "GateDecided")]
    assert decided["reviewer"] == "gc.morgan"
    export = write_export(tmp_path / "resealed.jsonl", with_events(real.review, resealed))
    out = await keel("verify", str(export), "--keys", str(real.keyring), expect=1)
    signature = index_of(resealed, "ChainHeadSigned", reason="gate-approved:standard-review")
    assert f"LEDGER BROKEN at event #{signature + 1}: the signature by ed25519:" in out
    assert "does not match the signed content" in out


@pytest.mark.parametrize("name", ["link-to-another-run", "link-to-another-head"])
async def test_a_forged_continue_as_new_link_exits_1(
    real: RealLedgers, tmp_path: Path, name: str
) -> None:
    export = write_export(tmp_path / f"{name}.jsonl", forged_links(real.incident)[name])
    out = await keel("verify", str(export), "--keys", str(real.keyring), expect=1)
    assert f"{real.incident_id}: FAILED" in out
    why = "another previous run" if name.endswith("run") else "another previous head"
    assert f"the continue-as-new link names {why}" in out


async def test_a_signature_by_an_untrusted_key_fails(real: RealLedgers, tmp_path: Path) -> None:
    export = write_export(tmp_path / "ledgers.jsonl", real.review)
    out = await keel("verify", str(export), "--keys", str(real.other_keyring), expect=1)
    assert "which is not a trusted key" in out
    no_keys = await keel("verify", str(export), expect=1)
    assert "no trusted keys" in no_keys


async def test_an_open_run_may_end_unsigned_only_when_allowed(
    real: RealLedgers, tmp_path: Path
) -> None:
    events = real.events(real.review)
    cut = index_of(events, "GateDecided") + 1  # decided, not yet signed: as if still running
    records = [{**r, "status": "RUNNING"} for r in real.review[:cut]]
    export = write_export(tmp_path / "open.jsonl", records)
    strict = await keel("verify", str(export), "--keys", str(real.keyring), expect=1)
    assert "are unsigned, and the run is closed" in strict
    out = await keel("verify", str(export), "--keys", str(real.keyring), "--allow-open", expect=0)
    assert "1 events after the last signed head are unsigned (run still open)" in out


async def test_a_malformed_export_fails_and_text_is_escaped(
    real: RealLedgers, tmp_path: Path
) -> None:
    repeated = tmp_path / "repeated.jsonl"
    line = json.dumps(real.review[0])
    repeated.write_text(line[:-1] + ', "event": {}}\n')
    out = await keel("verify", str(repeated), "--keys", str(real.keyring), expect=1)
    assert "repeats a key" in out
    i = index_of(real.events(real.review), "GateDecided")
    forged = changed(real.events(real.review), i, reviewer="x\nverified\x1b[2J")
    records = [{**r, "workflow_id": "wf\x1b[2J\nok"} for r in with_events(real.review, forged)]
    export = write_export(tmp_path / "escape.jsonl", records)
    out = await keel("verify", str(export), "--keys", str(real.keyring), expect=1)
    assert "wf\\x1b[2J\\nok: FAILED" in out and "\x1b" not in out


async def test_a_legacy_ledger_fails_unless_allowed(tmp_path: Path, real: RealLedgers) -> None:
    event: dict[str, Any] = {
        "type": "WorkflowCompleted",
        "seq": 1,
        "at": "2025-01-01T00:00:00Z",
        "prev_hash": "0" * 64,
        "outcome": "approved",
        "summary": {},
    }
    text = "0" * 64 + json.dumps(event, sort_keys=True, separators=(",", ":"))
    event["hash"] = hashlib.sha256(text.encode()).hexdigest()
    record = {"workflow_id": "old", "run_id": "r", "status": "COMPLETED", "event": event}
    export = write_export(tmp_path / "legacy.jsonl", [record])
    out = await keel("verify", str(export), "--keys", str(real.keyring), expect=1)
    assert "unsigned legacy ledger (keel-ledger/1)" in out
    allowed = await keel(
        "verify", str(export), "--keys", str(real.keyring), "--allow-legacy", expect=0
    )
    assert "unsigned legacy ledger" in allowed


# --- by workflow id, through Temporal -----------------------------------------------------


@pytest.fixture
async def served(dev_env: WorkflowEnvironment) -> AsyncIterator[tuple[str, str]]:
    task_queue = f"verify-{uuid.uuid4()}"
    address = dev_env.client.service_client.config.target_host
    async with build_worker(
        await connect(codec_settings(), address=address),
        offline_settings(),
        apps=resolve_apps(),
        task_queue=task_queue,
        provider=OfflineProvider(),
    ):
        yield address, task_queue


async def test_keel_verify_and_keel_ledger_by_workflow_id(
    served: tuple[str, str], dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    address, task_queue = served
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "KEEL_CODEC_KEYS": CODEC_KEYS,
        "KEEL_DATA_DIR": str(tmp_path / "data"),
    }
    client = await connect(codec_settings(), address=address)
    handle = await start_review(client, task_queue, "medium", prefix="verify-id")
    await wait_for_gate(handle, "standard-review")
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps(Keyring([load_worker_keys(offline_settings()).signing.public_key]).to_json())
    )

    waiting = await keel("verify", handle.id, "--keys", str(keys), env=env, expect=0)
    assert "signed by ed25519:" in waiting and "(gate-opened:standard-review)" in waiting
    printed = await keel(
        "ledger", handle.id, env={**env, "KEEL_TRUSTED_KEYS_FILE": str(keys)}, expect=0
    )
    assert "(gate-opened:standard-review)" in printed and "signatures not checked" not in printed

    await decide(handle, review("standard-review", "approve", "legal.sam"))
    await handle.result()
    done = await keel("verify", handle.id, "--keys", str(keys), env=env, expect=0)
    assert f"{handle.id}: verified" in done and "(completion)" in done
    unchecked = await keel("ledger", handle.id, env=env, expect=0)
    assert "signatures not checked: no trusted keys here" in unchecked
    other = tmp_path / "other.json"
    other.write_text(json.dumps(Keyring([]).to_json()))
    assert "no trusted keys" in await keel(
        "verify", handle.id, "--keys", str(other), env=env, expect=1
    )


async def test_a_failed_run_ends_signed_and_verifies(
    served: tuple[str, str], tmp_path: Path
) -> None:
    """A run that fails (here: invalid input) still signs its head as it ends."""
    address, task_queue = served
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "KEEL_CODEC_KEYS": CODEC_KEYS,
        "KEEL_DATA_DIR": str(tmp_path / "data"),
    }
    client = await connect(codec_settings(), address=address)
    bad = {**load_sample("contract-low-risk"), "term_months": 0}
    handle = await start_review(client, task_queue, bad, prefix="verify-failed")
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    keys = write_keyring(tmp_path / "keys.json", load_worker_keys(offline_settings()).signing)
    printed = await keel("ledger", handle.id, env=env, expect=0)
    assert "InputRejected" in printed and "(completion)" in printed
    assert "unsigned" not in printed
    out = await keel("verify", handle.id, "--keys", str(keys), env=env, expect=0)
    assert f"{handle.id}: verified" in out
