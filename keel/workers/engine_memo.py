"""The client side of ``keel.workflows.patches``: every workflow a Keel client starts carries
``ENGINE_PATCHES`` in its memo, so its run decides the engine's patches without recording a
marker (two history events fewer per run)."""

from __future__ import annotations

from typing import Any

from temporalio.client import (
    Client,
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


def with_engine_memo(client: Client) -> Client:
    """``client`` (same connection and converter) with ``EngineMemo`` added to its
    interceptors, as ``keel.workers.runtime.connect`` builds Keel's clients."""
    config = client.config()
    config["interceptors"] = [*config["interceptors"], EngineMemo()]
    return Client(**config)
