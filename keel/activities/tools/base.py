"""What every tool activity shares: its input checked against the tool's spec."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.exceptions import ApplicationError

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
