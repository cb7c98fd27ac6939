"""The categorizer's offline rule (keywords, not an LLM): what runs on ``KEEL_MODEL=offline``
and in tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

KEYWORDS = {
    "travel": ("airline", "flight", "hotel", "taxi", "train", "rail"),
    "meals": ("restaurant", "lunch", "dinner", "breakfast", "cafe", "catering"),
    "equipment": ("laptop", "monitor", "keyboard", "chair", "headset"),
    "software": ("license", "subscription", "saas", "software"),
}


def categorize_expense(node_input: Mapping[str, Any], feedback: Sequence[str]) -> dict[str, Any]:
    """The first category whose keywords appear in the merchant or description."""
    text = f"{node_input.get('merchant', '')} {node_input.get('description', '')}".lower()
    hits = [name for name, words in KEYWORDS.items() if any(w in text for w in words)]
    if not hits:
        return {"category": "other", "confidence": 0.75}
    return {"category": hits[0], "confidence": 0.95 if len(hits) == 1 else 0.8}
