"""Names every layer shares (task queue, search attributes), defined once."""

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "keel"
"""Default task queue of Keel workers."""

PENDING_GATES = SearchAttributeKey.for_keyword_list("KeelPendingGates")
"""Search attribute listing the gates of an execution that wait for a reviewer."""

SEARCH_ATTRIBUTES = (PENDING_GATES,)
"""Every search attribute Keel workflows set; workers register the missing ones."""


def model_queue(task_queue: str) -> str:
    """The task queue of model calls for workflows on ``task_queue`` when a server-side rate
    limit is configured (a limit holds only on a queue of their own); without one they run
    on ``task_queue`` itself (``keel.workers.model_calls``)."""
    return f"{task_queue}-models"


MODEL_QUEUE_ROUTE = "keel_model_queue"
"""Name of the extern function through which workflow code asks its worker which queue its
model calls go to (``keel.workers.model_calls`` provides it); a worker without it (a
``Replayer``) answers the workflow's own queue."""
