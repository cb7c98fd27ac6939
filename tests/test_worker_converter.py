"""The worker's payload converter builds each type's pydantic adapter once per process, not
once per workflow run (the SDK gives every run a converter of its own)."""

from __future__ import annotations

from keel.scenarios.contract_review.contracts import RiskAssessment, RiskLevel
from keel.workers.runtime import SHARED_TYPE_ADAPTERS, WORKER_DATA_CONVERTER

ASSESSMENT = RiskAssessment(
    risk_level=RiskLevel.LOW, clause_refs=[], rationale="standard terms", confidence=0.9
)


def test_a_new_runs_converter_reuses_the_adapters_earlier_runs_built() -> None:
    first = WORKER_DATA_CONVERTER.payload_converter_class()
    payloads = first.to_payloads([ASSESSMENT])
    assert first.from_payloads(payloads, [RiskAssessment]) == [ASSESSMENT]
    before = SHARED_TYPE_ADAPTERS.cache_info()
    second = WORKER_DATA_CONVERTER.payload_converter_class()  # what the next run gets
    assert second.from_payloads(payloads, [RiskAssessment]) == [ASSESSMENT]
    after = SHARED_TYPE_ADAPTERS.cache_info()
    assert (after.misses, after.hits) == (before.misses, before.hits + 1)
