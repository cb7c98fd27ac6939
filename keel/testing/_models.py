"""Model stand-ins: answers from a script, or from the test's own function."""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from keel.activities.providers.base import ModelReply, ModelRequest
from keel.errors import ProviderPermanentError

Answer = Mapping[str, Any] | str
"""One model answer: a JSON object (sent as its JSON text) or raw text, sent as is (to test
what happens when a model answers with something that is not JSON)."""

AnswerFunction = Callable[[ModelRequest], Answer | Awaitable[Answer]]


def _reply(answer: Answer, provider: str, model: str) -> ModelReply:
    text = answer if isinstance(answer, str) else json.dumps(dict(answer))
    return ModelReply(text=text, provider=provider, model=model)


def contract_name(request: ModelRequest) -> str:
    """The contract's name without its version (``risk-classifier@1`` -> ``risk-classifier``)."""
    return request.contract.partition("@")[0]


class ScriptedModel:
    """A model provider that answers each contract from its own script, in order.

    Every request is kept in ``requests``, so a test can check what the model was shown
    (the rendered prompt, the feedback of a retry). A call for a contract with no answer
    left fails permanently, naming the contract: the agent node records it as a failed call.

    Example:
        Low confidence first, then a good answer, to see the node retry::

            model = ScriptedModel({
                "expense-categorizer": [
                    {"category": "travel", "confidence": 0.2},
                    {"category": "travel", "confidence": 0.9},
                ],
            })

    Attributes:
        name: ``"scripted"`` (the ledger's ``provider``).
        model: ``"script-1"`` (the ledger's ``model``).
        requests: every request received, in order.
    """

    name = "scripted"
    model = "script-1"

    def __init__(self, script: Mapping[str, Sequence[Answer]]) -> None:
        """Build the model from its script.

        Args:
            script: contract name (``risk-classifier``, or ``risk-classifier@1`` for one
                version only) -> the answers to give, one per call.
        """
        self._script = {name: list(answers) for name, answers in script.items()}
        self.requests: list[ModelRequest] = []

    def remaining(self, contract: str) -> int:
        """How many answers are left for ``contract``."""
        return len(self._script.get(contract, []))

    async def complete(self, request: ModelRequest) -> ModelReply:
        """The next scripted answer for the request's contract.

        Raises:
            ProviderPermanentError: the script has no answer left for the contract.
        """
        self.requests.append(request)
        for key in (request.contract, contract_name(request)):
            answers = self._script.get(key)
            if answers:
                return _reply(answers.pop(0), self.name, self.model)
        given = sum(1 for r in self.requests if contract_name(r) == contract_name(request)) - 1
        raise ProviderPermanentError(
            f"ScriptedModel has no answer left for contract {request.contract} "
            f"(it gave {given}): add answers for {contract_name(request)!r} to the script",
            provider=self.name,
        )


class FunctionModel:
    """A model provider whose answers come from a function of the request.

    The function sees the whole ``ModelRequest`` (system and rendered prompt, schema,
    structured input, feedback, attempt numbers) and returns a JSON object or raw text; it
    may be async. To simulate a failing provider it raises a ``keel.errors.ProviderError``,
    e.g. ``ProviderRetryableError("overloaded", provider="function", status=503)``.

    Attributes:
        name: ``"function"`` (the ledger's ``provider``).
        model: the function's name (the ledger's ``model``).
        requests: every request received, in order.
    """

    name = "function"

    def __init__(self, answer: AnswerFunction, *, model: str | None = None) -> None:
        """Build the model around ``answer``.

        Args:
            answer: ``(request) -> dict | str``, or a coroutine function of the same shape.
            model: the model name to report; defaults to the function's ``__name__``.
        """
        self._answer = answer
        self.model = model or str(getattr(answer, "__name__", "function"))
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Whatever the function answers to ``request``."""
        self.requests.append(request)
        answer = self._answer(request)
        if inspect.isawaitable(answer):
            answer = await answer
        return _reply(answer, self.name, self.model)
