"""The contract registry: ``name@version`` -> contract, where a published version is immutable."""

from __future__ import annotations

from typing import Any, TypeVar

from keel.contracts.agent import AgentContract
from keel.errors import ContractConflictError, ContractNotFoundError

C = TypeVar("C", bound=AgentContract[Any, Any])


class ContractRegistry:
    """Contracts keyed by ``name@version``.

    Registering the same content again is a no-op; registering different content under a
    published version raises ``ContractConflictError``: publish a new version instead.
    """

    def __init__(self) -> None:
        self._contracts: dict[str, AgentContract[Any, Any]] = {}

    def register(self, contract: C) -> C:
        """Publish ``contract`` and return it (typed as given)."""
        known = self._contracts.get(contract.key)
        if known is not None and known.fingerprint != contract.fingerprint:
            raise ContractConflictError(
                f"contract {contract.key} is already published with fingerprint "
                f"{known.fingerprint[:12]}; register the change as version {contract.version + 1}"
            )
        self._contracts[contract.key] = contract
        return contract

    def get(self, key: str) -> AgentContract[Any, Any]:
        """The contract published as ``key`` (``name@version``)."""
        try:
            return self._contracts[key]
        except KeyError:
            known = ", ".join(sorted(self._contracts)) or "none"
            raise ContractNotFoundError(
                f"no contract {key!r} is registered (known: {known})"
            ) from None

    def keys(self) -> list[str]:
        """Every published ``name@version``."""
        return sorted(self._contracts)


REGISTRY = ContractRegistry()
"""The process-wide registry; scenario modules publish their contracts into it on import."""
