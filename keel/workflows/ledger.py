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
        self.last_seq = 0

    @property
    def genesis(self) -> str:
        """The hash this run's chain starts from (the previous run's head after
        continue-as-new)."""
        return self.events[0].prev_hash if self.events else self.head_hash

    def continue_from(self, head_hash: str, last_seq: int) -> None:
        """Start this (empty) ledger where a previous run's ledger ended."""
        if self.events:
            raise RuntimeError("continue_from needs an empty ledger")
        self.head_hash = head_hash
        self.last_seq = last_seq

    def record(self, event: E) -> E:
        """Seal ``event`` (sequence number, time, chain link, hash) and append it."""
        stamped = event.model_copy(
            update={"seq": self.last_seq + 1, "at": workflow.now(), "prev_hash": self.head_hash}
        )
        sealed = stamped.model_copy(update={"hash": stamped.compute_hash()})
        self.events.append(cast(LedgerEvent, sealed))
        self.head_hash = sealed.hash
        self.last_seq = sealed.seq
        return sealed
