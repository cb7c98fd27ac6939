"""Offline rules: per-contract functions that answer like a model would, deterministically.

Apps register one rule per contract name (the version is not part of the key). A rule takes
the node input and this attempt's feedback, and returns the output object, including a
confidence computed from how clear-cut the evidence is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keel.errors import ContractConflictError

OfflineRule = Callable[[Mapping[str, Any], Sequence[str]], dict[str, Any]]

_RULES: dict[str, OfflineRule] = {}


def register_rule(contract_name: str, rule: OfflineRule) -> OfflineRule:
    """Register the offline rule of ``contract_name`` (idempotent for the same function)."""
    known = _RULES.get(contract_name)
    if known is not None and known is not rule:
        raise ContractConflictError(
            f"an offline rule for contract {contract_name!r} is already registered"
        )
    _RULES[contract_name] = rule
    return rule


def rule_for(contract_name: str) -> OfflineRule | None:
    """The rule registered for ``contract_name``, if any."""
    return _RULES.get(contract_name)


def rule_names() -> list[str]:
    """Contract names that have an offline rule."""
    return sorted(_RULES)
