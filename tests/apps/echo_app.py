"""Echo review: a tiny Keel app of the tests' own, outside ``keel``.

An agent (an offline rule) echoes a message back with a word count, the workflow records an
``EchoNoted`` event of the app's own type and waits at gate ``echo-review`` for
``echo.reviewer``. Served with ``keel worker --app tests.apps.echo_app``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keel.workers.app import App, Entry
from tests.apps.echo_contracts import ECHO_CONTRACT, EchoInput, EchoNoted
from tests.apps.echo_workflow import EchoReviewWorkflow, TamperedLedgerWorkflow


def echo_rule(node_input: Mapping[str, Any], feedback: Sequence[str]) -> dict[str, Any]:
    """The offline answer: the message itself."""
    message = str(node_input["message"])
    return {"echo": message, "words": len(message.split()), "confidence": 0.99}


APP = App(
    name="test-echo",
    workflows=[EchoReviewWorkflow, TamperedLedgerWorkflow],
    entries=[Entry("echo", EchoReviewWorkflow, EchoInput)],
    contracts=[ECHO_CONTRACT],
    offline_rules={ECHO_CONTRACT.name: echo_rule},
    event_types=[EchoNoted],
)
