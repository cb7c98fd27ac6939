"""The offline model: rule-based, deterministic, honest about not being an LLM.

It answers from ``keel.activities.offline_rules`` and can inject faults (malformed JSON,
low confidence, timeouts, rate limits, server errors, invalid plans) chosen by
``KEEL_OFFLINE_FAULTS``, so demos and tests exercise every recovery path without a real model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from keel.activities.offline_plan_faults import PLAN_FAULT_KINDS, corrupt_plan
from keel.activities.offline_rules import RULES
from keel.activities.providers.base import ModelReply, ModelRequest
from keel.errors import ProviderPermanentError, ProviderRetryableError
from keel.settings import OfflineFault

OFFLINE_MODEL = "offline-rules-v1"


class OfflineProvider:
    """Deterministic rule-based model with optional fault injection."""

    name = "offline"

    def __init__(self, faults: Sequence[OfflineFault] = (), *, model: str = OFFLINE_MODEL) -> None:
        self.model = model
        self.faults = list(faults)

    async def complete(self, request: ModelRequest) -> ModelReply:
        contract_name = request.contract.split("@", 1)[0]
        rule = RULES.get(contract_name)
        if rule is None:
            raise ProviderPermanentError(
                f"the offline model has no rules for contract {request.contract!r}; "
                "set KEEL_MODEL to openai:<model> or anthropic:<model>",
                provider=self.name,
            )
        fault = self._fault_for(request)
        output = rule(request.input, request.feedback)
        if fault is not None:
            if fault.kind == "rate_limit":
                raise ProviderRetryableError(
                    "offline model: injected rate limit (429)",
                    provider=self.name,
                    status=429,
                    retry_after=fault.retry_after_seconds,
                )
            if fault.kind == "server_error":
                raise ProviderRetryableError(
                    "offline model: injected server error (500)", provider=self.name, status=500
                )
            if fault.kind == "timeout":
                raise ProviderRetryableError(
                    f"offline model: injected timeout after {request.timeout_seconds:.0f}s",
                    provider=self.name,
                )
            if fault.kind == "low_confidence":
                output = {**output, "confidence": 0.35}
            if fault.kind in PLAN_FAULT_KINDS:
                output = corrupt_plan(fault.kind, output, request.input)
            if fault.kind == "reply_policy_violation" and "body" in output:
                # What an overeager draft looks like: a forbidden promise, a mistyped order.
                output = {
                    **output,
                    "body": output["body"] + "\nWe guarantee a $50 voucher for the trouble.",
                    "order_number": "AB-000000",
                }
        text = json.dumps(output, sort_keys=True)
        if fault is not None and fault.kind == "malformed_json":
            # What a truncated or chatty model answer looks like.
            text = "Sure! Here is the assessment: " + text[: len(text) // 2]
        return ModelReply(
            text=text,
            provider=self.name,
            model=self.model,
            # Whitespace-separated words: an estimate, since there is no tokenizer here.
            input_tokens=len(request.prompt.split()),
            output_tokens=len(text.split()),
        )

    def _fault_for(self, request: ModelRequest) -> OfflineFault | None:
        for fault in self.faults:
            if fault.contract is not None and fault.contract != request.contract:
                continue
            if fault.workflow_id_prefix and not request.workflow_id.startswith(
                fault.workflow_id_prefix
            ):
                continue
            if request.agent_attempt not in fault.agent_attempts:
                continue
            if fault.rounds is not None and request.input.get("round") not in fault.rounds:
                continue
            if request.feedback and (
                fault.kind in PLAN_FAULT_KINDS or fault.kind == "reply_policy_violation"
            ):
                continue  # a re-plan with the rejection reasons answers a valid plan
            if (
                fault.activity_attempts is not None
                and request.activity_attempt not in fault.activity_attempts
            ):
                continue
            return fault
        return None
