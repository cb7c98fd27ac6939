"""The support desk's reads: order details and the refund policy, over scenario data.

Fast and local, so the workflow runs them as local activities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity

from keel.scenarios.support_email.contracts import Order, RefundPolicy
from keel.workers.app import load_json

LOOKUP_ORDER = "keel.support.lookup_order"
REFUND_POLICY = "keel.support.refund_policy"


class OrderQuery(BaseModel):
    """Input of the order lookup: the order and who asks."""

    order_number: str
    customer_email: str


class SupportDesk:
    """Orders and policy from ``samples/support-world.json`` (or ``data``)."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = data or load_json(Path(__file__).parent / "samples/support-world.json")

    def activities(self) -> list[Any]:
        """The desk's activities, to register on a worker."""
        return [self.lookup_order, self.refund_policy]

    @activity.defn(name=LOOKUP_ORDER)
    async def lookup_order(self, query: OrderQuery) -> Order | None:
        """The order, if it exists and belongs to the sender (never leak others' orders)."""
        raw = self.data["orders"].get(query.order_number)
        if raw is None or raw["customer_email"].lower() != query.customer_email.lower():
            return None
        return Order.model_validate(raw)

    @activity.defn(name=REFUND_POLICY)
    async def refund_policy(self) -> RefundPolicy:
        """The refund policy in force."""
        return RefundPolicy.model_validate(self.data["refund_policy"])
