"""The offline model: rule-based, deterministic, honest about not being an LLM.

It answers from the rules apps register per contract (``keel.offline.register_rule``) and can
inject faults chosen by ``KEEL_OFFLINE_FAULTS``: the engine's (malformed JSON, low confidence,
timeouts, rate limits, server errors) and those apps register (``register_fault``), so demos
and tests exercise every recovery path without a real model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from keel.activities.providers.base import ModelReply, ModelRequest
from keel.errors import ProviderConfigError, ProviderRetryableError
from keel.offline.faults import OfflineFault, app_fault, check_fault_kinds
from keel.offline.rules import rule_for, rule_names

OFFLINE_MODEL = "offline-rules-v1"


class OfflineProvider:
    """Deterministic rule-based model with optional fault injection."""

    name = "offline"

    def __init__(self, faults: Sequence[OfflineFault] = (), *, model: str = OFFLINE_MODEL) -> None:
        self.model = model
        self.faults = list(faults)
        check_fault_kinds(self.faults)

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Answer by the contract's rule, with any fault that applies to this call."""
        contract_name = request.contract.split("@", 1)[0]
        rule = rule_for(contract_name)
        if rule is None:
            raise ProviderConfigError(
                f"the offline model has no rule for contract {request.contract!r} (it has "
                f"rules for: {', '.join(rule_names()) or 'none'}): register one in the app "
                "(App.offline_rules), or set KEEL_MODEL to openai:<model> or anthropic:<model>"
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
            registered = app_fault(fault.kind)
            if registered is not None:
                output = registered.bend(output, request.input)
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
            if request.feedback and app_fault(fault.kind) is not None:
                continue  # an app's fault is repairable: an answer with feedback is valid
            if (
                fault.activity_attempts is not None
                and request.activity_attempt not in fault.activity_attempts
            ):
                continue
            return fault
        return None
