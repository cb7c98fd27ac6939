"""Workflow context with checkpoints, so a rejected agent output can be rolled back."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from keel.contracts.agent import canonical_json
    from keel.contracts.ledger import CheckpointTaken, RolledBack

from keel.workflows.ledger import Ledger


@dataclass(frozen=True)
class Checkpoint:
    """A named snapshot of the workflow context, taken before an agent node."""

    name: str
    facts: dict[str, Any]


class WorkflowContext:
    """The facts a workflow has established (JSON values), keyed by name."""

    def __init__(self, ledger: Ledger) -> None:
        self.facts: dict[str, Any] = {}
        self._ledger = ledger

    def checkpoint(self, node: str) -> Checkpoint:
        """Snapshot the facts before ``node`` runs, and record it."""
        name = f"before:{node}#{len(self._ledger.events) + 1}"
        snapshot = copy.deepcopy(self.facts)
        digest = hashlib.sha256(canonical_json(snapshot).encode()).hexdigest()
        self._ledger.record(
            CheckpointTaken(
                checkpoint=name, node=node, context_sha256=digest, keys=sorted(snapshot)
            )
        )
        return Checkpoint(name=name, facts=snapshot)

    def rollback(self, checkpoint: Checkpoint, reason: str) -> None:
        """Restore the facts of ``checkpoint``; what was learned since is discarded."""
        discarded = sorted(
            key
            for key in set(self.facts) | set(checkpoint.facts)
            if self.facts.get(key) != checkpoint.facts.get(key)
        )
        self.facts = copy.deepcopy(checkpoint.facts)
        self._ledger.record(
            RolledBack(checkpoint=checkpoint.name, reason=reason, discarded_keys=discarded)
        )
