"""No secret leaves an activity in a failure: every activity's error text is scrubbed of
anything key-shaped (``keel.contracts.secrets``) and of the secrets this worker is configured
with, before Temporal stores it in history and before the workflow can copy it to the
ledger. Providers' own errors are scrubbed where they are translated; this catches the rest
(tools, the side-effect record's database, an app's activities)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from temporalio.exceptions import ApplicationError, FailureError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from keel.contracts.secrets import scrub_secrets, scrub_value
from keel.settings import KeelSettings


def configured_secrets(settings: KeelSettings) -> list[str]:
    """The secret values ``settings`` holds: API keys and any other ``SecretStr``, and the
    password of the database URL."""
    found = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if hasattr(value, "get_secret_value"):
            found.append(str(value.get_secret_value()))
    if settings.database_url:
        password = urlsplit(settings.database_url).password
        if password:
            found.append(password)
    return [secret for secret in found if secret]


class ScrubbingInterceptor(Interceptor):
    """Scrubs every activity failure of this worker (see the module docstring)."""

    def __init__(self, known: Sequence[str]) -> None:
        self.known = list(known)

    def __repr__(self) -> str:
        return f"ScrubbingInterceptor({len(self.known)} known secrets)"

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap every activity."""
        return _ScrubbingActivity(next, self.known)


class _ScrubbingActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, known: list[str]) -> None:
        super().__init__(next)
        self.known = known

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except ApplicationError as err:
            raise scrubbed_application_error(err, self.known) from None
        except FailureError:
            raise  # cancellation and the SDK's own signals carry no caller text
        except Exception as err:
            message = scrub_secrets(str(err), self.known)
            raise ApplicationError(message, type=type(err).__name__) from None


def scrubbed_application_error(err: ApplicationError, known: list[str]) -> ApplicationError:
    """``err`` with its message and details scrubbed, its type, retryability and retry delay
    kept (and its cause dropped: a cause is where a raw secret hides)."""
    return ApplicationError(
        scrub_secrets(err.message, known),
        *(scrub_value(detail, known) for detail in err.details),
        type=err.type,
        non_retryable=err.non_retryable,
        next_retry_delay=err.next_retry_delay,
        category=err.category,
    )
