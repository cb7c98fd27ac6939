"""What every tool activity shares: its input checked against the tool's spec, the
side-effect record's errors as Temporal errors, and the ``record``/``resolve`` activities."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from keel.activities.effects import EffectConflictError, EffectOutcomeUnknownError, EffectRecord
from keel.activities.sqlstore import StoreUnavailableError
from keel.contracts.effects import (
    EFFECT_OUTCOME_UNKNOWN,
    EFFECT_STORE_UNAVAILABLE,
    RecordOutcomeInput,
    ResolvedOutcome,
    ResolveOutcomeInput,
    record_activity_name,
    resolve_activity_name,
)
from keel.contracts.tools import ToolCall, ToolSpec, tool_activity_name

M = TypeVar("M", bound=BaseModel)


def tool_input(spec: ToolSpec, model: type[M], call: ToolCall) -> M:
    """The call's input as ``model``, or a non-retryable ``InvalidToolInput``."""
    if call.tool != spec.name:
        raise ApplicationError(
            f"activity {tool_activity_name(spec.name)} was called for tool {call.tool!r}",
            type="InvalidToolInput",
            non_retryable=True,
        )
    if spec.side_effects and not call.idempotency_key:
        raise ApplicationError(
            f"{spec.name} has side effects and needs an idempotency key",
            type="InvalidToolInput",
            non_retryable=True,
        )
    try:
        return model.model_validate(call.input)
    except ValidationError as err:
        reasons = [
            {"loc": ".".join(str(p) for p in e["loc"]) or "(input)", "msg": e["msg"]}
            for e in err.errors(include_url=False)
        ]
        summary = "; ".join(f"{r['loc']}: {r['msg']}" for r in reasons)
        raise ApplicationError(
            f"invalid input for {spec.name}: {summary}",
            reasons,
            type="InvalidToolInput",
            non_retryable=True,
        ) from err


@contextmanager
def effect_errors() -> Iterator[None]:
    """The side-effect record's failures as the ``ApplicationError`` types workflows expect.

    * ``IdempotencyKeyConflict`` (non-retryable): the key was used for another request;
    * ``EffectOutcomeUnknown`` (non-retryable; details: an ``UnknownOutcome``): a person must
      confirm whether the effect happened;
    * ``EffectStoreUnavailable`` (retryable): the record's database could not be reached.
    """
    try:
        yield
    except EffectConflictError as err:
        raise ApplicationError(str(err), type="IdempotencyKeyConflict", non_retryable=True) from err
    except EffectOutcomeUnknownError as err:
        raise ApplicationError(
            str(err),
            err.outcome.model_dump(mode="json"),
            type=EFFECT_OUTCOME_UNKNOWN,
            non_retryable=True,
        ) from err
    except StoreUnavailableError as err:
        raise ApplicationError(
            f"the side-effect record is unavailable: {err}", type=EFFECT_STORE_UNAVAILABLE
        ) from err


def effect_activities(tool: str, effects: EffectRecord) -> list[Callable[..., Any]]:
    """The ``record`` and ``resolve`` activities of ``tool`` over ``effects``.

    Register them beside the tool's own activity: a workflow records an effect whose write
    failed (``EffectReceipt.recorded`` false) with the first, and a person's answer about an
    unknown outcome with the second.
    """

    @activity.defn(name=record_activity_name(tool))
    async def record_outcome(outcome: RecordOutcomeInput) -> bool:
        """Record a performed effect whose write failed in the tool's activity."""
        with effect_errors():
            return await effects.record_performed(
                outcome.idempotency_key, outcome.provider_id, outcome.result
            )

    @activity.defn(name=resolve_activity_name(tool))
    async def resolve_outcome(resolution: ResolveOutcomeInput) -> ResolvedOutcome:
        """Record a person's answer: the effect happened, or it did not (acted again next)."""
        with effect_errors():
            try:
                entry = await effects.resolve(
                    resolution.idempotency_key,
                    performed=resolution.performed,
                    by=resolution.by,
                    provider_id=resolution.provider_id,
                    note=resolution.note,
                )
            except KeyError as err:
                raise ApplicationError(str(err), type="UnknownEffect", non_retryable=True) from err
        return ResolvedOutcome(
            idempotency_key=entry.idempotency_key,
            status=entry.status.value,
            resolved_by=entry.resolved_by,
            resolved_at=entry.resolved_at,
        )

    return [record_outcome, resolve_outcome]
