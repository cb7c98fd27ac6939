"""The contract registry and the checks an agent contract makes when it is defined."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from keel.contracts import AgentContract, ContractRegistry, RetryStrategy, UseDefault
from keel.errors import ContractConflictError, ContractNotFoundError, KeelUserError
from keel.scenarios.contract_review.contracts import RISK_CLASSIFIER


class TicketInput(BaseModel):
    subject: str
    body: str


class TicketTriage(BaseModel):
    queue: str
    confidence: float = Field(ge=0.0, le=1.0)


DEFAULT = UseDefault(output={"queue": "human", "confidence": 1.0}, reason="route to a human")


def contract(**overrides: Any) -> AgentContract[Any, Any]:
    fields: dict[str, Any] = {
        "name": "ticket-triage",
        "version": 1,
        "description": "Pick the support queue of a ticket.",
        "input_model": TicketInput,
        "output_model": TicketTriage,
        "system_prompt": "You route support tickets.",
        "prompt_template": "Subject: $subject\nBody: ${body}",
        "on_exhausted": DEFAULT,
    }
    fields.update(overrides)
    return AgentContract(**fields)


# --- registry -------------------------------------------------------------------------------


def test_register_then_get_by_name_at_version() -> None:
    registry = ContractRegistry()
    v1 = registry.register(contract())
    v2 = registry.register(contract(version=2, confidence_threshold=0.9))
    assert registry.get("ticket-triage@1") is v1
    assert registry.get("ticket-triage@2") is v2
    assert registry.keys() == ["ticket-triage@1", "ticket-triage@2"]


def test_registering_the_same_content_again_is_a_no_op() -> None:
    registry = ContractRegistry()
    first = registry.register(contract())
    again = contract()  # a new object with the same content, as after a re-import
    assert again is not first
    assert registry.register(again) is again
    assert registry.keys() == ["ticket-triage@1"]
    assert registry.get("ticket-triage@1").fingerprint == first.fingerprint


def test_changing_a_published_version_is_refused_and_suggests_the_next_one() -> None:
    registry = ContractRegistry()
    published = registry.register(contract(version=3))
    with pytest.raises(ContractConflictError) as info:
        registry.register(contract(version=3, prompt_template="Ticket: $subject"))
    message = str(info.value)
    assert "ticket-triage@3" in message
    assert "version 4" in message
    assert published.fingerprint[:12] in message
    assert isinstance(info.value, KeelUserError)
    # The published contract is untouched.
    assert registry.get("ticket-triage@3") is published


def test_unknown_key_lists_the_known_ones() -> None:
    registry = ContractRegistry()
    with pytest.raises(ContractNotFoundError, match=r"known: none"):
        registry.get("ticket-triage@1")
    registry.register(contract())
    registry.register(contract(name="spam-filter"))
    with pytest.raises(ContractNotFoundError) as info:
        registry.get("ticket-triage@7")
    message = str(info.value)
    assert "'ticket-triage@7'" in message
    assert "known: spam-filter@1, ticket-triage@1" in message


def test_the_global_registry_holds_the_risk_classifier() -> None:
    from keel.contracts import REGISTRY

    assert REGISTRY.get("risk-classifier@1") is RISK_CLASSIFIER


# --- fingerprint ----------------------------------------------------------------------------


class TicketTriageV2(BaseModel):
    queue: str
    priority: int
    confidence: float = Field(ge=0.0, le=1.0)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"prompt_template": "Subject: $subject"}, id="prompt-template"),
        pytest.param({"confidence_threshold": 0.8}, id="confidence-threshold"),
        pytest.param({"output_model": TicketTriageV2}, id="output-schema"),
        pytest.param({"system_prompt": "Route tickets."}, id="system-prompt"),
        pytest.param({"max_attempts": 2}, id="max-attempts"),
        pytest.param({"retry_strategy": RetryStrategy.PLAIN}, id="retry-strategy"),
        pytest.param({"time_budget": timedelta(seconds=5)}, id="time-budget"),
    ],
)
def test_fingerprint_changes_with_the_content(change: dict[str, Any]) -> None:
    if "output_model" in change:
        change = {
            **change,
            "on_exhausted": UseDefault(
                output={"queue": "human", "priority": 1, "confidence": 1.0}, reason="human"
            ),
        }
    assert contract(**change).fingerprint != contract().fingerprint


def test_fingerprint_is_stable_for_the_same_content() -> None:
    first = contract()
    assert len(first.fingerprint) == 64
    assert contract().fingerprint == first.fingerprint

    # A field-for-field identical output model declared again (e.g. after a reload).
    class TicketTriage(BaseModel):
        queue: str
        confidence: float = Field(ge=0.0, le=1.0)

    assert contract(output_model=TicketTriage).fingerprint == first.fingerprint


def test_fingerprint_is_the_same_in_another_process() -> None:
    """Workers compare fingerprints across processes: no hash seed or ordering may leak in."""
    code = (
        "from keel.scenarios.contract_review.contracts import RISK_CLASSIFIER; "
        "print(RISK_CLASSIFIER.fingerprint)"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        cwd=Path(__file__).parent.parent,
    )
    assert other.stdout.strip() == RISK_CLASSIFIER.fingerprint


# --- contract checks ------------------------------------------------------------------------


def test_output_model_must_have_a_confidence_field() -> None:
    class NoConfidence(BaseModel):
        queue: str

    with pytest.raises(
        ValidationError, match=r"ticket-triage@1: output model needs a 'confidence'"
    ):
        contract(
            output_model=NoConfidence,
            on_exhausted=UseDefault(output={"queue": "human"}, reason="human"),
        )


@pytest.mark.parametrize("template", ["Subject: $subjet", "Body: ${bodytext}"])
def test_prompt_template_may_only_name_input_fields(template: str) -> None:
    with pytest.raises(ValidationError, match=r"prompt names unknown field \$(subjet|bodytext)"):
        contract(prompt_template=template)


def test_prompt_template_may_name_the_whole_input_and_escape_dollars() -> None:
    c = contract(prompt_template="Ticket: $input_json (fee: $$5)")
    prompt = c.render_prompt({"subject": "s", "body": "b"}, [])
    assert prompt.startswith('Ticket: {"body":"b","subject":"s"} (fee: $5)')


def test_prompt_template_with_a_stray_dollar_is_refused_when_defined() -> None:
    with pytest.raises(ValidationError, match=r"stray '\$'"):
        contract(prompt_template="Refunds over $ 100 need approval. Subject: $subject")


def test_default_output_must_satisfy_the_output_model() -> None:
    with pytest.raises(ValidationError, match=r"confidence"):
        contract(on_exhausted=UseDefault(output={"queue": "human"}, reason="no confidence"))
    with pytest.raises(ValidationError, match=r"queue"):
        contract(on_exhausted=UseDefault(output={"queue": 3, "confidence": 1.0}, reason="bad"))
