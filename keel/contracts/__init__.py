"""Pydantic models only: contracts and their registry, gates, ledger events, scenario I/O.

No Temporal client and no I/O: workflows import these inside the sandbox.
"""

from keel.contracts.agent import (
    AgentContract,
    EscalateToGate,
    RetryStrategy,
    UseDefault,
    canonical_json,
)
from keel.contracts.agent_node import AgentDecision, AgentNodeRequest
from keel.contracts.gates import (
    GateSpec,
    GateState,
    GateView,
    ReviewDecision,
    ReviewReceipt,
    Verdict,
)
from keel.contracts.ledger import GENESIS_HASH, ChainReport, LedgerEvent, parse_ledger, verify_chain
from keel.contracts.registry import REGISTRY, ContractRegistry
from keel.contracts.reviews import SignedReview, sign_review

__all__ = [
    "GENESIS_HASH",
    "REGISTRY",
    "AgentContract",
    "AgentDecision",
    "AgentNodeRequest",
    "ChainReport",
    "ContractRegistry",
    "EscalateToGate",
    "GateSpec",
    "GateState",
    "GateView",
    "LedgerEvent",
    "RetryStrategy",
    "ReviewDecision",
    "ReviewReceipt",
    "SignedReview",
    "UseDefault",
    "Verdict",
    "canonical_json",
    "parse_ledger",
    "sign_review",
    "verify_chain",
]
