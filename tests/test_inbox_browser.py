"""The inbox in a real browser (headless Chromium): sign in, see a gate a running workflow
opened, approve it with changes, see the ledger record it; a reviewer without the gate's
role sees nothing and cannot decide it, not even by posting directly; logout; a form
posted without its CSRF token is refused."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from temporalio.testing import WorkflowEnvironment

from keel.contracts.ledger import GateDecided
from keel.inbox.server import _uvicorn
from keel.testing import ledger_of, wait_for_gate
from tests.inbox_fixtures import PASSWORD, Inbox, running_inbox
from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.timeout(180)
GATE = "standard-review"
SCREENSHOT = Path("/tmp/keel-inbox-gate.png")
"""Where the gate page's screenshot goes (docs/images/inbox-gate.png is a copy of one)."""


@pytest.fixture(scope="module")
async def served(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Inbox, str]]:
    data_dir = tmp_path_factory.mktemp("inbox")
    async with (
        running_inbox(dev_env.client, data_dir) as inbox,
        _uvicorn(inbox.app, "127.0.0.1", 0) as port,
    ):
        yield inbox, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def signed_in(browser: Browser, url: str, subject: str) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 1500})
    page = await context.new_page()
    page.set_default_timeout(20_000)
    await page.goto(f"{url}/")
    await expect(page).to_have_url(re.compile(r"/login"))
    await page.fill("input[name=subject]", subject)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button:has-text('Sign in')")
    await expect(page.locator("header .who")).to_contain_text(subject)
    return page


async def test_a_reviewer_approves_with_changes_and_sees_the_ledger(
    served: tuple[Inbox, str], browser: Browser
) -> None:
    inbox, url = served
    handle = await inbox.contract_review()
    await wait_for_gate(handle, GATE)
    page = await signed_in(browser, url, "legal.priya")
    await page.reload()
    await page.click(f"tr:has-text('{handle.id}') a")
    await expect(page.locator("h1")).to_contain_text("Standard legal review")
    await expect(page.locator("#verification")).to_contain_text("Chain verified")
    await expect(page.locator("#approvals")).to_have_text("0 of 1")
    await expect(page.locator("time.countdown").first).to_contain_text(re.compile(r"in \d+h"))
    await expect(page.get_by_text("What the agent proposed")).to_be_visible()
    await page.screenshot(path=str(SCREENSHOT), full_page=False)
    changes = {"conditions": ["DPA signed before go-live"]}
    await page.fill("#modify-form textarea[name=modifications]", '{"risk": "low"}')
    await page.click("#modify-form button")
    await expect(page.locator("#problems")).to_contain_text("'risk' was unexpected")  # not sent
    await page.fill("#modify-form textarea[name=modifications]", json.dumps(changes))
    await page.click("#modify-form button")
    await expect(page.locator("#done")).to_contain_text("Sent: modify")
    await expect(page.locator("#decided")).to_contain_text("legal.priya")
    await expect(page.locator("#timeline")).to_contain_text("GateDecided")
    decided = [e for e in await ledger_of(handle) if isinstance(e, GateDecided)]
    assert [(d.reviewer, d.modifications) for d in decided] == [("legal.priya", changes)]
    await page.click("button:has-text('Sign out')")
    await expect(page).to_have_url(re.compile(r"/login"))
    await page.goto(f"{url}/gates/{handle.id}/{GATE}")
    await expect(page).to_have_url(re.compile(r"/login\?next="))


async def test_a_reviewer_without_the_role_sees_nothing_and_cannot_decide(
    served: tuple[Inbox, str], browser: Browser
) -> None:
    inbox, url = served
    handle = await inbox.contract_review()
    await wait_for_gate(handle, GATE)
    page = await signed_in(browser, url, "support.agent.ana")
    await expect(page.locator("main")).not_to_contain_text(handle.id)
    csrf = await page.locator("header input[name=csrf]").get_attribute("value")
    answer = await page.goto(f"{url}/gates/{handle.id}/{GATE}")
    assert answer is not None and answer.status == 404
    posted = await page.request.post(
        f"{url}/gates/{handle.id}/{GATE}",
        form={"csrf": csrf or "", "action": "approve", "nonce": "n" * 20},
    )
    assert posted.status == 404
    assert not [e for e in await ledger_of(handle) if isinstance(e, GateDecided)]


async def test_a_form_posted_without_its_csrf_token_is_refused(
    served: tuple[Inbox, str],
) -> None:
    inbox, url = served
    handle = await inbox.contract_review()
    await wait_for_gate(handle, GATE)
    async with httpx.AsyncClient(base_url=url) as http:
        login = await http.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert csrf is not None
        no_token = await http.post("/login", data={"subject": "legal.priya", "password": PASSWORD})
        assert no_token.status_code == 403
        signed = await http.post(
            "/login",
            data={
                "csrf": csrf[1],
                "subject": "legal.priya",
                "password": PASSWORD,
                "next": "//evil.example/phish",
            },
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == "/"  # no open redirect after sign-in
        forged = await http.post(f"/gates/{handle.id}/{GATE}", data={"action": "approve"})
        assert forged.status_code == 403
        stale = await http.post(
            f"/gates/{handle.id}/{GATE}", data={"action": "approve", "csrf": csrf[1]}
        )
        assert stale.status_code == 403  # the token of the session before sign-in
    assert not [e for e in await ledger_of(handle) if isinstance(e, GateDecided)]


async def test_a_signed_notification_link_opens_the_gate_after_sign_in(
    served: tuple[Inbox, str],
) -> None:
    from datetime import UTC, datetime, timedelta

    from keel.contracts.links import inbox_link

    inbox, url = served
    handle = await inbox.contract_review()
    await wait_for_gate(handle, GATE)
    assert inbox.ctx.link_key is not None
    link = inbox_link(
        url, handle.id, GATE, inbox.ctx.link_key, expires=datetime.now(UTC) + timedelta(hours=1)
    )
    async with httpx.AsyncClient() as http:
        first = await http.get(link)
        assert first.status_code == 303 and "/login?next=" in first.headers["location"]
        login = await http.get(f"{url}/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert csrf is not None
        next_target = first.headers["location"].split("next=", 1)[1]
        signed = await http.post(
            f"{url}/login",
            data={
                "csrf": csrf[1],
                "subject": "legal.sam",
                "password": PASSWORD,
                "next": urllib.parse.unquote(next_target),
            },
        )
        assert signed.status_code == 303
        page = await http.get(f"{url}{signed.headers['location']}")
        assert page.status_code == 200
        assert "Opened from a notification Keel sent." in page.text
        altered = await http.get(link.replace("sig=", "sig=A"))
        assert "This link is not valid" in altered.text
