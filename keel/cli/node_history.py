"""The exact request of a recorded agent-node attempt, from Temporal's history (``keel
debug``): the ``AgentNodeRequest`` the workflow scheduled, decoded with the client's data
converter (and so its history-encryption keys).

The ledger's copy of a node's input is PII-redacted; the scheduled request is what the
activity received. The history is read, never written: the execution is not touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from temporalio.api.common.v1 import Payloads
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from keel.cli.node_attempts import RecordedAttempt
from keel.cli.render import escape
from keel.contracts.agent_node import AGENT_NODE_ACTIVITY, AgentDecision, AgentNodeRequest
from keel.workers.codec import HOW_TO_CONFIGURE

T = TypeVar("T")


@dataclass(frozen=True)
class HistoryLookup:
    """The scheduled request of an attempt, or why the history cannot give it."""

    request: AgentNodeRequest | None
    unavailable: str | None = None


async def scheduled_request(
    client: Client, workflow_id: str, recorded: RecordedAttempt
) -> HistoryLookup:
    """The request scheduled for ``recorded``: the one whose completed call holds the
    node's decision at the same place (``recorded.ordinal``) in the run, with the same
    attempt and prompt hash (so a history that does not match is never taken for it)."""
    handle = client.get_workflow_handle(workflow_id, run_id=recorded.run_id)
    scheduled: dict[int, Payloads] = {}
    seen = 0
    try:
        async for event in handle.fetch_history_events():
            if event.HasField("activity_task_scheduled_event_attributes"):
                attrs = event.activity_task_scheduled_event_attributes
                if attrs.activity_type.name == AGENT_NODE_ACTIVITY:
                    scheduled[event.event_id] = attrs.input
            elif event.HasField("activity_task_completed_event_attributes"):
                done = event.activity_task_completed_event_attributes
                sent = scheduled.pop(done.scheduled_event_id, None)
                if sent is None:
                    continue
                request = await _decoded(client, sent, AgentNodeRequest)
                if request.node != recorded.decided.node:
                    continue
                if seen == recorded.ordinal:
                    decision = await _decoded(client, done.result, AgentDecision)
                    return _matched(request, decision, recorded)
                seen += 1
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return HistoryLookup(None, f"Temporal no longer has run {recorded.run_id}")
        return HistoryLookup(None, f"its history could not be read: {escape(exc.message)}")
    except _Undecodable as exc:
        return HistoryLookup(None, str(exc))
    return HistoryLookup(None, "its history holds no completed call of this attempt")


def _matched(
    request: AgentNodeRequest, decision: AgentDecision, recorded: RecordedAttempt
) -> HistoryLookup:
    decided = recorded.decided
    if decision.attempt != decided.attempt or decision.prompt_sha256 != decided.prompt_sha256:
        return HistoryLookup(
            None,
            "the history's call at this place is of another attempt or prompt than the "
            "ledger's decision (a ledger and a history that do not belong together)",
        )
    return HistoryLookup(request)


class _Undecodable(Exception):
    """A payload of the history that this process cannot decode."""


async def _decoded(client: Client, payloads: Payloads, kind: type[T]) -> T:
    try:
        [value] = await client.data_converter.decode(payloads.payloads, [kind])
    except Exception as exc:  # the codec's or the converter's: either way, unreadable here
        raise _Undecodable(
            f"its history's payloads cannot be decoded here ({type(exc).__name__}: "
            f"{escape(str(exc))[:200]}); if the history is encrypted: {HOW_TO_CONFIGURE}"
        ) from exc
    if not isinstance(value, kind):
        raise _Undecodable(f"its history holds a {type(value).__name__}, not a {kind.__name__}")
    return value
