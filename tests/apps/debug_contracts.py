"""New versions of the risk classifier, published by an app of the tests' own, for ``keel
debug --contract`` (``--app tests.apps.debug_contracts``).

``risk-classifier@2`` asks with another prompt over the same input; ``risk-classifier@3``
takes an input the version-1 runs never recorded (a counterparty rating).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from keel.contracts.agent import AgentContract
from keel.scenarios.contract_review.contracts import RISK_CLASSIFIER
from keel.workers.app import App

V2_PROMPT_OPENING = "You review this vendor agreement for an auditor."


def _version(version: int, **changes: Any) -> AgentContract[Any, Any]:
    """``RISK_CLASSIFIER`` as another version, built afresh (so its fingerprint is its own)."""
    fields = {name: getattr(RISK_CLASSIFIER, name) for name in type(RISK_CLASSIFIER).model_fields}
    return AgentContract(**{**fields, "version": version, **changes})


class RatedInput(BaseModel):
    vendor: str
    counterparty_rating: int = Field(ge=1, le=10)


RISK_CLASSIFIER_V2 = _version(
    2,
    prompt_template=(
        f"{V2_PROMPT_OPENING}\nVendor: $vendor ($jurisdiction law), $title, "
        "USD $annual_value_usd a year for $term_months months.\nClauses: $clauses"
    ),
)
RISK_CLASSIFIER_V3 = _version(
    3,
    input_model=RatedInput,
    prompt_template="Vendor: $vendor, rated $counterparty_rating",
    guardrails=RISK_CLASSIFIER.guardrails.model_copy(update={"untrusted_fields": ("vendor",)}),
)

APP = App(
    name="test-debug-contracts",
    workflows=[],
    contracts=[RISK_CLASSIFIER_V2, RISK_CLASSIFIER_V3],
)
