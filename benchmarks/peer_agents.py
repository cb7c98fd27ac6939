"""The peers' agents for ``peers.py``, each with its own fake model (no network).

Each answers the low-risk sample with the same ``RiskAssessment`` the offline model gives, in
one model call, the way a real model would: Pydantic AI's through its output tool
(``FunctionModel``), the OpenAI Agents SDK's as a JSON output message (a ``Model`` of the
SDK's own test kit). The workflows import this module passed through the sandbox, so the
agent a workflow runs is the one its worker registered.
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.durable_exec.temporal import TemporalDurability
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from keel.scenarios.contract_review.contracts import RISK_CLASSIFIER, RiskAssessment, RiskLevel

ANSWER = RiskAssessment(
    risk_level=RiskLevel.LOW,
    clause_refs=[],
    rationale="standard terms, no uncapped liability, short term",
    confidence=0.92,
)
"""What every fake model answers (the offline model's verdict on the low-risk sample)."""

INSTRUCTIONS = RISK_CLASSIFIER.system_prompt


def _pydantic_ai_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Pydantic AI's fake: call the output tool with the answer, as a model would."""
    tool = info.output_tools[0].name
    return ModelResponse(parts=[ToolCallPart(tool, ANSWER.model_dump(mode="json"))])


PYDANTIC_AI_AGENT: Agent[None, RiskAssessment] = Agent(
    FunctionModel(_pydantic_ai_model),
    name="bench_risk_classifier",
    output_type=RiskAssessment,
    instructions=INSTRUCTIONS,
    capabilities=[TemporalDurability()],
)
"""Pydantic AI: an ``Agent`` made durable by its ``TemporalDurability`` capability."""

OPENAI_AGENTS_AVAILABLE = find_spec("agents") is not None and (
    find_spec("temporalio.openai_agents") is not None
)
"""The OpenAI Agents integration left ``temporalio`` (1.35: ``temporalio-openai-agents``,
which pins ``openai-agents`` 0.22); without it ``peers.py`` skips that peer and says why."""


def openai_agents_agent() -> Any:
    """The OpenAI Agents SDK's agent (imported only when the integration is installed)."""
    from agents import Agent as OpenAIAgent

    return OpenAIAgent(
        name="bench_risk_classifier", instructions=INSTRUCTIONS, output_type=RiskAssessment
    )


def openai_agents_model() -> Any:
    """The OpenAI Agents SDK's fake: a ``TestModel`` answering the JSON output message."""
    from temporalio.openai_agents.testing import ResponseBuilders, TestModel

    text = json.dumps(ANSWER.model_dump(mode="json"))
    return TestModel(lambda: ResponseBuilders.output_message(text))
