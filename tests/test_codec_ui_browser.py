"""The UI of ``keel dev`` shows encrypted history decoded, through the codec server ``keel dev``
starts, in a real browser (headless Chromium, as ``test_ui_browser``)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from keel.scenarios.contract_review import ContractReviewWorkflow
from keel.workers.codec import ENCODING
from keel.workers.runtime import connect
from tests.conftest import BIN, REVIEW_ENV, free_port, offline_settings
from tests.samples import load_sample
from tests.test_ui_browser import SHOTS, WAIT_MS, browser, new_page

__all__ = ["browser"]  # the module's fixture, shared with test_ui_browser

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class DevStack:
    def __init__(self, tmp: Path) -> None:
        self.ui = f"http://127.0.0.1:{free_port()}"
        self.address = f"127.0.0.1:{free_port()}"
        self.data = tmp / "data"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "TEMPORAL_"))},
            "TEMPORAL_ADDRESS": self.address,
            "KEEL_UI_PORT": self.ui.rsplit(":", 1)[1],
            "KEEL_UI_URL": self.ui,
            **REVIEW_ENV,  # the test kit signs the reviews these processes take
            "KEEL_DATA_DIR": str(self.data),
            "KEEL_MODEL": "offline",
            "KEEL_SMTP_PORT": str(free_port()),
        }


@pytest.fixture
async def dev_stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    stack = DevStack(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "keel"),
        "dev",
        env=stack.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            while b"keel dev:" not in (line := await proc.stdout.readline()):
                assert line, "keel dev exited before it was ready"
        yield stack
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), timeout=60)


async def test_the_dev_ui_shows_encrypted_history_decoded(
    dev_stack: DevStack, browser: Browser
) -> None:
    # A client beside `keel dev` (same data dir): it encrypts with the generated dev key.
    client = await connect(
        offline_settings(codec="on", data_dir=dev_stack.data), address=dev_stack.address
    )
    contract = load_sample("contract-low-risk")
    handle = await client.start_workflow(
        ContractReviewWorkflow.run,
        contract,
        id=f"ui-encrypted-{uuid.uuid4().hex[:8]}",
        task_queue="keel",
    )
    async with asyncio.timeout(60):
        await handle.result()
    history = json.loads((await handle.fetch_history()).to_json())
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    stored = started["input"]["payloads"][0]
    assert base64.b64decode(stored["metadata"]["encoding"]) == ENCODING  # encrypted at rest
    assert contract["vendor"] not in json.dumps(history)

    async with new_page(browser) as page:
        run = f"{handle.id}/{handle.result_run_id}"
        url = f"{dev_stack.ui}/namespaces/default/workflows/{run}/history"
        await page.goto(url)
        try:
            # The input, as the UI decodes it through the codec server: the vendor's name.
            found = page.get_by_text(contract["vendor"], exact=False).filter(visible=True).first
            await expect(found).to_be_visible(timeout=WAIT_MS)
        finally:
            await page.screenshot(path=str(SHOTS / "keel-ui-codec.png"), full_page=True)
