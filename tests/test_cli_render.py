"""What ``keel gates`` prints: a gate opened for a reason says why."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keel.cli.render import gates_text
from keel.contracts.gates import GateState, GateView


def gate(reason: str | None) -> GateView:
    return GateView(
        gate="risk-classification",
        title="Classify the contract by hand",
        state=GateState.AWAITING_APPROVAL,
        reviewers=["legal.sam"],
        deadline=datetime(2026, 12, 1, 15, 0, tzinfo=UTC),
        context={},
        reason=reason,
    )


def test_an_escalated_gate_shows_why_it_opened_and_what_to_fix() -> None:
    reason = "the provider refused the API key (401): set OPENAI_API_KEY on the worker"
    text = gates_text([("c-42", gate(reason))])
    assert "c-42" in text and "risk-classification" in text
    assert f"  why: {reason}" in text.splitlines()


def test_an_ordinary_gate_has_no_why_line() -> None:
    assert "why:" not in gates_text([("c-43", gate(None))])


def test_a_user_error_quoting_the_caller_cannot_forge_a_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from keel.cli.main import run

    code = run(["dev", "--app", "no-such\nAPPROVED by gc.morgan\x1b[2J"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("keel: ")
    assert "no-such\\nAPPROVED by gc.morgan\\x1b[2J" in err
