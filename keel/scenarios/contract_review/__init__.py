"""Contract risk review: classify a vendor agreement's risk, route by rule, human review.

``APP`` declares it; see README.md beside this file.
"""

from pathlib import Path
from typing import Any

from keel.offline import OfflineFault
from keel.scenarios.contract_review.contracts import (
    MAX_INPUT_BYTES,
    RISK_CLASSIFIER,
    ContractReviewInput,
)
from keel.scenarios.contract_review.offline import classify_contract_risk
from keel.scenarios.contract_review.workflow import ContractReviewWorkflow
from keel.workers.app import App, DemoReview, DemoRun, Entry

STANDARD = DemoReview("legal.priya", "approve", "DPA for payroll data is attached.")
GC_REJECTS = DemoReview(
    "gc.morgan",
    "reject",
    "Clause 4 fees hide a penalty schedule for early exit; reassess with that in mind.",
)
GC_APPROVES = DemoReview(
    "gc.morgan",
    "approve",
    "Approved with conditions.",
    {"conditions": ["cap customer liability at 12 months of fees", "drop exclusivity"]},
)


def summarize(result: Any) -> str:
    """``contract id, by whom``."""
    return f"{result['contract_id']}, by {result['decided_by']}"


APP = App(
    name="contract-review",
    workflows=[ContractReviewWorkflow],
    entries=[
        Entry("contract-review", ContractReviewWorkflow, ContractReviewInput, MAX_INPUT_BYTES)
    ],
    contracts=[RISK_CLASSIFIER],
    offline_rules={RISK_CLASSIFIER.name: classify_contract_risk},
    samples=Path(__file__).parent / "samples",
    demo=[
        DemoRun(
            "contract, low risk",
            "contract-review",
            "contract-low-risk",
            faults=[OfflineFault(kind="rate_limit", activity_attempts=[1], retry_after_seconds=1)],
        ),
        DemoRun(
            "contract, medium risk",
            "contract-review",
            "contract-medium-risk",
            faults=[OfflineFault(kind="malformed_json")],
            reviews={"standard-review": STANDARD},
        ),
        DemoRun(
            "contract, high risk",
            "contract-review",
            "contract-high-risk",
            reviews={"general-counsel": GC_REJECTS, "general-counsel-2": GC_APPROVES},
        ),
    ],
    summarize=summarize,
)
"""The contract review app."""

__all__ = ["APP", "ContractReviewWorkflow"]
