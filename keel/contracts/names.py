"""Names every layer shares (task queue, search attributes), defined once."""

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "keel"
"""Default task queue of Keel workers."""

PENDING_GATES = SearchAttributeKey.for_keyword_list("KeelPendingGates")
"""Search attribute listing the gates of an execution that wait for a reviewer."""

SEARCH_ATTRIBUTES = (PENDING_GATES,)
"""Every search attribute Keel workflows set; workers register the missing ones."""


def model_queue(task_queue: str) -> str:
    """The task queue of the agent-node activity for workflows on ``task_queue``.

    Model calls get their own queue so a rate limit and a concurrency bound apply to them
    alone.
    """
    return f"{task_queue}-models"
