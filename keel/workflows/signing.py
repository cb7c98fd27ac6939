"""Signing from workflow code: one local activity per signature or check (see
``keel.activities.signing``), so the outcome is in history and replay is stable."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from keel.contracts.signing import (
        SIGN_ACTIVITY,
        VERIFY_ACTIVITY,
        Signature,
        SignRequest,
        VerifyRequest,
        VerifyResult,
    )

_TIMEOUT = timedelta(seconds=10)
_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5)
)


async def sign(purpose: str, message: dict[str, Any]) -> Signature:
    """The worker's signature over ``message`` for ``purpose``."""
    signature: Signature = await workflow.execute_local_activity(
        SIGN_ACTIVITY,
        SignRequest(purpose=purpose, message=message),
        result_type=Signature,
        start_to_close_timeout=_TIMEOUT,
        retry_policy=_RETRY,
        summary=f"sign {purpose}",
    )
    return signature


async def signature_problem(
    purpose: str, message: dict[str, Any], signature: Signature
) -> str | None:
    """Why ``signature`` does not hold for ``message`` (None if it does), checked against
    the worker's trusted keys."""
    result: VerifyResult = await workflow.execute_local_activity(
        VERIFY_ACTIVITY,
        VerifyRequest(purpose=purpose, message=message, signature=signature),
        result_type=VerifyResult,
        start_to_close_timeout=_TIMEOUT,
        retry_policy=_RETRY,
        summary=f"verify {purpose}",
    )
    return None if result.valid else (result.problem or "invalid signature")


async def signature_valid(purpose: str, message: dict[str, Any], signature: Signature) -> bool:
    """Whether ``signature`` holds for ``message`` under ``purpose``."""
    return await signature_problem(purpose, message, signature) is None
