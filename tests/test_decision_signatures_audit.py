"""A reviewer's signature holds only for what they signed: someone who can rewrite the
ledger *and* re-sign its heads with the worker's key (a stolen worker key, a lying worker)
still cannot turn a rejection into an approval, move a decision to another gate, or change
its comment, modifications, delegation or reassignment unnoticed by ``keel verify
--reviewer-keys`` (``decision_problems``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from keel.cli.ledgers import chain_runs, export_records
from keel.cli.main import run
from keel.contracts.integrity import verify_ledger
from keel.contracts.reviews import DECISION_EVENTS, ReviewerTrust, decision_problems
from keel.testing import kit_review_trust, offline_settings
from keel.workers.keys import load_worker_keys, trusted_keyring
from tests.conftest import keel_worker
from tests.helpers import decide, review, start_review, top_level_imports, wait_for_gate
from tests.ledger_forgeries import (
    Raw,
    changed,
    index_of,
    reseal,
    with_events,
    write_export,
    write_keyring,
)

HIGH = "general-counsel"
REASSIGN_TO = {"reviewers": ["gc.morgan", "deputy-gc.alex"], "roles": ["general-counsel"]}


@pytest.fixture(scope="module")
async def recorded(ts_env: WorkflowEnvironment) -> list[dict[str, Any]]:
    """A high-risk review's export: deferred, reassigned, rejected with a comment (the agent
    re-assesses), then approved by two general counsels."""
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "high", prefix="decision-audit")
        await wait_for_gate(handle, HIGH)
        await decide(handle, review(HIGH, "defer", "gc.morgan", comment="next week"))
        await decide(
            handle,
            review(HIGH, "reassign", "gc.morgan", comment="both of us", reassign_to=REASSIGN_TO),
        )
        await decide(handle, review(HIGH, "reject", "gc.morgan", comment="clause 4 uncapped"))
        await wait_for_gate(handle, f"{HIGH}-2")
        await decide(handle, review(f"{HIGH}-2", "approve", "gc.morgan"))
        await decide(handle, review(f"{HIGH}-2", "approve", "deputy-gc.alex"))
        await handle.result()
        runs = await chain_runs(ts_env.client, handle.id)
    return [record for run in runs for record in export_records(handle.id, run)]


def events_of(records: list[dict[str, Any]]) -> Raw:
    return [record["event"] for record in records]


def resigned(events: Raw, index: int, **fields: Any) -> Raw:
    """``fields`` changed at ``index``, every hash after it recomputed and every head
    re-signed with the worker's own key: a chain that verifies."""
    signer = load_worker_keys(offline_settings()).signing
    return reseal(changed(events, index, **fields), index, signer=signer)


FORGERIES: dict[str, Callable[[Raw], tuple[int, Raw]]] = {
    "rejection-made-approval": lambda ev: (
        i := index_of(ev, "GateDecided", decision="reject"),
        resigned(ev, i, decision="approve", state="approved", comment=None),
    ),
    "rejection-moved-to-another-gate": lambda ev: (
        i := index_of(ev, "GateDecided", decision="reject"),
        resigned(ev, i, gate=f"{HIGH}-2"),
    ),
    "comment-rewritten": lambda ev: (
        i := index_of(ev, "GateDecided", decision="reject"),
        resigned(ev, i, comment="looks fine"),
    ),
    "modifications-slipped-into-an-approval": lambda ev: (
        i := index_of(ev, "GateApproved"),
        resigned(ev, i, modifications={"conditions": ["waive the cap"]}),
    ),
    "delegation-invented": lambda ev: (
        i := index_of(ev, "GateApproved"),
        resigned(ev, i, on_behalf_of="deputy-gc.alex"),
    ),
    "reassigned-elsewhere": lambda ev: (
        i := index_of(ev, "GateReassigned"),
        resigned(ev, i, to_reviewers=["mallory"], to_roles=[]),
    ),
    "deferral-claims-a-rejection": lambda ev: (
        i := index_of(ev, "GateDeferred"),
        resigned(ev, i, type="GateDecided", decision="reject", state="rejected", via="update"),
    ),
}


def test_every_decision_of_a_real_ledger_checks_out(recorded: list[dict[str, Any]]) -> None:
    events = events_of(recorded)
    kinds = [e["type"] for e in events if e["type"] in DECISION_EVENTS]
    assert sorted(set(kinds)) == sorted(DECISION_EVENTS)
    assert decision_problems(events, kit_review_trust()) == (len(kinds), [])


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_resigned_forgery_verifies_as_a_chain_but_not_as_decisions(
    recorded: list[dict[str, Any]], name: str
) -> None:
    index, forged = FORGERIES[name](events_of(recorded))
    chain = verify_ledger(forged, keyring=trusted_keyring(offline_settings()), closed=True)
    assert chain.ok, chain.reason  # the worker's key re-signed it: only the reviewers' hold
    checked, problems = decision_problems(forged, kit_review_trust())
    assert len(problems) == 1 and problems[0].startswith(f"event {index + 1} ")
    assert checked == len([e for e in forged if e["type"] in DECISION_EVENTS]) - 1


def test_keel_verify_fails_the_forged_export_and_passes_the_real_one(
    recorded: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trust = tmp_path / "reviewer-keys.json"
    trust.write_text(kit_review_trust().model_dump_json())
    keys = write_keyring(tmp_path / "keys.json", load_worker_keys(offline_settings()).signing)
    real = write_export(tmp_path / "real.jsonl", recorded)
    _, forged_events = FORGERIES["rejection-made-approval"](events_of(recorded))
    forged = write_export(tmp_path / "forged.jsonl", with_events(recorded, forged_events))
    options = ["--keys", str(keys), "--reviewer-keys", str(trust), "-o", "json"]
    assert run(["verify", str(real), *options]) == 0
    capsys.readouterr()
    assert run(["verify", str(forged), *options]) == 1
    out = capsys.readouterr().out
    assert "the reviewer signed 'reject'" in out, out
    assert json.loads(out.strip().splitlines()[-1])  # a JSON report, not a traceback


# --- the standalone reviewer verifier (verifier/keel_verify_reviews.py) ----------------------

VERIFIER = Path(__file__).parent.parent / "verifier" / "keel_verify_reviews.py"


def standalone(export: Path, trust: Path, *, expect: int) -> str:
    done = subprocess.run(
        [sys.executable, "-O", str(VERIFIER), str(export), "--reviewer-keys", str(trust)],
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == expect, f"-> {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def trust_file(path: Path, **changes: Any) -> Path:
    """The test kit's reviewer trust file, its one entry changed by ``changes``."""
    entries = kit_review_trust().model_dump(mode="json")["keys"]
    path.write_text(json.dumps({"keys": [{**entry, **changes} for entry in entries]}))
    return path


def test_the_standalone_reviewer_verifier_is_short_and_needs_no_keel() -> None:
    source = VERIFIER.read_text()
    assert len(source.splitlines()) < 100
    assert top_level_imports(source) == {
        "argparse",
        "base64",
        "json",
        "sys",
        "datetime",
        "rfc8785",
        "cryptography",
    }
    assert "assert " not in source  # python -O would skip every check


def test_the_standalone_verifier_holds_real_decisions_and_fails_each_forgery(
    recorded: list[dict[str, Any]], tmp_path: Path
) -> None:
    trust = trust_file(tmp_path / "trust.json")
    decisions = len([e for e in events_of(recorded) if e["type"] in DECISION_EVENTS])
    out = standalone(write_export(tmp_path / "real.jsonl", recorded), trust, expect=0)
    assert f"{decisions} decisions hold" in out
    for name, forge in FORGERIES.items():
        index, forged = forge(events_of(recorded))
        export = write_export(tmp_path / f"{name}.jsonl", with_events(recorded, forged))
        out = standalone(export, trust, expect=1)
        assert f"FAILED event #{index + 1} " in out and out.count("FAILED") == 1, (name, out)


def test_the_standalone_verifier_refuses_retired_narrow_and_unknown_keys(
    recorded: list[dict[str, Any]], tmp_path: Path
) -> None:
    export = write_export(tmp_path / "real.jsonl", recorded)
    retired = trust_file(tmp_path / "retired.json", not_after="2000-01-01T00:00:00Z")
    assert "was retired" in standalone(export, retired, expect=1)
    narrow = trust_file(tmp_path / "narrow.json", kind="reviewer", subject="legal.sam", roles=[])
    assert "signs for 'legal.sam' and its roles only" in standalone(export, narrow, expect=1)
    empty = tmp_path / "empty.json"
    empty.write_text('{"keys": []}')
    assert "which the trust file does not hold" in standalone(export, empty, expect=1)
    (tmp_path / "junk.jsonl").write_text("{not json\n")
    assert "unreadable input" in standalone(tmp_path / "junk.jsonl", empty, expect=2)


def test_keel_verify_also_refuses_retired_and_narrow_keys(recorded: list[dict[str, Any]]) -> None:
    events = events_of(recorded)
    (entry,) = kit_review_trust().keys
    retired = ReviewerTrust(
        keys=[entry.model_copy(update={"not_after": datetime(2000, 1, 1, tzinfo=UTC)})]
    )
    _, problems = decision_problems(events, retired)
    assert problems and all("was retired" in p for p in problems)
    narrow = ReviewerTrust(
        keys=[entry.model_copy(update={"kind": "reviewer", "subject": "gc.morgan", "roles": ()})]
    )
    _, problems = decision_problems(events, narrow)
    assert any("signs for 'gc.morgan' only" in p for p in problems)


def test_a_decision_in_a_continued_run_that_records_no_workflow_started_holds(
    tmp_path: Path,
) -> None:
    """A continued run starts with ``LedgerContinued``; an app need not record its own
    ``WorkflowStarted``. Its decisions are signed for the new run and still hold (the run
    check applies where the ledger names the run)."""
    from keel.contracts.reviews import sign_fields
    from keel.testing import kit_review_key, review_payload

    def decided(run_id: str, seq: int) -> dict[str, Any]:
        signed = sign_fields(
            kit_review_key(),
            {
                "roles": [],
                "workflow_id": "wf",
                "run_id": run_id,
                "issued_at": "2026-12-01T12:00:00+00:00",
                "nonce": f"nonce-{seq}-0123456789abcdef",
                "auth": {"method": "test"},
                **review_payload("g", "approve", "gc.morgan"),
            },
        )
        return {
            "type": "GateDecided",
            "seq": seq,
            "gate": "g",
            "decision": "approve",
            "state": "approved",
            "reviewer": "gc.morgan",
            "via": "update",
            "key_id": signed["signature"]["key_id"],
            "signature": signed["signature"]["signature"],
            "signed": {k: v for k, v in signed.items() if k != "signature"},
        }

    events = [
        {"type": "WorkflowStarted", "seq": 1, "workflow_id": "wf", "run_id": "run-1"},
        decided("run-1", 2),
        {"type": "LedgerContinued", "seq": 3, "previous_run_id": "run-1", "run": 2},
        decided("run-2", 4),
    ]
    assert decision_problems(events, kit_review_trust()) == (2, [])
    moved = [*events[:3], decided("run-1", 4)]  # a first-run decision replayed in the second
    assert decision_problems(moved, kit_review_trust())[0] == 2  # the run is not named here
    forged = [*events[:1], decided("run-2", 2)]  # signed for a run this one is not
    _, problems = decision_problems(forged, kit_review_trust())
    assert problems and "another execution or run" in problems[0]
    records = [
        {"workflow_id": "wf", "run_id": "r", "status": "COMPLETED", "event": e} for e in events
    ]
    trust = trust_file(tmp_path / "trust.json")
    assert "2 decisions hold" in standalone(
        write_export(tmp_path / "c.jsonl", records), trust, expect=0
    )
    bad = [{**records[0], "event": e} for e in forged]
    assert "another run" in standalone(write_export(tmp_path / "f.jsonl", bad), trust, expect=1)
