"""The lookup tool: a supplier's website, read from the local fixture pages.

It stands in for a crawler, so it behaves like one: most pages come back at once, some
sites are slow (a page's ``fetch_seconds``), and while it waits the activity heartbeats, so
a worker that dies mid-lookup is noticed after ``LOOKUP_HEARTBEAT_TIMEOUT`` instead of the
whole start-to-close timeout. A read has no effect: a retried lookup is harmless.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity

from keel.scenarios.ingestion.contracts import Lookup, SupplierPage
from keel.scenarios.ingestion.fixtures import PAGES

LOOKUP_PAGE = "keel.ingestion.lookup_supplier_page"
LOOKUP_HEARTBEAT_TIMEOUT = timedelta(seconds=5)
HEARTBEAT_EVERY_SECONDS = 1.0


class SupplierPages:
    """Pages from ``pages`` (default: the scenario's ``samples/pages``), one JSON per domain."""

    def __init__(self, pages: Path = PAGES) -> None:
        self.pages = pages

    def activities(self) -> list[Any]:
        """The tool's activities, to register on a worker."""
        return [self.lookup_page]

    @activity.defn(name=LOOKUP_PAGE)
    async def lookup_page(self, query: Lookup) -> SupplierPage | None:
        """The supplier's page, or None when the site has none."""
        path = self.pages / f"{query.domain}.json"
        if path.parent != self.pages or not path.is_file():
            return None
        raw = json.loads(path.read_text())
        await _slow_site(float(raw.pop("fetch_seconds", 0)), query)
        return SupplierPage.model_validate(raw)


async def _slow_site(seconds: float, query: Lookup) -> None:
    """Wait like a slow site does, heartbeating."""
    waited = 0.0
    while waited < seconds:
        activity.heartbeat(f"{query.record_id}: waiting for {query.domain} ({waited:.0f}s)")
        step = min(HEARTBEAT_EVERY_SECONDS, seconds - waited)
        await asyncio.sleep(step)
        waited += step
