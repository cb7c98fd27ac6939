"""Keel's exceptions.

Two roots, as in pydantic-ai: one for misuse that the caller must fix, one for
failures at run time::

    KeelError
    ├── KeelUserError              misuse: fix the call, the input or the configuration
    │   ├── ContractNotFoundError
    │   ├── ContractConflictError  a published contract version cannot change
    │   └── ProviderConfigError    missing key, unknown KEEL_MODEL
    └── KeelRuntimeError           something failed while running
        └── ProviderError          a model provider call failed
            ├── ProviderRetryableError   rate limit, overload, 5xx, timeout
            └── ProviderPermanentError   invalid request (400, 404, 422)
                └── ProviderAuthError    the key is missing its rights or wrong (401, 403)

Activities translate ``ProviderError`` into Temporal ``ApplicationError`` with
``non_retryable`` and ``next_retry_delay`` set, so Temporal's retry policy owns
retries across attempts. None of these is the agent's answer: an agent node never turns
one into its business default or an ordinary escalation (``keel.contracts.agent_node.
SystemFailure`` says what to fix).
"""

from __future__ import annotations


class KeelError(Exception):
    """Root of every Keel exception."""


class KeelUserError(KeelError):
    """Misuse: the message says what to fix."""


class ContractNotFoundError(KeelUserError):
    """No contract is registered under the requested ``name@version``."""


class ContractConflictError(KeelUserError):
    """A different contract was registered under an already published version."""


class ProviderConfigError(KeelUserError):
    """The model provider cannot be built from the current settings."""


class KeelRuntimeError(KeelError):
    """A failure while running."""


class ProviderError(KeelRuntimeError):
    """A model provider call failed.

    Attributes:
        provider: provider name (``openai``, ``anthropic``, ``offline``).
        status: HTTP status if the failure came from an HTTP response.
    """

    retryable: bool = False

    def __init__(self, message: str, *, provider: str, status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status


class ProviderRetryableError(ProviderError):
    """Transient: rate limit (429), overload or server error (5xx), timeout.

    Attributes:
        retry_after: seconds the provider asked us to wait, if it said so.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after


class ProviderPermanentError(ProviderError):
    """Permanent: authentication or an invalid request. Retrying cannot help."""


class ProviderAuthError(ProviderPermanentError):
    """The provider refused the credentials (401) or their rights (403): fix the key.

    A provider may raise it directly; Keel also treats any ``ProviderPermanentError`` with
    status 401 or 403 as one.
    """
