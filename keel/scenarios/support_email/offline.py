"""Offline (rule-based, not an LLM) answers for the support contracts."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_ORDER = re.compile(r"\b([A-Z]{2}-\d{6})\b")
_INTENTS = (
    ("refund", r"refund|money back|return (it|this)|reimburse"),
    ("order_status", r"where is|tracking|not (yet )?arrived|status|delivery date"),
    ("complaint", r"unacceptable|terrible|disappointed|angry|worst"),
)
_HIGH_RISK = r"lawyer|legal action|chargeback|fraud|sue\b"


def triage_email(node_input: Mapping[str, Any], feedback: Sequence[str]) -> dict[str, Any]:
    """Keyword rules over subject and body."""
    text = f"{node_input.get('subject', '')}\n{node_input.get('body', '')}"
    matches = [name for name, pattern in _INTENTS if re.search(pattern, text, re.IGNORECASE)]
    intent = matches[0] if matches else "other"
    order = _ORDER.search(text)
    risk = (
        "high"
        if re.search(_HIGH_RISK, text, re.IGNORECASE)
        else ("medium" if intent in ("refund", "complaint") else "low")
    )
    confidence = 0.55 + (0.2 if order else 0) + (0.15 if len(matches) == 1 else 0)
    return {
        "intent": intent,
        "risk": risk,
        "order_number": order.group(1) if order else None,
        "summary": f"Offline rules (not an LLM): {intent.replace('_', ' ')} email"
        + (f" about order {order.group(1)}" if order else "")
        + f"; matched {', '.join(matches) or 'no intent keywords'}.",
        "confidence": round(min(confidence, 0.95), 2),
    }


def draft_reply(node_input: Mapping[str, Any], feedback: Sequence[str]) -> dict[str, Any]:
    """A templated reply within the policy; feedback is acknowledged in the draft's notes."""
    triage = node_input.get("triage") or {}
    order = node_input.get("order") or {}
    policy = node_input.get("policy") or {}
    number = order.get("order_number") or triage.get("order_number")
    intent = triage.get("intent", "other")
    refund = None
    if intent == "refund" and order:
        refund = round(
            min(float(order.get("total_usd", 0)), float(policy.get("max_refund_usd", 0))), 2
        )
        body = (
            f"Hello,\n\nI'm sorry your order {number} arrived damaged. We will refund "
            f"${refund:.2f} to your original payment method within 5 business days; there is "
            "no need to send the item back.\n\nKind regards,\nCustomer Support"
        )
    elif intent == "order_status" and order:
        body = (
            f"Hello,\n\nYour order {number} is currently {order.get('status', 'being processed')}"
            ". You will get an email with tracking details as soon as it moves.\n\n"
            "Kind regards,\nCustomer Support"
        )
    else:
        body = (
            "Hello,\n\nThank you for your message. A member of our team is looking into it and "
            "will get back to you within one business day.\n\nKind regards,\nCustomer Support"
        )
    return {
        "subject": f"Re: your order {number}" if number else "Re: your message",
        "body": body,
        "order_number": number,
        "refund_usd": refund,
        "confidence": 0.85 if order else 0.7,
    }


def policy_violation(output: dict[str, Any], node_input: Mapping[str, Any]) -> dict[str, Any]:
    """Fault ``reply_policy_violation``: what an overeager draft looks like (a forbidden
    promise, a mistyped order number)."""
    if "body" not in output:
        return output
    return {
        **output,
        "body": output["body"] + "\nWe guarantee a $50 voucher for the trouble.",
        "order_number": "AB-000000",
    }
