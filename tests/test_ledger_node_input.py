"""The ledger records each node run's input once, PII-redacted, so prompts can be re-rendered
from the contract version (``keel debug``, ``keel export --dataset``) without storing them."""

from __future__ import annotations

import uuid
from hashlib import sha256
from typing import Any

from temporalio.testing import WorkflowEnvironment

from keel.contracts import REGISTRY, AgentContract
from keel.contracts.ledger import AgentDecided, parse_ledger, verify_chain
from keel.scenarios.contract_review.contracts import RISK_CLASSIFIER, RiskClassifierInput
from keel.testing import ScriptedModel, events_of
from tests.conftest import keel_worker
from tests.probe_contracts import RAW_PII
from tests.probe_workflows import AgentNodeProbe
from tests.samples import load_sample

GOOD = {
    "risk_level": "medium",
    "clause_refs": ["4.2"],
    "rationale": "standard terms, liability capped",
    "confidence": 0.95,
}
UNSURE = {**GOOD, "confidence": 0.1}


async def run_probe(
    env: WorkflowEnvironment,
    node_input: dict[str, Any],
    answers: list[dict[str, Any]],
    contract: AgentContract[Any, Any] = RISK_CLASSIFIER,
) -> tuple[list[dict[str, Any]], ScriptedModel]:
    model = ScriptedModel({RISK_CLASSIFIER.name: answers})
    async with keel_worker(env.client, provider=model, extra_workflows=[AgentNodeProbe]) as tq:
        result: dict[str, Any] = await env.client.execute_workflow(
            AgentNodeProbe.run,
            {"contract": contract.key, "input": node_input},
            id=f"probe-{uuid.uuid4()}",
            task_queue=tq,
        )
    return result["ledger"], model


def sample_input() -> dict[str, Any]:
    raw = load_sample("contract-medium-risk")
    return {k: raw[k] for k in RiskClassifierInput.model_fields}


async def test_the_first_decision_of_a_node_run_carries_the_input_later_attempts_do_not(
    ts_env: WorkflowEnvironment,
) -> None:
    node_input = sample_input()
    raw, model = await run_probe(ts_env, node_input, [UNSURE, GOOD])
    ledger = parse_ledger(raw)
    assert verify_chain(ledger).ok
    first, second = events_of(ledger, AgentDecided)
    assert first.input == node_input
    assert second.input is None and second.feedback
    stored_second = next(e for e in raw if e["type"] == "AgentDecided" and e["attempt"] == 2)
    assert "input" not in stored_second  # omitted, not null: its hash is the old form's
    # Re-rendered from the contract version and the recorded input: the very prompts the
    # model saw, attempt by attempt.
    contract = REGISTRY.get(first.contract)
    for decision, request in zip((first, second), model.requests, strict=True):
        prompt = contract.render_prompt(first.input, decision.feedback)
        assert prompt == request.prompt
        assert sha256(prompt.encode()).hexdigest() == decision.prompt_sha256


async def test_the_recorded_input_keeps_no_raw_pii(ts_env: WorkflowEnvironment) -> None:
    node_input = sample_input()
    email, card = "jane.doe@example.com", "4111 1111 1111 1111"
    node_input["clauses"][-1]["text"] += f"\nBilling contact {email}, card {card}."
    raw, model = await run_probe(ts_env, node_input, [GOOD], RAW_PII)
    (decided,) = events_of(parse_ledger(raw), AgentDecided)
    assert decided.input is not None
    text = decided.input["clauses"][-1]["text"]
    assert email not in text and "4111" not in text
    assert "[email redacted #1]" in text and "[card redacted #1]" in text
    assert {k: v for k, v in decided.input.items() if k != "clauses"} == {
        k: v for k, v in node_input.items() if k != "clauses"
    }
    assert decided.input["clauses"][:-1] == node_input["clauses"][:-1]
    assert email in model.requests[0].prompt  # the model saw it (its PII scrubber is off)
    contract = REGISTRY.get(decided.contract)
    rendered = contract.render_prompt(decided.input, decided.feedback)
    # Hence a prompt re-rendered from the ledger differs from the one the model saw.
    assert sha256(rendered.encode()).hexdigest() != decided.prompt_sha256


async def test_a_reviewers_comment_fed_back_to_the_agent_loses_its_pii(
    ts_env: WorkflowEnvironment,
) -> None:
    """A rejection's comment goes back to the model as feedback: its PII is redacted for the
    model and for the ``AgentDecided`` that records the feedback (the signed decision itself
    keeps the comment as signed)."""
    from tests.helpers import decide, review, start_review, wait_for_gate

    high = {**GOOD, "risk_level": "high", "clause_refs": ["3"]}
    model = ScriptedModel({RISK_CLASSIFIER.name: [high, high]})
    card, email = "4111 1111 1111 1111", "jane.doe@example.com"
    async with keel_worker(ts_env.client, provider=model) as tq:
        handle = await start_review(ts_env.client, tq, "high", prefix="feedback-pii")
        await wait_for_gate(handle, "general-counsel")
        comment = f"ask {email} why card {card} is in clause 4"
        await decide(handle, review("general-counsel", "reject", "gc.morgan", comment=comment))
        await wait_for_gate(handle, "general-counsel-2")
        await handle.terminate("test done")
    again = model.requests[-1]
    assert len(model.requests) == 2 and again.feedback
    assert not any(card in item or email in item for item in again.feedback)
    assert any("[card redacted #1]" in item for item in again.feedback)
    assert card not in again.prompt and email not in again.prompt
