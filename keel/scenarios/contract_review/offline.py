"""The offline (rule-based, not an LLM) risk classifier of the contract review app."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

# (label, pattern, weight): evidence of risk in clause text. Negative weights mitigate.
_RISK_SIGNALS: tuple[tuple[str, str, float], ...] = (
    ("uncapped liability", r"unlimited liability|uncapped|without (any )?limit", 3.0),
    ("broad indemnity", r"indemnif\w* .{0,80}(any and all|all claims|regardless)", 2.0),
    ("indemnity", r"indemnif", 0.5),
    ("IP assignment", r"assigns? (to .{0,40})?all (right|intellectual property)", 2.0),
    ("exclusivity", r"exclusiv", 1.5),
    ("no termination right", r"may not terminate|no right to terminate|non-cancell?able", 2.0),
    ("liquidated damages", r"liquidated damages|penalt(y|ies)", 1.5),
    ("personal data", r"personal data|personally identifiable|\bPII\b|health data", 1.5),
    ("automatic renewal", r"automatic(ally)? renew|auto-renew", 1.0),
    ("liability cap", r"liability .{0,40}(capped|limited) (to|at)", -1.0),
)
_HOME_JURISDICTIONS = ("delaware", "new york", "california", "england and wales")
_CLAUSE_MENTION = re.compile(r"\b(?:clause|section|§)\s*([0-9]+(?:\.[0-9]+)*)", re.IGNORECASE)


def classify_contract_risk(
    node_input: Mapping[str, Any], feedback: Sequence[str]
) -> dict[str, Any]:
    """Score risk signals in the clauses, the deal size and governing law."""
    score = 0.0
    findings: list[str] = []
    refs: list[str] = []
    for clause in node_input.get("clauses", []):
        text = f"{clause.get('heading', '')} {clause.get('text', '')}"
        for label, pattern, weight in _RISK_SIGNALS:
            if re.search(pattern, text, re.IGNORECASE):
                score += weight
                findings.append(f"{label} (clause {clause['id']})")
                if weight > 0 and clause["id"] not in refs:
                    refs.append(clause["id"])
    value = float(node_input.get("annual_value_usd", 0))
    if value >= 1_000_000:
        score, findings = score + 2.0, [*findings, f"annual value ${value:,.0f} >= $1M"]
    elif value >= 250_000:
        score, findings = score + 1.0, [*findings, f"annual value ${value:,.0f} >= $250k"]
    if int(node_input.get("term_months", 0)) > 36:
        score, findings = score + 1.0, [*findings, "term over 36 months"]
    jurisdiction = str(node_input.get("jurisdiction", "")).lower()
    if not any(home in jurisdiction for home in _HOME_JURISDICTIONS):
        score, findings = score + 1.0, [*findings, f"governing law {jurisdiction!r}"]

    # Reviewer feedback is evidence too: named clauses are cited, named risks weigh in.
    known_ids = {str(c["id"]) for c in node_input.get("clauses", [])}
    for item in feedback:
        for clause_id in _CLAUSE_MENTION.findall(item):
            if clause_id in known_ids and clause_id not in refs:
                refs.append(clause_id)
                findings.append(f"clause {clause_id} named in review feedback")
        for label, pattern, weight in _RISK_SIGNALS:
            if weight > 0 and re.search(pattern, item, re.IGNORECASE):
                score += weight
                findings.append(f"{label} raised in review feedback")

    level = "high" if score >= 5 else "medium" if score >= 2 else "low"
    margin = min(abs(score - 2), abs(score - 5))
    confidence = round(min(0.97, 0.62 + 0.12 * margin), 3)
    rationale = (
        f"Offline rule-based assessment (not an LLM): risk score {score:.1f} "
        f"(low < 2 <= medium < 5 <= high). Evidence: "
        + ("; ".join(findings) if findings else "no risk signals found")
        + "."
    )
    return {
        "risk_level": level,
        "clause_refs": refs,
        "rationale": rationale,
        "confidence": confidence,
    }
