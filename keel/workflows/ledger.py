"""The workflow-side ledger: plain deterministic code, no activity."""

from __future__ import annotations

from typing import TypeVar, cast

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from keel.contracts.ledger import GENESIS_HASH, EventBase, LedgerEvent

E = TypeVar("E", bound=EventBase)


class Ledger:
    """Append-only, hash-chained events, stamped with workflow time."""

    def __init__(self, *, genesis: str = GENESIS_HASH) -> None:
        self.events: list[LedgerEvent] = []
        self.head_hash = genesis

    def record(self, event: E) -> E:
        """Seal ``event`` (sequence number, time, chain link, hash) and append it."""
        stamped = event.model_copy(
            update={"seq": len(self.events) + 1, "at": workflow.now(), "prev_hash": self.head_hash}
        )
        sealed = stamped.model_copy(update={"hash": stamped.compute_hash()})
        self.events.append(cast(LedgerEvent, sealed))
        self.head_hash = sealed.hash
        return sealed
