"""The dossier as a PDF: the HTML file printed by Chromium (Playwright's ``page.pdf()``),
with the print stylesheet, the workflow id and page numbers in every page's footer.

Chromium is looked for where Playwright installed its own (``playwright install
chromium``), then on the PATH (``chromium``, ``chromium-browser``, ``google-chrome``).
The page is opened from its file with JavaScript off and every network request refused:
the dossier needs neither.
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Route

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PRINT_TIMEOUT_MS = 120_000
"""How long Chromium may take to print a dossier (a huge ledger's is thousands of pages)."""


class PdfUnavailable(Exception):
    """The PDF cannot be made here; the message says what to install."""


async def write_pdf(html_path: Path, pdf_path: Path, *, title: str) -> int:
    """Print the dossier at ``html_path`` to ``pdf_path``; returns the PDF's size in bytes.

    Raises:
        PdfUnavailable: Playwright or Chromium is missing, or Chromium failed to print.
    """
    try:
        from playwright.async_api import Error, async_playwright
    except ImportError as exc:
        raise PdfUnavailable(
            "the PDF needs Playwright and Chromium: pip install playwright, then playwright "
            "install chromium (or install a chromium package)"
        ) from exc
    try:
        async with async_playwright() as playwright:
            executable = _chromium(playwright.chromium.executable_path)
            browser = await playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS
            )
            try:
                context = await browser.new_context(java_script_enabled=False, offline=True)
                page = await context.new_page()
                await page.route("**/*", _only_the_file(html_path))
                await page.goto(html_path.resolve().as_uri(), timeout=PRINT_TIMEOUT_MS)
                await page.pdf(
                    path=str(pdf_path),
                    format="A4",
                    print_background=True,
                    display_header_footer=True,
                    header_template="<span></span>",
                    footer_template=_footer(title),
                    margin={"top": "14mm", "bottom": "16mm", "left": "11mm", "right": "11mm"},
                )
            finally:
                await browser.close()
    except Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PdfUnavailable(f"Chromium could not print the dossier: {first[:300]}") from exc
    return pdf_path.stat().st_size


def _chromium(bundled: str) -> str:
    if bundled and Path(bundled).is_file():
        return bundled
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise PdfUnavailable(
        "the PDF needs Chromium: run playwright install chromium, or install a chromium "
        "package (looked for " + ", ".join(BROWSERS) + " on the PATH)"
    )


def _only_the_file(html_path: Path) -> Callable[[Route], Awaitable[None]]:
    """A route handler that lets Chromium load the dossier's own file and nothing else."""
    allowed = html_path.resolve().as_uri()

    async def handle(route: Route) -> None:
        if route.request.url == allowed:
            await route.continue_()
        else:
            await route.abort()

    return handle


def _footer(title: str) -> str:
    """Chromium's footer template: the workflow id (escaped: it is the ledger's), page n of m."""
    return (
        '<div style="font: 8px system-ui, sans-serif; color: #667085; width: 100%; '
        'padding: 0 11mm; display: flex; justify-content: space-between;">'
        f"<span>Keel audit dossier: {html.escape(title)}</span>"
        '<span><span class="pageNumber"></span> of <span class="totalPages"></span></span></div>'
    )
