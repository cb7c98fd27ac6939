"""The audit dossier (``keel audit``): one execution's ledger as a page an auditor reads.

``facts`` turns a verified ledger (events as stored, with the verification report) into the
dossier's facts: each agent decision with the ten answers an auditor asks for (contract
version, model, prompt hash, raw answer, confidence, retries and why, who approved, when,
what changed, which rule routed), each gate with its signed decisions, the effects with
their receipts, the routing rules and the timeline. ``page`` renders them as one
self-contained HTML file (autoescaped, inline CSS, no script, no external resource);
``pdf`` prints that file with Chromium. Pure but for ``pdf``.
"""

from keel.cli.dossier.facts import Dossier, build_dossier
from keel.cli.dossier.page import render_html
from keel.cli.dossier.pdf import PdfUnavailable, write_pdf

__all__ = ["Dossier", "PdfUnavailable", "build_dossier", "render_html", "write_pdf"]
