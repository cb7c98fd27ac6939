"""The peers' workflows for ``peers.py``: one agent call each, on the same input and output
as Keel's ``BenchKeelAgentNode`` and ``BenchBareActivity`` (``bench_workflows.py``).

Each peer is used as its documentation says: Pydantic AI's agent runs in the workflow and
its ``TemporalDurability`` capability sends the model request to an activity; the OpenAI
Agents SDK's ``Runner.run`` runs in the workflow and the ``OpenAIAgentsPlugin`` sends the
model call to its ``invoke_model_activity``.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from peer_agents import PYDANTIC_AI_AGENT, openai_agents_agent

    from keel.scenarios.contract_review.contracts import RiskAssessment, RiskClassifierInput


def prompt_of(node_input: RiskClassifierInput) -> str:
    """The vendor agreement as the prompt (the fake models do not read it)."""
    return f"Classify the risk of this vendor agreement:\n{node_input.model_dump_json()}"


@workflow.defn(name="BenchPydanticAI")
class BenchPydanticAI:
    """One Pydantic AI agent run (one model request, in an activity)."""

    @workflow.run
    async def run(self, node_input: RiskClassifierInput) -> RiskAssessment:
        result = await PYDANTIC_AI_AGENT.run(prompt_of(node_input))
        return result.output


@workflow.defn(name="BenchOpenAIAgents")
class BenchOpenAIAgents:
    """One OpenAI Agents SDK run (one model call, in an activity)."""

    @workflow.run
    async def run(self, node_input: RiskClassifierInput) -> RiskAssessment:
        from agents import Runner

        result = await Runner.run(openai_agents_agent(), prompt_of(node_input))
        output = result.final_output
        return (
            output if isinstance(output, RiskAssessment) else RiskAssessment.model_validate(output)
        )
