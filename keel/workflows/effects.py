"""Running a side-effecting tool from workflow code: outages waited out, every effect recorded.

``execute_tool`` runs a tool activity under the caller's retry policy, and adds two things
Temporal's retry policy cannot express:

* an ``EffectStoreUnavailable`` failure (the side-effect record's database was down, so
  nothing was acted on since) is not an end: the workflow waits (durable timer, backing off
  to ``STORE_OUTAGE_MAX_WAIT``) and runs the activity again, with no limit, so an outage of
  minutes delays the effect and never fails it; business failures stay non-retryable;
* a result whose ``effect.recorded`` is false (the effect happened, then its record write
  failed for as long as the activity could retry it) is recorded by the tool's ``record``
  activity, retried without limit: the provider's result is in history, so nobody acts
  again to learn it.

``unknown_outcome(err)`` reads the ``UnknownOutcome`` of an ``EffectOutcomeUnknown``
failure, for workflows that escalate it to a person (``resolve_effect`` records the answer).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from keel.contracts.effects import (
        EFFECT_OUTCOME_UNKNOWN,
        EFFECT_STORE_UNAVAILABLE,
        RecordOutcomeInput,
        ResolvedOutcome,
        ResolveOutcomeInput,
        UnknownOutcome,
        record_activity_name,
        resolve_activity_name,
        unknown_outcome_of,
    )
    from keel.contracts.tools import ToolCall, ToolResult, tool_activity_name

STORE_OUTAGE_FIRST_WAIT = timedelta(seconds=2)
STORE_OUTAGE_MAX_WAIT = timedelta(seconds=30)
RECORD_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,  # only the database can fail it, and it comes back
    non_retryable_error_types=["UnknownEffect"],
)
"""The ``record`` and ``resolve`` activities: retried until the database answers."""


def failure_type(err: BaseException) -> str | None:
    """The ``ApplicationError`` type an activity failed with, if any."""
    cause = err.cause if isinstance(err, ActivityError) else err
    return cause.type if isinstance(cause, ApplicationError) else None


def unknown_outcome(err: BaseException, call: ToolCall | None = None) -> UnknownOutcome | None:
    """The ``UnknownOutcome`` of an ``EffectOutcomeUnknown`` activity failure, else None.

    Details that do not parse (an older worker, or scrubbed on the way) still make an unknown
    outcome when ``call`` is given: what the workflow itself knows of it.
    """
    cause = err.cause if isinstance(err, ActivityError) else err
    if not isinstance(cause, ApplicationError) or cause.type != EFFECT_OUTCOME_UNKNOWN:
        return None
    parsed = unknown_outcome_of(cause.details[0]) if cause.details else None
    if parsed is not None or call is None:
        return parsed
    now = workflow.now()
    return UnknownOutcome(
        idempotency_key=call.idempotency_key,
        tool=call.tool,
        policy="escalate",
        intent_at=now,
        unknown_at=now,
        attempts=0,
        found_by="(the activity's details were unreadable)",
    )


async def execute_tool(
    call: ToolCall,
    *,
    start_to_close_timeout: timedelta,
    retry_policy: RetryPolicy,
    summary: str | None = None,
) -> ToolResult:
    """Run the tool activity of ``call``; wait out record outages; record a pending effect.

    Raises:
        ActivityError: the tool failed for good (its cause says why; an unknown outcome is
            ``EffectOutcomeUnknown``, see ``unknown_outcome``).
    """
    wait = STORE_OUTAGE_FIRST_WAIT
    while True:
        try:
            result: ToolResult = await workflow.execute_activity(
                tool_activity_name(call.tool),
                call,
                result_type=ToolResult,
                start_to_close_timeout=start_to_close_timeout,
                retry_policy=retry_policy,
                summary=summary,
            )
            break
        except ActivityError as err:
            if failure_type(err) != EFFECT_STORE_UNAVAILABLE:
                raise
            workflow.set_current_details(
                f"Waiting for the side-effect record's database ({call.tool}); "
                f"next try in {wait.total_seconds():.0f}s"
            )
            await workflow.sleep(wait)
            wait = min(wait * 2, STORE_OUTAGE_MAX_WAIT)
    effect = result.effect
    if effect is not None and not effect.recorded:
        await workflow.execute_activity(
            record_activity_name(call.tool),
            RecordOutcomeInput(
                idempotency_key=effect.idempotency_key,
                tool=call.tool,
                provider_id=effect.provider_id,
                result=result.output,
            ),
            result_type=bool,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RECORD_RETRIES,
            summary=f"record {call.tool} effect",
        )
        result = result.model_copy(update={"effect": effect.model_copy(update={"recorded": True})})
    return result


async def resolve_effect(resolution: ResolveOutcomeInput) -> ResolvedOutcome:
    """Record a person's answer about an unknown outcome (the tool's ``resolve`` activity)."""
    resolved: ResolvedOutcome = await workflow.execute_activity(
        resolve_activity_name(resolution.tool),
        resolution,
        result_type=ResolvedOutcome,
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=RECORD_RETRIES,
        summary=f"resolve {resolution.tool} outcome",
    )
    return resolved
