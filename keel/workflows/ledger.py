"""The workflow-side ledger: plain deterministic code; only signing a head is an activity."""

from __future__ import annotations

from typing import TypeVar, cast

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from keel.contracts.ledger import (
        GENESIS_HASH,
        HEAD_PURPOSE,
        LEDGER_SCHEME,
        ChainHeadSigned,
        EventBase,
        LedgerEvent,
        head_message,
        seal_event,
    )

from keel.workflows.metrics import LedgerMetrics
from keel.workflows.patches import engine_patched
from keel.workflows.signing import sign

E = TypeVar("E", bound=EventBase)
R = TypeVar("R")

SIGNED_HEADS_PATCH = "keel-ledger-signed-heads"
"""Runs recorded before chain heads were signed replay without signing (their history has no
signature activities); every run since signs."""

MAX_FINAL_SIGNATURES = 3
"""Signatures a final head tries for: a signal recorded while one is made moves the head."""


class Ledger:
    """Append-only, hash-chained events, stamped with workflow time (``keel-ledger/2``)."""

    def __init__(self, *, genesis: str = GENESIS_HASH) -> None:
        self.events: list[LedgerEvent] = []
        self.head_hash = genesis
        self.last_seq = 0
        self.metrics = LedgerMetrics()
        """Keel's metrics, counted from the events as they are recorded (replay-safe)."""

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
        """Seal ``event`` (sequence number, time, chain link, hash) and append it; the run's
        first event names the hash scheme."""
        try:
            sealed = seal_event(
                event,
                seq=self.last_seq + 1,
                at=workflow.now(),
                prev_hash=self.head_hash,
                scheme=None if self.events else LEDGER_SCHEME,
            )
        except ValueError as err:  # unreachable for Keel's types: json_safe keeps them valid
            raise ApplicationError(
                f"a {event.type} event has no canonical form: {str(err)[:300]}",
                type="LedgerEventInvalid",
                non_retryable=True,
            ) from None
        self.events.append(cast(LedgerEvent, sealed))
        self.head_hash = sealed.hash
        self.last_seq = sealed.seq
        self.metrics.observe(sealed, self.events)
        return sealed

    async def sign_head(self, reason: str, *, final: bool = False) -> EventBase | None:
        """Have the worker sign the current head (one local activity) and record the
        ``ChainHeadSigned``; returns it (None for a run recorded before heads were signed).

        ``final``: the signature must cover the event right before it (completion,
        continue-as-new): if a signal recorded an event while it was being made, sign again.
        """
        if not self.events or not engine_patched(SIGNED_HEADS_PATCH):
            return None
        info = workflow.info()
        for _ in range(MAX_FINAL_SIGNATURES):
            seq, head = self.last_seq, self.head_hash
            message = head_message(LEDGER_SCHEME, info.workflow_id, info.run_id, seq, head, reason)
            signature = await sign(HEAD_PURPOSE, message)
            if not final or self.last_seq == seq:
                break
        return self.record(
            ChainHeadSigned(
                reason=reason,
                covers_seq=seq,
                covers_hash=head,
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                key_id=signature.key_id,
                signature=signature.signature,
            )
        )

    async def record_signed(self, event: EventBase, reason: str) -> EventBase:
        """Record ``event`` and sign the head it makes; returns the new last event (the
        signature, or ``event`` for a run recorded before heads were signed)."""
        recorded = self.record(event)
        return await self.sign_head(reason, final=True) or recorded

    def refresh(self, result: R) -> R:
        """``result`` with its ``ledger`` and ``ledger_head`` fields (when it is a model that
        has them) set to this ledger as it is now."""
        if not isinstance(result, BaseModel):
            return result
        fields = type(result).model_fields
        update: dict[str, object] = {}
        if "ledger" in fields:
            update["ledger"] = list(self.events)
        if "ledger_head" in fields:
            update["ledger_head"] = self.head_hash
        return cast(R, result.model_copy(update=update)) if update else result
