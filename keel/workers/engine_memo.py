"""The client side of ``keel.workflows.patches``: every workflow a Keel client starts carries
``ENGINE_PATCHES`` in its memo, so its run decides the engine's patches without recording a
marker (two history events fewer per run)."""

from __future__ import annotations

from typing import Any

from temporalio.client import (
    Interceptor,
    OutboundInterceptor,
    StartWorkflowInput,
    WorkflowHandle,
)

from keel.workflows.patches import ENGINE_MEMO, ENGINE_PATCHES


class EngineMemo(Interceptor):
    """Client interceptor: adds ``{ENGINE_MEMO: ENGINE_PATCHES}`` to the memo of every
    workflow started (and signal-with-started); a memo that already names it is kept."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        """Wrap ``next`` so that every start carries the engine's memo."""
        return _EngineMemoOutbound(next)


class _EngineMemoOutbound(OutboundInterceptor):
    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        memo = dict(input.memo or {})
        memo.setdefault(ENGINE_MEMO, ENGINE_PATCHES)
        input.memo = memo
        return await super().start_workflow(input)
