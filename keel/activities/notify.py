"""The notify activity (``keel.notify.gate_event``): one gate event to one channel, once.

Each delivery goes through the side-effect record under the event's idempotency key
(execution, gate, event kind, channel; never the attempt):

* a retry after the record says ``performed`` sends nothing;
* a refused connection, a 5xx/408/429 reply (webhook) or a 4xx reply, refused connection or
  lost connection before DATA (SMTP) records ``not_performed``, and Temporal retries with
  backoff for up to a day (``keel.workflows.notify``), so a receiver that is down for hours
  is told once it is back;
* an attempt that died, or lost the connection, after the receiver may have had the
  request leaves the outcome unknown; the policy is ``resend``: the next attempt sends the
  same body with the same ``Keel-Delivery-Id`` (the same Message-ID for email), and a
  receiver that deduplicates by it shows it once. A notification missed is worse than one
  repeated under the same id, and neither webhooks nor SMTP can be asked what arrived.

Failures, as ``ApplicationError`` types: ``NotifyChannelUnknown``, ``NotifyMisconfigured``,
``WebhookRejected`` (a 4xx other than 408/429), ``SmtpAuthFailed``, ``SmtpRejected`` (5xx)
and ``SmtpTlsFailed`` are non-retryable (a person must fix the configuration);
``WebhookUnavailable``, ``SmtpUnavailable`` and ``EffectStoreUnavailable`` are retried.

Fault switch for tests: ``KEEL_FAULT_EXIT_AFTER_EFFECT=notify_gate_event`` kills the worker
right after a delivery is recorded, before the activity completes (as for ``send_email``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import smtplib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, timedelta
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from keel.activities.effects import EffectRecord, NotPerformed, open_effect_record
from keel.activities.tools.base import effect_errors
from keel.activities.tools.email import fault_exit_after_effect
from keel.contracts.email import message_id_for
from keel.contracts.links import inbox_link
from keel.contracts.notifications import (
    CHANNEL_NAME,
    DELIVERY_HEADER,
    NOTIFY_ACTIVITY,
    SIGNATURE_HEADER,
    Channel,
    EmailChannel,
    GateEvent,
    NotificationSent,
    WebhookChannel,
    event_body,
    signature_header,
    slack_body,
    summary_lines,
)
from keel.errors import KeelUserError
from keel.settings import KeelSettings

EFFECT_TOOL = "notify_gate_event"
"""The ``tool`` of notifications in the side-effect record."""
LINK_LIFETIME = timedelta(days=7)
"""A link is valid this long after its event, and at least a day past the gate's deadline."""
HEARTBEAT_EVERY = 2.0
_CHANNELS: TypeAdapter[dict[str, Channel]] = TypeAdapter(dict[str, Channel])


def notify_channels(settings: KeelSettings) -> dict[str, Channel]:
    """The channels ``settings`` define: ``KEEL_NOTIFY_CHANNELS`` and the channels of
    ``KEEL_NOTIFY_CHANNELS_FILE`` (a name in both is an error).

    Raises:
        KeelUserError: the file is missing or invalid, a name is invalid or defined twice.
    """
    channels = dict(settings.notify_channels)
    path = settings.notify_channels_file
    if path is not None:
        try:
            from_file = _CHANNELS.validate_json(path.read_bytes())
        except OSError as err:
            raise KeelUserError(f"notification channels {path}: {err.strerror or err}") from None
        except ValidationError as err:
            raise KeelUserError(f"notification channels {path}: {_first_error(err)}") from None
        twice = sorted(set(channels) & set(from_file))
        if twice:
            raise KeelUserError(
                f"notification channels {twice} are defined both in KEEL_NOTIFY_CHANNELS and "
                f"in {path}: keep one"
            )
        channels |= from_file
    bad = sorted(name for name in channels if re.fullmatch(CHANNEL_NAME, name) is None)
    if bad:
        raise KeelUserError(
            f"notification channel names {bad} must be lower-case letters, digits, - and _ "
            "(starting with a letter)"
        )
    return channels


def _first_error(err: ValidationError) -> str:
    first = err.errors(include_url=False)[0]
    return f"{'.'.join(str(p) for p in first['loc']) or '(file)'}: {first['msg']}"


class GateNotifications:
    """The notify activity over a worker's channels; register ``activities()``.

    Args:
        settings: the worker's settings (channels, inbox URL, the record).
        link_key: reads the key that signs inbox links (``keel.workers.link_key``), at the
            first delivery.
        channels: the channels, when not those ``settings`` define (tests).
        effects: opens the side-effect record for one delivery (default: the one
            ``settings`` name); opened per delivery and closed after, since notifications
            are few and a worker then holds no connection for them between gates.
    """

    def __init__(
        self,
        settings: KeelSettings,
        *,
        link_key: Callable[[], bytes],
        channels: dict[str, Channel] | None = None,
        effects: Callable[[], EffectRecord] | None = None,
    ) -> None:
        self.settings = settings
        self.channels = notify_channels(settings) if channels is None else channels
        self._effects = effects or (lambda: open_effect_record(settings))
        self._read_link_key = link_key
        self._link_key: bytes | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({sorted(self.channels)})"

    def activities(self) -> list[Callable[..., Any]]:
        """The activities to register on a worker."""
        return [self.notify_gate_event]

    @activity.defn(name=NOTIFY_ACTIVITY)
    async def notify_gate_event(self, event: GateEvent) -> NotificationSent:
        """Deliver ``event`` to its channel once (see the module docstring)."""
        channel = self.channels.get(event.channel)
        if channel is None:
            raise ApplicationError(
                f"gate {event.gate!r} names notification channel {event.channel!r}, which this "
                f"worker does not define (defined: {sorted(self.channels) or 'none'}); set "
                "KEEL_NOTIFY_CHANNELS or KEEL_NOTIFY_CHANNELS_FILE",
                type="NotifyChannelUnknown",
                non_retryable=True,
            )
        link = self._link(event)
        if isinstance(channel, WebhookChannel):
            act, provider_ref = _webhook(channel, event, link), event.delivery_id
        else:
            act, provider_ref = _email(channel, event, link), message_id_for(event.idempotency_key)
        async with self._record() as effects, _heartbeating():
            with effect_errors():
                receipt, _ = await effects.perform_once(
                    event.idempotency_key,
                    EFFECT_TOOL,
                    event.model_dump(mode="json"),
                    act,
                    policy="resend",
                    provider_ref=provider_ref,
                )
        if not receipt.replayed:
            fault_exit_after_effect(EFFECT_TOOL)
        return NotificationSent(
            channel=event.channel,
            kind=event.kind,
            delivery_id=event.delivery_id,
            provider_id=receipt.provider_id,
            replayed=receipt.replayed,
            resent_after_unknown=receipt.unknown_resolved_by == "resend",
        )

    def _link(self, event: GateEvent) -> str:
        if self._link_key is None:
            try:
                self._link_key = self._read_link_key()
            except KeelUserError as err:
                raise ApplicationError(str(err), type="NotifyMisconfigured") from None
        expires = event.occurred_at + LINK_LIFETIME
        if event.deadline is not None:
            expires = max(expires, event.deadline + timedelta(days=1))
        return inbox_link(
            self.settings.inbox_url,
            event.workflow_id,
            event.gate,
            self._link_key,
            expires=expires.astimezone(UTC),
        )

    @contextlib.asynccontextmanager
    async def _record(self) -> AsyncIterator[EffectRecord]:
        effects = self._effects()
        try:
            yield effects
        finally:
            await effects.aclose()


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat while a delivery runs, so an attempt whose worker died is retried after the
    heartbeat timeout rather than the whole start-to-close timeout."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY)

    task = asyncio.create_task(beat()) if activity.in_activity() else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


Act = Callable[[str], Any]


def _webhook(channel: WebhookChannel, event: GateEvent, link: str) -> Act:
    body = event_body(event, link) if channel.format == "json" else slack_body(event, link)
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    secret = channel.secret.get_secret_value()

    async def act(key: str) -> tuple[str, dict[str, Any]]:
        import httpx  # only a worker that delivers a webhook loads it (worker memory)

        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Keel-Notify/1",
            DELIVERY_HEADER: event.delivery_id,
            SIGNATURE_HEADER: signature_header(secret, raw, int(time.time())),
        }
        try:
            async with httpx.AsyncClient(timeout=channel.timeout_seconds) as client:
                response = await client.post(channel.url, content=raw, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise NotPerformed(_unavailable(channel, err)) from err
        except httpx.HTTPError as err:  # sent, maybe received: the outcome is unknown
            raise _unavailable(channel, err) from err
        status = response.status_code
        if 200 <= status < 300:
            return event.delivery_id, {"status": status}
        message = f"webhook {_where(channel)} answered {status} to delivery {event.delivery_id}"
        if status in (408, 429) or status >= 500:
            raise NotPerformed(ApplicationError(message, type="WebhookUnavailable"))
        raise NotPerformed(ApplicationError(message, type="WebhookRejected", non_retryable=True))

    return act


def _where(channel: WebhookChannel) -> str:
    """The endpoint without its path and query: a Slack-style webhook URL's path is its
    credential, and errors end up in history and logs."""
    url = urlsplit(channel.url)
    return f"{url.scheme}://{url.hostname}{f':{url.port}' if url.port else ''}"


def _unavailable(channel: WebhookChannel, err: Exception) -> ApplicationError:
    return ApplicationError(
        f"webhook {_where(channel)} unreachable: {type(err).__name__}: {err}"[:500],
        type="WebhookUnavailable",
    )


def _email(channel: EmailChannel, event: GateEvent, link: str) -> Act:
    recipients = channel.recipients(event.reviewers, event.roles)
    if not recipients:
        raise ApplicationError(
            f"email channel {event.channel!r} has no address for gate {event.gate!r} (its "
            f"reviewers {event.reviewers} and roles {event.roles} have none in 'addresses', "
            "and 'to' is empty)",
            type="NotifyMisconfigured",
            non_retryable=True,
        )

    async def act(key: str) -> tuple[str, dict[str, Any]]:
        message = email_message(channel, event, link, recipients, message_id_for(key))
        reply = await asyncio.to_thread(smtp_deliver, channel, recipients, message)
        return message_id_for(key), {"smtp_response": reply, "recipients": recipients}

    return act


def email_message(
    channel: EmailChannel, event: GateEvent, link: str, recipients: list[str], message_id: str
) -> EmailMessage:
    """The email of ``event``: the summary and the signed link; its Message-ID given."""
    headline, *rest = summary_lines(event)
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = channel.sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = f"[Keel] {headline}"
    message["Date"] = format_datetime(event.occurred_at.astimezone(UTC))
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n".join([*rest, "", f"Open it in the inbox: {link}", ""]))
    return message


def smtp_deliver(channel: EmailChannel, recipients: list[str], message: EmailMessage) -> str:
    """One SMTP exchange (blocking): STARTTLS and AUTH as configured; the reply to DATA.

    Raises:
        NotPerformed: nothing was sent (refused, unreachable, TLS or AUTH failed).
        ApplicationError: the connection broke during DATA (the server may have the
            message: the outcome is unknown).
    """
    where = f"SMTP {channel.host}:{channel.port}"
    in_data = False
    try:
        with smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_seconds) as smtp:
            smtp.ehlo()
            if channel.starttls:
                if not smtp.has_extn("starttls"):
                    raise _smtp_error(
                        f"{where} does not offer STARTTLS (set starttls false only for a "
                        "local relay)",
                        "SmtpTlsFailed",
                    )
                smtp.starttls(context=ssl.create_default_context(cafile=channel.ca_file))
                smtp.ehlo()
            if channel.username:
                password = channel.password.get_secret_value() if channel.password else ""
                smtp.login(channel.username, password)
            smtp.mail(channel.sender)
            for recipient in recipients:
                code, text = smtp.rcpt(recipient)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({recipient: (code, text)})
            in_data = True
            code, text = smtp.data(message.as_bytes())
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
            return f"{code} {_decoded(text)}"
    except NotPerformed:
        raise
    except smtplib.SMTPAuthenticationError as err:
        raise _smtp_error(
            f"{where} refused the login of {channel.username!r}: {err.smtp_code} "
            f"{_decoded(err.smtp_error)} (check the channel's username and "
            "password)",
            "SmtpAuthFailed",
        ) from err
    except smtplib.SMTPNotSupportedError as err:
        raise _smtp_error(f"{where}: {err} (AUTH needs STARTTLS here?)", "SmtpAuthFailed") from err
    except ssl.SSLError as err:
        detail = ": ".join(
            str(part) for part in (err.reason, getattr(err, "verify_message", None)) if part
        )
        raise _smtp_error(
            f"{where}: TLS failed: {detail or err} (is ca_file the server's CA?)",
            "SmtpTlsFailed",
        ) from err
    except smtplib.SMTPRecipientsRefused as err:
        refused = sorted(err.recipients)
        raise _smtp_error(f"{where} refused recipients {refused}", "SmtpRejected") from err
    except smtplib.SMTPResponseException as err:
        said = f"{where} replied {err.smtp_code} {_decoded(err.smtp_error)}"
        if 400 <= err.smtp_code < 500:
            raise NotPerformed(ApplicationError(said, type="SmtpUnavailable")) from err
        raise _smtp_error(said, "SmtpRejected") from err
    except OSError as err:  # refused, reset, timed out, disconnected
        if in_data:  # the server may have the whole message
            raise ApplicationError(
                f"{where} lost during DATA (it may have the message): {err!r}",
                type="SmtpUnavailable",
            ) from err
        raise NotPerformed(
            ApplicationError(f"{where} unavailable: {err!r}", type="SmtpUnavailable")
        ) from err


def _decoded(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def _smtp_error(message: str, kind: str) -> NotPerformed:
    return NotPerformed(ApplicationError(message, type=kind, non_retryable=True))
