"""Faults the offline model injects, so demos and tests show recovery paths.

The engine's kinds (``ENGINE_FAULT_KINDS``) work for every contract. Apps register kinds of
their own (``register_fault``) with a function that bends a valid answer the way the fault
says; such a fault is *repairable*: it applies only to an attempt without feedback, so a
retry with the reasons fed back answers correctly, as a real model would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keel.contracts.faults import OfflineFault as OfflineFault
from keel.errors import ProviderConfigError

ENGINE_FAULT_KINDS = frozenset(
    {"malformed_json", "low_confidence", "timeout", "rate_limit", "server_error"}
)
"""Fault kinds the offline model knows for every contract."""

FaultFunction = Callable[[dict[str, Any], Mapping[str, Any]], dict[str, Any]]
"""Bends a valid answer ``(output, node_input) -> output``; deterministic."""


@dataclass(frozen=True)
class AppFault:
    """A fault kind an app registered: what it does to an answer."""

    kind: str
    bend: FaultFunction
    description: str = ""


_APP_FAULTS: dict[str, AppFault] = {}


def register_fault(kind: str, bend: FaultFunction, description: str = "") -> AppFault:
    """Register an app's fault kind (idempotent for the same function)."""
    if kind in ENGINE_FAULT_KINDS:
        raise ProviderConfigError(f"fault kind {kind!r} is the engine's; pick another name")
    known = _APP_FAULTS.get(kind)
    if known is not None and known.bend is not bend:
        raise ProviderConfigError(f"fault kind {kind!r} is already registered by another app")
    fault = AppFault(kind, bend, description)
    _APP_FAULTS[kind] = fault
    return fault


def app_fault(kind: str) -> AppFault | None:
    """The app fault registered as ``kind``, if any."""
    return _APP_FAULTS.get(kind)


def known_fault_kinds() -> list[str]:
    """Every fault kind this process knows: the engine's and the loaded apps'."""
    return sorted(ENGINE_FAULT_KINDS | set(_APP_FAULTS))


def check_fault_kinds(faults: list[OfflineFault]) -> None:
    """Raise ``ProviderConfigError`` naming any fault kind no loaded app registered."""
    unknown = sorted({f.kind for f in faults} - set(known_fault_kinds()))
    if unknown:
        raise ProviderConfigError(
            f"KEEL_OFFLINE_FAULTS names unknown fault kinds {unknown}; known: "
            f"{', '.join(known_fault_kinds())} (apps register their own kinds: load the app)"
        )
