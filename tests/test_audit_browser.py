"""``keel audit`` on real runs of a dev server, read in Chromium: a high-risk contract
review (rejected, re-invoked with the comment, approved by two) and a support email (a draft
repaired after its rule check, a refund modified by the lead). For every agent decision the
page answers the ten questions with the ledger's own values; the PDF is a PDF; hostile
strings from the model and the reviewers render as text; a ledger that does not verify
against the keys given gets a dossier that says so, and the command exits 1."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright
from temporalio.testing import WorkflowEnvironment

from keel.activities.providers.base import ModelReply, ModelRequest
from keel.activities.tools.email import EmailSender
from keel.cli.ledgers import chain_runs
from keel.cli.render import escape
from keel.contracts.registry import REGISTRY
from keel.contracts.signing import SigningKey
from keel.offline import OfflineFault, OfflineProvider
from keel.scenarios.support_email import SupportEmailWorkflow
from keel.scenarios.support_email.tools import SupportDesk
from keel.testing import keel_worker, offline_settings
from keel.workers.smtp_sink import SmtpSink
from tests.helpers import decide, review, run_keel, start_review, wait_for_gate
from tests.ledger_forgeries import write_keyring
from tests.samples import load_sample

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
HOSTILE = (
    '</pre></td></tr></table><script>document.title="pwned"</script>'
    "<img src=x onerror=\"document.title='pwned'\">&amp; \u202egnp.exe"
)
"""What a model or a reviewer could write to break out of the page."""
GC, DEPUTY, LEAD = "gc.morgan", "deputy-gc.alex", "support.lead.chen"


class HostileModel:
    """The offline model, its risk rationale and triage summary ending in ``HOSTILE``; the
    support drafts keep breaking the policy once (the repair path)."""

    def __init__(self) -> None:
        self.inner = OfflineProvider(
            [OfflineFault(kind="reply_policy_violation", contract="support-reply@1")]
        )
        self.name, self.model = self.inner.name, self.inner.model

    async def complete(self, request: ModelRequest) -> ModelReply:
        reply = await self.inner.complete(request)
        answer = json.loads(reply.text)
        for field in ("rationale", "summary"):
            if isinstance(answer.get(field), str):
                answer[field] += " " + HOSTILE
        return ModelReply(
            text=json.dumps(answer),
            provider=reply.provider,
            model=reply.model,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
        )


@dataclass
class Audited:
    workflow_id: str
    events: list[dict[str, Any]]
    html: Path
    pdf: Path
    summary: dict[str, Any]


@dataclass
class Runs:
    review: Audited
    support: Audited
    env: dict[str, str]
    tmp: Path


@pytest.fixture(scope="module")
async def runs(dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    tmp = tmp_path_factory.mktemp("audit")
    settings = offline_settings(data_dir=tmp / "data")
    client = dev_env.client
    with SmtpSink() as sink:
        sender = EmailSender.open(settings, host="127.0.0.1", port=sink.port, sender="s@k.example")
        tools = [*SupportDesk().activities(), *sender.activities()]
        try:
            async with keel_worker(
                client, model=HostileModel(), activities=tools, settings=settings
            ) as tq:
                high = await start_review(client, tq, "high", prefix="audit")
                await wait_for_gate(high, "general-counsel", timeout=60)
                await decide(high, review("general-counsel", "reject", GC, comment=HOSTILE))
                await wait_for_gate(high, "general-counsel-2", timeout=60)
                await decide(high, review("general-counsel-2", "approve", GC, comment="fine"))
                await decide(high, review("general-counsel-2", "approve", DEPUTY, comment=HOSTILE))
                await high.result()
                support = await client.start_workflow(
                    SupportEmailWorkflow.run,
                    load_sample("support-refund"),
                    id=f"audit-support-{uuid.uuid4()}",
                    task_queue=tq,
                )
                await wait_for_gate(support, "approve-refund", timeout=60)
                changed = {"refund_usd": 60.0}
                await decide(
                    support,
                    review(
                        "approve-refund", "modify", LEAD, comment=HOSTILE, modifications=changed
                    ),
                )
                await support.result()
        finally:
            await sender.aclose()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "TEMPORAL_"))},
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "KEEL_CODEC": "off",
        "KEEL_DATA_DIR": str(tmp / "data"),  # the worker's key: trusted by the CLI
        "KEEL_REVIEWER_KEYS_FILE": os.environ["KEEL_REVIEWER_KEYS_FILE"],
    }
    audited = []
    for handle in (high, support):
        events = [e for run in await chain_runs(client, handle.id) for e in run.events]
        html, pdf = tmp / f"{handle.id}.html", tmp / f"{handle.id}.pdf"
        out = await run_keel(
            "audit", handle.id, "--out", str(html), "--pdf", str(pdf), "-o", "json",
            env=env, expect=0,
        )  # fmt: skip
        audited.append(Audited(handle.id, events, html, pdf, json.loads(out.splitlines()[-1])))
    return Runs(audited[0], audited[1], env, tmp)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs it", pytrace=False)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def opened(browser: Browser, path: Path) -> Page:
    """The dossier in Chromium with scripts enabled: if anything ran, it would show."""
    context = await browser.new_context(viewport={"width": 1280, "height": 1400})
    page = await context.new_page()
    page.set_default_timeout(20_000)
    await page.goto(path.resolve().as_uri())
    return page


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


async def answer(page: Page, seq: int, question: str) -> str:
    return await page.inner_text(f"#decision-{seq} [data-question={question}] td")


async def assert_provenance(page: Page, decided: dict[str, Any]) -> None:
    """Contract version, model, prompt hash, raw answer, confidence: the event's own."""
    seq = decided["seq"]
    contract = await answer(page, seq, "contract")
    assert decided["contract"] in contract and decided["contract_fingerprint"] in contract
    model = await answer(page, seq, "model")
    assert f"{decided['provider']}/{decided['model']}" in model
    prompt = await answer(page, seq, "prompt")
    assert decided["prompt_sha256"] in prompt and "the hash matches" in prompt
    raw = await answer(page, seq, "raw")
    assert f"{len(decided['raw_response'])} characters" in raw
    assert await page.inner_text(f"#decision-{seq} .raw pre") == decided["raw_response"]
    threshold = REGISTRY.get(decided["contract"]).confidence_threshold
    confidence = await answer(page, seq, "confidence")
    assert f"{decided['confidence']:g}" in confidence and f"threshold {threshold:g}" in confidence


async def test_each_contract_review_decision_answers_the_ten_questions(
    runs: Runs, browser: Browser
) -> None:
    events = runs.review.events
    page = await opened(browser, runs.review.html)
    first, second = of_type(events, "AgentDecided")
    rejected, approved = of_type(events, "GateDecided")
    routed = of_type(events, "Routed")
    for decided in (first, second):
        await assert_provenance(page, decided)
    # The rejected first answer: who, when, what changed, which rule.
    assert (rejected["decision"], rejected["reviewer"]) == ("reject", GC)
    assert f"rejected by {rejected['reviewer']}" in await answer(page, first["seq"], "approver")
    assert rejected["at"].replace("Z", "+00:00") in await answer(page, first["seq"], "when")
    rolled = of_type(events, "RolledBack")[0]
    assert rolled["checkpoint"] in await answer(page, first["seq"], "changed")
    rule = await answer(page, first["seq"], "rule")
    assert f"{routed[0]['rule']} -> {routed[0]['route']}" in rule
    # The re-invoked answer: the reviewer's comment is why it was asked again.
    retries = await answer(page, second["seq"], "retries")
    assert second["feedback"] and all(escape(f) in retries for f in second["feedback"])
    assert "of the node's run 2" in retries
    approvers = await answer(page, second["seq"], "approver")
    assert approved["approvers"] == [GC, DEPUTY]
    assert all(name in approvers for name in approved["approvers"])
    assert approved["at"].replace("Z", "+00:00") in await answer(page, second["seq"], "when")
    assert (await answer(page, second["seq"], "changed")).startswith("nothing")
    assert f"{routed[1]['rule']} -> {routed[1]['route']}" in await answer(
        page, second["seq"], "rule"
    )
    await page.context.close()


async def test_each_support_decision_answers_the_ten_questions(
    runs: Runs, browser: Browser
) -> None:
    events = runs.support.events
    page = await opened(browser, runs.support.html)
    triage, bad_draft, repaired = of_type(events, "AgentDecided")
    for decided in (triage, bad_draft, repaired):
        await assert_provenance(page, decided)
    assert (await answer(page, triage["seq"], "approver")).startswith("no person")
    failed = of_type(events, "ValidationFailed")[0]
    retries = await answer(page, bad_draft["seq"], "retries")
    assert "retried as attempt 2" in retries and all(r in retries for r in failed["reasons"])
    repair = await answer(page, repaired["seq"], "retries")
    assert repaired["feedback"] and all(f in repair for f in repaired["feedback"])
    (modified,) = of_type(events, "GateDecided")
    assert modified["reviewer"] == LEAD
    assert LEAD in await answer(page, repaired["seq"], "approver")
    assert modified["at"].replace("Z", "+00:00") in await answer(page, repaired["seq"], "when")
    [(field, value)] = modified["modifications"].items()
    changed = await answer(page, repaired["seq"], "changed")
    assert f"{field}: {repaired['output'][field]} -> {value}" in changed
    # The gate: the authenticated reviewer, the verified signature, the diff.
    gate = page.locator(f"[data-gate='{modified['gate']}']")
    row = gate.locator(f"tr[data-seq='{modified['seq']}']")
    assert LEAD in await row.locator(".reviewer").inner_text()
    assert await row.locator(".signature").get_attribute("data-state") == "verified"
    assert modified["key_id"] in await row.locator(".signature").inner_text()
    assert modified["auth"]["method"] in await row.inner_text()
    # The effect and its receipt.
    (sent,) = of_type(events, "TaskCompleted")
    effects = await page.inner_text("#effects + table")
    assert sent["effect"]["idempotency_key"] in effects and sent["effect"]["provider_id"] in effects
    await page.context.close()


async def test_the_dossier_shows_the_verification_and_every_event(
    runs: Runs, browser: Browser
) -> None:
    for audited in (runs.review, runs.support):
        assert audited.summary["verified"] and audited.summary["html"] == str(audited.html)
        page = await opened(browser, audited.html)
        assert await page.get_attribute("#verification", "data-state") == "verified"
        headline = await page.inner_text("#verification .headline")
        signed = len(of_type(audited.events, "ChainHeadSigned"))
        decisions = sum(len(of_type(audited.events, t)) for t in ("GateDecided", "GateApproved"))
        assert f"{signed} signed heads and {decisions} reviewer signatures hold" in headline
        seqs = await page.locator("#timeline + table tbody tr").evaluate_all(
            "rows => rows.map(r => Number(r.dataset.seq))"
        )
        assert seqs == [e["seq"] for e in audited.events]
        await page.context.close()


async def test_hostile_strings_render_as_text(runs: Runs, browser: Browser) -> None:
    for audited in (runs.review, runs.support):
        page = await opened(browser, audited.html)
        assert await page.title() == f"Audit dossier: {audited.workflow_id}"
        assert await page.locator("script, img, iframe, object, embed").count() == 0
        handlers = await page.evaluate(
            "[...document.querySelectorAll('*')].flatMap(e => [...e.attributes])"
            ".filter(a => a.name.startsWith('on')).length"
        )
        assert handlers == 0
        text = await page.inner_text("body")
        assert escape(HOSTILE) in text and "\u202e" not in text  # shown, not obeyed
        await page.context.close()
    comments = (
        await (await opened(browser, runs.review.html)).locator("td.comment").all_inner_texts()
    )
    assert comments.count(escape(HOSTILE)) == 2


async def test_the_pdf_is_a_pdf_with_pages(runs: Runs) -> None:
    for audited in (runs.review, runs.support):
        assert audited.summary["pdf"] == str(audited.pdf)
        data = audited.pdf.read_bytes()
        assert data.startswith(b"%PDF-")
        assert len(re.findall(rb"/Type\s*/Page[^s]", data)) >= 2


async def test_a_ledger_the_keys_do_not_vouch_for_gets_a_loud_dossier_and_exit_1(
    runs: Runs, browser: Browser
) -> None:
    other = write_keyring(runs.tmp / "other-keys.json", SigningKey.generate())
    html = runs.tmp / "untrusted.html"
    out = await run_keel(
        "audit", runs.review.workflow_id, "--out", str(html), "--keys", str(other), "--no-pdf",
        env=runs.env, expect=1,
    )  # fmt: skip
    first_head = of_type(runs.review.events, "ChainHeadSigned")[0]
    assert f"ledger broken at event {first_head['seq']}: " in out and "not a trusted key" in out
    page = await opened(browser, html)
    assert await page.get_attribute("#verification", "data-state") == "broken"
    assert f"LEDGER BROKEN at event #{first_head['seq']}" in await page.inner_text("#verification")
    row = page.locator(f"#timeline + table tr[data-seq='{first_head['seq']}']")
    assert await row.get_attribute("class") == "broken"
    # No signature holds against those keys: every other event is shaded as unvouched.
    assert await page.locator("#timeline + table tr.after").count() == len(runs.review.events) - 1
    assert await page.locator(".decision .warning, .gate .warning").count() == 4
    await page.context.close()


async def test_without_chromium_the_html_is_written_and_the_pdf_named_missing(
    runs: Runs,
) -> None:
    (runs.tmp / "empty").mkdir(exist_ok=True)
    no_browser = {
        **runs.env,
        "PATH": str(runs.tmp / "empty"),
        "PLAYWRIGHT_BROWSERS_PATH": str(runs.tmp / "no-browsers"),
    }
    html = runs.tmp / "no-chromium.html"
    out = await run_keel(
        "audit", runs.support.workflow_id, "--out", str(html), "-o", "json",
        env=no_browser, expect=0,
    )  # fmt: skip
    summary = json.loads(out.splitlines()[-1])
    assert summary["html"] == str(html) and summary["pdf"] is None and summary["verified"]
    assert "the PDF needs Chromium" in summary["pdf_error"]
    assert runs.support.workflow_id in html.read_text()
    assert not html.with_suffix(".pdf").exists()
    asked = await run_keel(
        "audit", runs.support.workflow_id, "--out", str(html), "--pdf", str(runs.tmp / "x.pdf"),
        env=no_browser, expect=1,
    )  # fmt: skip
    assert "PDF not written: the PDF needs Chromium" in asked
