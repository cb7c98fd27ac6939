"""A test-only workflow that runs one activity once and reports how it failed.

The workflow sandbox re-imports this module, so it must stay import-safe: no side effects.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError


@workflow.defn(name="FailingActivityProbe", sandboxed=True)
class FailingActivityProbe:
    """Runs activity ``name`` with ``arg`` once; returns what its failure said."""

    @workflow.run
    async def run(self, name: str, arg: str) -> dict[str, Any]:
        """Run the activity; report the failure's message, type, retryability, details."""
        try:
            await workflow.execute_activity(
                name,
                arg,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as err:
            cause = err.cause
            assert isinstance(cause, ApplicationError)
            return {
                "message": cause.message,
                "type": cause.type,
                "non_retryable": cause.non_retryable,
                "details": list(cause.details),
                "has_cause": cause.cause is not None,
            }
        return {}
