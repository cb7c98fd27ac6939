"""Model providers: offline (rules), OpenAI (and compatible servers), Anthropic.

``build_provider`` turns ``KEEL_MODEL`` into a provider; clients are built with
``max_retries=0`` because Temporal's retry policy owns retries across attempts.
"""

from __future__ import annotations

from keel.activities.providers.base import ModelProvider, ModelReply, ModelRequest
from keel.errors import ProviderConfigError
from keel.settings import KeelSettings


def build_provider(settings: KeelSettings) -> ModelProvider:
    """The provider named by ``settings.resolved_model``."""
    spec = settings.resolved_model
    family, _, model = spec.partition(":")
    if family == "offline":
        from keel.offline.provider import OfflineProvider

        return OfflineProvider(settings.offline_faults)
    if family == "openai" and model:
        from keel.activities.providers.openai_provider import OpenAIProvider

        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIProvider(model, api_key=key, base_url=settings.openai_base_url)
    if family == "anthropic" and model:
        from keel.activities.providers.anthropic_provider import AnthropicProvider

        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        return AnthropicProvider(model, api_key=key, base_url=settings.anthropic_base_url)
    raise ProviderConfigError(
        f"KEEL_MODEL={spec!r} is not understood: use 'offline', 'openai:<model>' "
        "(e.g. openai:gpt-4o-mini) or 'anthropic:<model>' (e.g. anthropic:claude-sonnet-4-6)"
    )


async def close_provider(provider: ModelProvider) -> None:
    """Close the provider's HTTP client, if it has one."""
    aclose = getattr(provider, "aclose", None)
    if aclose is not None:
        await aclose()


__all__ = [
    "ModelProvider",
    "ModelReply",
    "ModelRequest",
    "build_provider",
    "close_provider",
]
