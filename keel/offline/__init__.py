"""The offline model: deterministic per-contract rules that apps register, and fault injection.

Not an LLM, and it says so in every rationale: it lets ``keel demo``, tests and CI run every
path (including recovery from malformed answers, rate limits and invalid plans) with no
model API.
"""

from keel.offline.faults import (
    ENGINE_FAULT_KINDS,
    FaultFunction,
    OfflineFault,
    known_fault_kinds,
    register_fault,
)
from keel.offline.provider import OFFLINE_MODEL, OfflineProvider
from keel.offline.rules import OfflineRule, register_rule, rule_for

__all__ = [
    "ENGINE_FAULT_KINDS",
    "OFFLINE_MODEL",
    "FaultFunction",
    "OfflineFault",
    "OfflineProvider",
    "OfflineRule",
    "known_fault_kinds",
    "register_fault",
    "register_rule",
    "rule_for",
]
