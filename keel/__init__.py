"""Keel: durable, auditable AI-agent workflows on Temporal.

Import direction: ``contracts`` <- ``activities``, ``workflows`` <- ``workers``.
Names shared by every layer (task queue, search attributes) are defined here once.
"""

from temporalio.common import SearchAttributeKey

__version__ = "0.1.0"

TASK_QUEUE = "keel"
"""Default task queue of Keel workers."""

PENDING_GATES = SearchAttributeKey.for_keyword_list("KeelPendingGates")
"""Search attribute listing the gates of an execution that wait for a reviewer."""

SEARCH_ATTRIBUTES = (PENDING_GATES,)


def model_queue(task_queue: str) -> str:
    """The task queue of the agent-node activity for workflows on ``task_queue``: model calls
    get their own queue so a rate limit and a concurrency bound apply to them alone."""
    return f"{task_queue}-models"


__all__ = ["PENDING_GATES", "SEARCH_ATTRIBUTES", "TASK_QUEUE", "__version__", "model_queue"]
