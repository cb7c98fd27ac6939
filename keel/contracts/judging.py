"""How an agent node judges one answer: parse, schema, the workflow's rules, confidence.

Pure (no I/O, no Temporal): the agent-node workflow code judges each attempt with it, and
``keel debug`` judges a counterfactual answer with the very same code, so the verdict it
shows is the one the workflow would have reached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import ValidationError

from keel.contracts.agent import AgentContract, Out
from keel.contracts.agent_node import AgentDecision

RejectionKind = Literal["parse", "schema", "rule", "confidence"]
"""Why an answer was rejected; the ``kind`` of a ``ValidationFailed`` event."""

Rejection = tuple[RejectionKind, list[str]]
"""A rejected answer: the kind of failure and the reasons fed back to the next attempt."""


def judge_answer(
    contract: AgentContract[Any, Out],
    decision: AgentDecision,
    check: Callable[[Out], list[str]] | None,
) -> Out | Rejection:
    """The validated output of an accepted answer, or why the answer is rejected.

    Args:
        contract: the contract the answer was asked under.
        decision: the model's answer as the agent-node activity returned it.
        check: the workflow's own content check of a schema-valid output (``None``: none).
    """
    if decision.output is None:
        return "parse", [decision.parse_error or "the answer could not be parsed"]
    try:
        output = contract.output_model.model_validate(decision.output)
    except ValidationError as err:
        return "schema", [
            f"{'.'.join(str(p) for p in e['loc']) or 'output'}: {e['msg']}" for e in err.errors()
        ]
    if check is not None:
        rule_problems = check(output)
        if rule_problems:
            return "rule", rule_problems
    confidence = float(decision.output["confidence"])
    if confidence < contract.confidence_threshold:
        return "confidence", [
            f"confidence {confidence:.2f} is below the contract's threshold "
            f"{contract.confidence_threshold:.2f}: recheck the evidence"
        ]
    return output
