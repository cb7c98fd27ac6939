"""Contract versions the tests register beside the scenarios' own, in one place so that no
two test modules publish the same ``name@version`` with different content (the registry
refuses that, and the whole session's collection fails).

Versions of ``risk-classifier`` in use by tests: 2 and 3 (tests/apps/debug_contracts.py),
80-83 (test_not_the_agents_fault), 88 and 89 (test_metrics), 95 (here),
96 and 97 (test_fallback_and_guardrails), 99 (test_agent_node_default), 781-786
(test_guardrails_classifier).
"""

from __future__ import annotations

from keel.contracts import REGISTRY, AgentContract
from keel.contracts.guardrails import GuardrailConfig
from keel.scenarios.contract_review.contracts import RISK_CLASSIFIER

RAW_PII = REGISTRY.register(
    AgentContract(
        **{
            **{name: getattr(RISK_CLASSIFIER, name) for name in type(RISK_CLASSIFIER).model_fields},
            "version": 95,
            "guardrails": GuardrailConfig(scrub_pii=False),
        }
    )
)
"""The risk classifier with its PII scrubber off: the model sees the raw values."""
