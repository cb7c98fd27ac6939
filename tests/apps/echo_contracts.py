"""Models, contract, gate and ledger event type of the echo app (``tests.apps.echo_app``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from keel.contracts.agent import AgentContract, UseDefault
from keel.contracts.gates import GateSpec
from keel.contracts.ledger import EventBase, LedgerEvent

WORKFLOW_TYPE = "TestEchoReview"


class EchoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=500)
    title: str = "echo"


class EchoAnswer(BaseModel):
    echo: str
    words: int
    confidence: float = Field(ge=0.0, le=1.0)


class EchoNoted(EventBase):
    """The app's own ledger event."""

    type: Literal["EchoNoted"] = "EchoNoted"
    words: int
    echo: str

    def describe(self) -> str:
        return f"echoed {self.words} word(s) back: {self.echo!r}"


class EchoResult(BaseModel):
    outcome: str
    decided_by: str
    ledger: list[LedgerEvent]
    ledger_head: str


ECHO_CONTRACT = AgentContract(
    name="test-echo",
    version=1,
    description="Echo a message back, with its word count.",
    input_model=EchoInput,
    output_model=EchoAnswer,
    system_prompt="Repeat the message and count its words.",
    prompt_template="Message: $message",
    time_budget=timedelta(seconds=10),
    on_exhausted=UseDefault(output={"echo": "", "words": 0, "confidence": 1.0}, reason="no echo"),
)

ECHO_GATE = GateSpec(
    name="echo-review",
    title="Check the echo",
    reviewers=("echo.reviewer",),
    sla=timedelta(hours=1),
)
