"""The dossier of a ledger as stored, without a browser: each forgery of a real ledger gets
a dossier that says where it broke; an event that fits no type, a huge raw answer and
hostile text in every field that reaches the page are shown, inert; default file names
cannot leave the directory; a missing Chromium is named."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from keel.cli.audit import audit_report, safe_name
from keel.cli.dossier import PdfUnavailable, build_dossier, render_html, write_pdf
from keel.cli.dossier.decisions import SHOWN_CHARS
from keel.cli.dossier.facts import Dossier, Run
from keel.cli.ledgers import chain_runs
from keel.contracts.integrity import verify_ledger
from keel.contracts.reviews import ReviewerTrust, trusted_key_entry
from keel.contracts.signing import SigningKey
from keel.testing import kit_review_trust
from keel.workers.keys import read_keyring
from tests.conftest import keel_worker
from tests.helpers import start_review, wait_for_gate
from tests.ledger_forgeries import FORGERIES, RealLedgers, changed, index_of, record_ledgers

Raw = list[dict[str, Any]]
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&\u202e"


@pytest.fixture(scope="module")
async def real(
    ts_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> RealLedgers:
    return await record_ledgers(ts_env.client, tmp_path_factory.mktemp("dossier"))


def dossier_of(real: RealLedgers, events: Raw, trust: ReviewerTrust | None = None) -> Dossier:
    trust = kit_review_trust() if trust is None else trust
    report = audit_report(events, read_keyring(real.keyring), trust, closed=True)
    return build_dossier(real.review_id, [Run("run", "COMPLETED")], events, report, trust)


def row_class(page: str, seq: int) -> str:
    found = re.search(rf'<tr class="(\w+)" data-seq="{seq}">', page)
    assert found, f"no timeline row #{seq}"
    return found[1]


def test_a_real_ledger_is_verified_with_its_decision_and_gate(real: RealLedgers) -> None:
    events = real.events(real.review)
    dossier = dossier_of(real, events)
    assert dossier.verification.state == "verified", dossier.verification.headline
    [decision] = dossier.decisions
    [gate] = dossier.gates
    assert decision.gate is gate and gate.reviews == decision.event.seq
    decided = events[index_of(events, "GateDecided")]
    assert [a.event.reviewer for a in gate.actions] == [decided["reviewer"]]
    assert gate.actions[0].signature.state == "verified"
    answers = {a.key: a.text for a in decision.answers()}
    assert answers["approver"] == decided["reviewer"]
    assert answers["when"] == decision.gate.closed_at.isoformat()  # type: ignore[union-attr]
    assert len(answers) == 10


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_each_forgery_gets_a_dossier_that_says_where_it_broke(real: RealLedgers, name: str) -> None:
    forged = FORGERIES[name](real.events(real.review))
    expected = verify_ledger(forged, keyring=read_keyring(real.keyring), closed=True)
    assert not expected.ok and expected.broken_at is not None
    dossier = dossier_of(real, forged)
    assert dossier.verification.state == "broken"
    assert dossier.verification.broken_at == expected.broken_at
    page = render_html(dossier)
    assert 'data-state="broken"' in page
    assert f"LEDGER BROKEN at event #{expected.broken_at}" in page
    if any(e["seq"] == expected.broken_at for e in forged):
        assert row_class(page, expected.broken_at) == "broken"


@pytest.mark.parametrize("name", ["changed-field", "resealed-chain"])
def test_a_reviewer_swapped_in_the_store_is_flagged_at_the_gate(
    real: RealLedgers, name: str
) -> None:
    forged = FORGERIES[name](real.events(real.review))
    decided = forged[index_of(forged, "GateDecided")]
    dossier = dossier_of(real, forged)
    [gate] = dossier.gates
    [decision] = dossier.decisions
    assert gate.unverified and decision.unverified
    [swapped] = [a for a in gate.actions if a.event.seq == decided["seq"]]
    assert swapped.event.reviewer == "gc.morgan"
    assert swapped.signature.state == "failed"
    assert "the event's reviewer is not the one who signed" in swapped.signature.text
    page = render_html(dossier)
    assert page.count("UNVERIFIED: ") == 2  # the decision's card and the gate's
    opened_head = forged[index_of(forged, "ChainHeadSigned")]  # the last signature that holds
    vouched = [row.seq for row in dossier.timeline if row.state == "ok"]
    assert vouched == list(range(1, opened_head["covers_seq"] + 1))


def test_a_decision_signed_by_a_key_the_trust_file_lacks_breaks_the_ledger(
    real: RealLedgers,
) -> None:
    other = ReviewerTrust(keys=[trusted_key_entry(SigningKey.generate(), "service", name="x")])
    events = real.events(real.review)
    dossier = dossier_of(real, events, other)
    decided = events[index_of(events, "GateDecided")]
    assert (dossier.verification.state, dossier.verification.broken_at) == (
        "broken",
        decided["seq"],
    )
    signature = dossier.gates[0].actions[0].signature
    assert signature.state == "failed" and "does not hold" in signature.text
    assert dossier.gates[0].unverified and dossier.decisions[0].unverified


def test_the_prompt_is_re_rendered_from_the_recorded_input_and_its_hash_compared(
    real: RealLedgers,
) -> None:
    events = real.events(real.review)
    i = index_of(events, "AgentDecided")
    assert events[i]["input"], "the ledger records the node's input"
    [decision] = dossier_of(real, events).decisions
    assert decision.prompt_check.endswith("the hash matches")
    forged = changed(events, i, prompt_sha256="0" * 64)
    [decision] = dossier_of(real, forged).decisions
    assert decision.prompt_check.endswith("the hash DIFFERS")


async def test_an_unanswered_gate_shows_its_escalation_and_expiry(
    ts_env: WorkflowEnvironment, real: RealLedgers
) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium", prefix="expired")
        await wait_for_gate(handle, "standard-review")
        await handle.result()  # time skips through both SLAs
    events = [e for run in await chain_runs(ts_env.client, handle.id) for e in run.events]
    [decision] = dossier_of(real, events).decisions
    gate = decision.gate
    assert gate is not None and gate.actions == []
    (expired,) = [e for e in events if e["type"] == "GateExpired"]
    assert gate.verdict == f"expired: {expired['default_decision']} by default"
    assert [e.subject for e in gate.escalations] == ["gate:standard-review"]
    answers = {a.key: a for a in decision.answers()}
    assert answers["approver"].text == "nobody"
    assert answers["when"].text == expired["at"].replace("Z", "+00:00")
    assert decision.outcome == "expired"


def test_a_decision_signed_for_another_run_is_marked_failed(real: RealLedgers) -> None:
    events = real.events(real.review)
    moved = changed(events, index_of(events, "WorkflowStarted"), run_id="another-run")
    [action] = dossier_of(real, moved).gates[0].actions
    assert action.signature.state == "failed"
    assert "signed for another execution or run" in action.signature.text


def test_without_a_reviewer_trust_file_the_dossier_says_what_went_unchecked(
    real: RealLedgers,
) -> None:
    dossier = dossier_of(real, real.events(real.review), ReviewerTrust(keys=[]))
    assert dossier.verification.state == "incomplete"
    assert "reviewer signatures not checked" in dossier.verification.headline
    assert dossier.gates[0].actions[0].signature.state == "unchecked"
    assert 'data-state="incomplete"' in render_html(dossier)


def test_an_event_that_fits_no_type_is_shown_as_stored(real: RealLedgers) -> None:
    events = real.events(real.review)
    i = index_of(events, "AgentDecided")
    forged = changed(events, i, attempt=HOSTILE)
    dossier = dossier_of(real, forged)
    assert dossier.unparsed == 1 and not dossier.decisions
    page = render_html(dossier)
    assert "does not fit its type" in page and "(1 do not fit their type)" in page
    assert "<script" not in page and "&lt;script&gt;" in page


def test_events_that_are_not_objects_or_nest_too_deeply_still_get_a_dossier(
    real: RealLedgers,
) -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(5_000):
        inner["a"] = inner = {}
    events = real.events(real.review)
    odd: list[Any] = ["not an event", 42, None, {"type": "Mystery", "seq": 4, "x": deep}]
    forged = events[:3] + odd + events[3:]
    dossier = dossier_of(real, forged)
    assert dossier.verification.state == "broken" and dossier.verification.broken_at == 4
    page = render_html(dossier)
    assert len(dossier.timeline) == len(forged) and dossier.unparsed >= 3
    assert "nested too deeply to write out" in page


def test_a_huge_raw_answer_is_shown_in_part_with_its_length(real: RealLedgers) -> None:
    events = real.events(real.review)
    huge = "x" * (SHOWN_CHARS + 5_000)
    forged = changed(events, index_of(events, "AgentDecided"), raw_response=huge)
    dossier = dossier_of(real, forged)
    page = render_html(dossier)
    assert f"Showing the first {SHOWN_CHARS} of {len(huge)} characters" in page
    assert f"{len(huge)} characters, sha256" in page
    assert page.count(huge) == 1  # whole once, behind its summary


@pytest.mark.parametrize(
    "kind,fields",
    [
        ("GateDecided", ("reviewer", "comment", "gate", "on_behalf_of")),
        ("AgentDecided", ("node", "contract", "model", "provider", "raw_response")),
        ("Routed", ("rule", "route")),
        ("GateOpened", ("title", "gate")),
        ("WorkflowStarted", ("workflow", "workflow_id")),
    ],
)
def test_hostile_text_in_any_field_is_escaped(
    real: RealLedgers, kind: str, fields: tuple[str, ...]
) -> None:
    events = real.events(real.review)
    forged = changed(events, index_of(events, kind), **dict.fromkeys(fields, HOSTILE))
    forged[-1]["summary"] = {"reason": HOSTILE}
    page = render_html(dossier_of(real, forged))
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\u202e" not in page


def test_a_workflow_id_makes_a_file_name_that_stays_here() -> None:
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("a/b\\c d") == "a_b_c_d"
    assert safe_name("...") == "execution"
    assert len(safe_name("x" * 1000)) == 120


@pytest.mark.integration  # Playwright's driver is a process of its own
async def test_without_chromium_the_pdf_says_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "d.html"
    page.write_text("<!doctype html><p>dossier</p>")
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PdfUnavailable, match="the PDF needs Chromium"):
        await write_pdf(page, tmp_path / "d.pdf", title="t")
    assert not (tmp_path / "d.pdf").exists()
