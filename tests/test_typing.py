"""Agent nodes are typed by their contract: ``AgentContract(input_model=X, output_model=Y)`` is an
``AgentContract[X, Y]``, and ``AgentNodes.run`` under it settles on ``AgentOutcome[Y]``, so
``outcome.output`` is a ``Y | None`` with no cast (checked with mypy and the pydantic plugin, as
the project checks itself)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

PREAMBLE = """
from __future__ import annotations

from pydantic import BaseModel

from keel import AgentContract, AgentOutcome, KeelWorkflow, UseDefault


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    verdict: str
    confidence: float


class Other(BaseModel):
    amount: int


ANSWER = AgentContract(
    name="typed-answer",
    version=1,
    description="Answer a question.",
    input_model=Question,
    output_model=Answer,
    system_prompt="Answer.",
    prompt_template="$text",
    on_exhausted=UseDefault(output={"verdict": "unknown", "confidence": 1.0}, reason="none"),
)


class Flow(KeelWorkflow):
    async def ask(self) -> AgentOutcome[Answer]:
        outcome = await self.agents.run("ask", ANSWER, Question(text="why?"))
"""


SNIPPETS = {
    "typed_use": """        reveal_type(ANSWER)
        reveal_type(outcome.output)
        if outcome.output is not None:
            verdict: str = outcome.output.verdict
        return outcome
""",
    "wrong_output": """        wrong: Other | None = outcome.output
        if outcome.output is not None:
            outcome.output.amount
        return outcome
""",
    "wrong_input": """        await self.agents.run("ask", ANSWER, Other(amount=1))
        return outcome
""",
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """mypy's report on each snippet (the preamble plus its body in ``Flow.ask``), from one
    strict run with the project's configuration."""
    folder = tmp_path_factory.mktemp("typed")
    paths = []
    for name, body in SNIPPETS.items():
        path = folder / f"{name}.py"
        path.write_text(PREAMBLE + body)
        paths.append(str(path))
    stdout, stderr, _ = api.run(
        ["--config-file", str(PYPROJECT), "--cache-dir", str(folder / "cache"), "--strict", *paths]
    )
    lines = (stdout + stderr).splitlines()
    return {name: "\n".join(ln for ln in lines if f"{name}.py:" in ln) for name in SNIPPETS}


def test_the_outcome_is_typed_by_the_contracts_output_model(reports: dict[str, str]) -> None:
    report = reports["typed_use"]
    assert 'Revealed type is "keel.contracts.agent.AgentContract[typed_use.Question, ' in report
    assert 'Revealed type is "typed_use.Answer | None"' in report
    assert "error:" not in report, report  # no cast needed anywhere


def test_using_the_output_as_another_model_is_a_type_error(reports: dict[str, str]) -> None:
    report = reports["wrong_output"]
    assert 'Incompatible types in assignment (expression has type "Answer | None", variable ' in (
        report
    )
    assert '"Answer" has no attribute "amount"' in report


def test_an_input_of_another_model_is_a_type_error(reports: dict[str, str]) -> None:
    report = reports["wrong_input"]
    assert 'error: Cannot infer value of type parameter "In" of "run" of "AgentNodes"' in report
