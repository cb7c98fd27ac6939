"""The Temporal UI shows readable Keel histories, checked in a real browser.

A dev server with its UI (2.54) runs for this module; Keel workers run a contract review
left waiting at its gate and an incident whose scripted plan fans out to two tool-task
children. Headless Chromium (Debian's package; ``make test`` installs it) then opens the
pages a reviewer would open and looks for, by visible text:

* the agent node's activity summary in the event history (``classify-risk: ...``),
* the review's current details on the *User Metadata* tab (``Waiting at gate ...``),
* the children's static summaries in the parent's history and timeline, the children in
  the *Relationships* tab, and a child's summary on its own page.

One screenshot of each page is saved to ``/tmp/keel-ui-*.png``.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from keel.cli.commands import start
from keel.contracts.names import SEARCH_ATTRIBUTES
from keel.workers.devstack import DEV_SERVER_STARTUP
from tests.conftest import free_port, keel_worker, offline_settings
from tests.helpers import wait_for_gate
from tests.samples import entry, load_sample
from tests.standins import ScriptedPlanner, StandInTools, plan, task

pytestmark = pytest.mark.timeout(120)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
SHOTS = Path("/tmp")
WAIT_MS = 20_000
"""How long to wait for text: the UI fetches history and queries asynchronously."""


@dataclass
class TemporalUI:
    env: WorkflowEnvironment
    url: str

    async def history_url(self, handle: WorkflowHandle[Any, Any]) -> str:
        """The link ``keel`` prints (keel/workers/render.py): the run's history page."""
        run_id = (await handle.describe()).run_id
        return f"{self.url}/namespaces/default/workflows/{handle.id}/{run_id}/history"


@pytest.fixture(scope="module")
async def temporal_ui() -> AsyncIterator[TemporalUI]:
    """A dev server of our own, with its web UI on a free port."""
    ui_port = free_port()
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        ui=True,
        ui_port=ui_port,
        port=free_port(),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    try:
        url = f"http://127.0.0.1:{ui_port}"
        await _until_up(url)
        yield TemporalUI(env, url)
    finally:
        await env.shutdown()


async def _until_up(url: str, timeout: float = 20) -> None:
    """Wait until the UI answers (the server's gRPC port can be up before it)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await asyncio.to_thread(_get, url)
                return
            except OSError:
                await asyncio.sleep(0.2)


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=2):
        pass


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium package. "
            "`make test` installs it (or run `apt-get install -y chromium`).",
            pytrace=False,
        )
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@asynccontextmanager
async def new_page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1920, "height": 1200})
    try:
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        yield page
    finally:
        await context.close()


async def shown(page: Page, name: str, check: Callable[[], Awaitable[None]]) -> None:
    """Run ``check`` on the page, then save what the user sees (also when the check fails)."""
    try:
        await check()
    finally:
        await page.screenshot(path=str(SHOTS / f"keel-ui-{name}.png"), full_page=True)


async def see(page: Page, text: str) -> Locator:
    """A visible element whose whole text is ``text``, scrolled into view so that the
    screenshot shows it."""
    found = page.get_by_text(text, exact=True).filter(visible=True).first
    await expect(found).to_be_visible(timeout=WAIT_MS)
    await found.scroll_into_view_if_needed()
    return found


async def open_tab(page: Page, name: str) -> None:
    await page.get_by_role("tab", name=name).click()
    await expect(page.get_by_role("tab", name=name)).to_have_attribute("aria-selected", "true")


async def user_metadata(page: Page, card: str) -> str:
    """The text of a *User Metadata* card (``summary`` or ``current-details``): Markdown the
    UI renders in an iframe. Current details are answered by a running worker."""
    await open_tab(page, "User Metadata")
    body = page.frame_locator(f"#user-metadata-{card}").locator("body")
    await expect(body).not_to_be_empty(timeout=WAIT_MS)
    return " ".join((await body.inner_text()).split())


async def test_waiting_review_reads_in_the_ui(temporal_ui: TemporalUI, browser: Browser) -> None:
    client = temporal_ui.env.client
    async with keel_worker(client) as task_queue, new_page(browser) as page:
        handle = await start(
            client,
            offline_settings(),
            entry("contract-review"),
            load_sample("contract-medium-risk"),
            workflow_id=f"ui-review-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        await wait_for_gate(handle, "standard-review")
        await page.goto(await temporal_ui.history_url(handle))

        async def history() -> None:
            await see(page, handle.id)
            await see(page, "classify-risk: risk-classifier@1, try 1 of 3")

        await shown(page, "review-history", history)

        async def details() -> None:
            # Markdown is rendered: the gate's name in bold, not between asterisks.
            await expect(
                page.frame_locator("#user-metadata-current-details").locator("strong")
            ).to_have_text("standard-review", timeout=WAIT_MS)
            # The static summary `keel start` gives every workflow: "<scenario>: <title>".
            summary = await user_metadata(page, "summary")
            assert summary == "contract-review: Payroll processing outsourcing", summary
            text = await user_metadata(page, "current-details")
            assert text.startswith("Waiting at gate standard-review: Standard legal review"), text
            assert (
                "State awaiting_approval, for legal.priya, legal.sam, role legal; deadline" in text
            ), text
            assert "*" not in text and "`" not in text, text

        await open_tab(page, "User Metadata")
        await shown(page, "review-current-details", details)
        await handle.terminate("browser test done")


SERVICE_TASKS = (
    {**task("metrics", "metrics_lookup"), "purpose": "p99 latency of checkout-api, last hour"},
    {**task("deploys", "deploy_history"), "purpose": "deploys of checkout-api, last 24 h"},
)
CHILD_SUMMARIES = {
    "metrics": "metrics_lookup: p99 latency of checkout-api, last hour",
    "deploys": "deploy_history: deploys of checkout-api, last 24 h",
}


async def test_incident_children_read_in_the_ui(temporal_ui: TemporalUI, browser: Browser) -> None:
    client = temporal_ui.env.client
    planner = ScriptedPlanner(plan(*SERVICE_TASKS), plan(done=True, summary="mitigated"))
    tools = StandInTools()
    async with (
        keel_worker(client, provider=planner, tools=tools.activities()) as task_queue,
        new_page(browser) as page,
    ):
        handle = await start(
            client,
            offline_settings(),
            entry("incident"),
            load_sample("incident-page"),
            workflow_id=f"ui-incident-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        assert (await handle.result())["outcome"] == "mitigated"  # started by type: JSON
        await page.goto(await temporal_ui.history_url(handle))

        async def history() -> None:
            await see(page, "plan: incident-planner@1, try 1 of 2")
            for summary in CHILD_SUMMARIES.values():
                await see(page, summary)

        await shown(page, "incident-history", history)

        async def timeline() -> None:
            # Activities are labelled "<activity type> • <summary>", children by their summary.
            await see(page, "keel.agent_node • plan: incident-planner@1, try 1 of 2")
            for summary in CHILD_SUMMARIES.values():
                await see(page, summary)

        await open_tab(page, "Timeline")
        await shown(page, "incident-timeline", timeline)

        async def details() -> None:
            assert await user_metadata(page, "summary") == "incident: CheckoutP99LatencyHigh"
            assert (
                await user_metadata(page, "current-details")
                == "Finished: mitigated after 2 round(s)"
            )

        await shown(page, "incident-current-details", details)

        children = {ref: f"{handle.id}/r1/{ref}" for ref in CHILD_SUMMARIES}

        async def relationships() -> None:
            for child_id in children.values():
                await see(page, child_id)
            await expect(page.get_by_text("KeelToolTask", exact=True)).to_have_count(2)

        await open_tab(page, "Relationships")
        await shown(page, "incident-relationships", relationships)

        async def child() -> None:
            assert await user_metadata(page, "summary") == CHILD_SUMMARIES["metrics"]
            text = await user_metadata(page, "current-details")
            assert text == "Done: metrics_lookup for task metrics", text  # a finished child says so

        await page.get_by_role("link", name=children["metrics"], exact=True).click()
        await expect(page.get_by_test_id("workflow-id-heading")).to_contain_text(
            children["metrics"], timeout=WAIT_MS
        )
        await open_tab(page, "User Metadata")
        await shown(page, "tool-task-child", child)
