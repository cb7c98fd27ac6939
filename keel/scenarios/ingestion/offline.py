"""Offline (rule-based, not an LLM) answers for the enrichment contract."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keel.scenarios.ingestion.fixtures import trade_of


def enrich_supplier(node_input: Mapping[str, Any], feedback: Sequence[str]) -> dict[str, Any]:
    """Keywords of the page (or the record's raw category) decide the category."""
    record = node_input.get("record") or {}
    page = node_input.get("page")
    words = [*(page or {}).get("keywords", []), str(record.get("raw_category", ""))]
    category = trade_of(words, str(record.get("name", "")))
    employees = (page or {}).get("employees")
    size = (
        "unknown"
        if not isinstance(employees, int)
        else "small"
        if employees < 50
        else "medium"
        if employees < 500
        else "large"
    )
    country = record.get("country") or (page or {}).get("country")
    certified = any("ISO" in c for c in (page or {}).get("certifications", []))
    where = f"in {country}" if country else "country unknown"
    seen = "from its page" if page else "from the record alone (no page found)"
    return {
        "category": category,
        "country": country,
        "size": size,
        "certified": certified,
        "summary": f"Offline rules (not an LLM): {category} supplier, {where}, {seen}.",
        "confidence": 0.9 if page else (0.7 if category != "other" else 0.62),
    }
