"""Whether real model providers may send requests: ``keel.testing`` blocks them in tests.

The switch lives here, beside the providers that obey it, so the engine never imports the
test kit; ``keel.testing`` reads and sets it (``allow_model_requests``, the pytest plugin).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from keel.errors import ProviderPermanentError

ALLOW_MODEL_REQUESTS = True
"""Whether the OpenAI and Anthropic providers may send requests. The pytest plugin sets it
to False for the test session; ``allow_model_requests()`` lifts it for a block."""


class ModelRequestsBlocked(ProviderPermanentError):
    """A real model provider was called while ``ALLOW_MODEL_REQUESTS`` is False.

    Permanent, so the agent node records the failure and does not retry it.
    """


def check_model_requests_allowed(provider: str) -> None:
    """Refuse a real model call while requests are blocked (the providers call this first).

    Args:
        provider: the provider about to call out (``"openai"``, ``"anthropic"``).

    Raises:
        ModelRequestsBlocked: ``ALLOW_MODEL_REQUESTS`` is False.
    """
    if not ALLOW_MODEL_REQUESTS:
        raise ModelRequestsBlocked(
            f"real {provider} model requests are blocked in tests "
            "(keel.testing.ALLOW_MODEL_REQUESTS is False): use keel.testing.ScriptedModel, "
            "FunctionModel or the offline model, or opt in with "
            "keel.testing.allow_model_requests() / @pytest.mark.allow_model_requests",
            provider=provider,
        )


@contextmanager
def allow_model_requests(allow: bool = True) -> Iterator[None]:
    """Set ``ALLOW_MODEL_REQUESTS`` to ``allow`` for the block, then restore it.

    Args:
        allow: True lets real providers call out (e.g. to a local fake server); False
            blocks them.
    """
    global ALLOW_MODEL_REQUESTS
    before = ALLOW_MODEL_REQUESTS
    ALLOW_MODEL_REQUESTS = allow
    try:
        yield
    finally:
        ALLOW_MODEL_REQUESTS = before
