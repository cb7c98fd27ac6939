"""A contract review whose code changed incompatibly (an extra timer), for replay tests."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from keel.scenarios.contract_review.contracts import ContractReviewResult
    from keel.scenarios.contract_review.workflow import ContractReviewWorkflow


@workflow.defn(name="ContractReview")
class ChangedContractReview(ContractReviewWorkflow):
    @workflow.run
    async def run(self, raw_input: dict[str, Any]) -> ContractReviewResult:
        await asyncio.sleep(1)  # a timer the recorded history does not have
        return await super().run(raw_input)
