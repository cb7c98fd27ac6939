"""The ``send_email`` tool as a Temporal activity (``keel.tool.send_email``), over SMTP.

The send runs through the side-effect record with the call's idempotency key, and the
Message-ID header is derived from that key (``message_id_for``): the provider id recorded for
the effect is the Message-ID, and a receiver that sees the same Message-ID twice knows it is
one email. SMTP has no idempotency keys and no way to ask whether a message arrived, so when
an attempt finds that an earlier one may have sent without recording it (the worker died
after the server's 250, or the connection broke while the server had the whole message), the
sender follows its policy (``unknown_outcome``, from ``KEEL_SMTP_UNKNOWN_OUTCOME``):

* ``escalate`` (the default, ``SEND_EMAIL.unknown_outcome``): the activity fails with the
  non-retryable ``EffectOutcomeUnknown``; a person confirms whether the email went out and
  the workflow resolves the record (``keel.tool.send_email.resolve_outcome``);
* ``resend``: the email is sent again with the same Message-ID, for receivers that
  deduplicate by Message-ID.

A failure before the server could have accepted the message (refused connection, a 4xx or
5xx reply) records ``not_performed``, and the retry sends.

Errors (``ApplicationError`` types):

* ``SmtpUnavailable`` (retryable): connection refused or reset, timeout, server gone.
* ``SmtpTransientFailure`` (retryable): a 4xx reply.
* ``SmtpRejected`` (non-retryable): a 5xx reply, e.g. an unknown recipient.
* ``EffectOutcomeUnknown`` (non-retryable), ``EffectStoreUnavailable`` (retryable): see
  ``keel.activities.tools.base.effect_errors``.
* ``InvalidToolInput``, ``IdempotencyKeyConflict`` (non-retryable).

Fault switch for tests and demos: ``KEEL_FAULT_EXIT_AFTER_EFFECT=send_email`` (a
comma-separated list of tool names) makes the process kill itself with SIGKILL right after
the effect is recorded as performed, before the activity returns: the SMTP server has the
message, Temporal never hears that the attempt finished, and another worker retries it.
Never set it in production.
"""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from keel.activities.effects import EffectRecord, NotPerformed, open_effect_record
from keel.activities.tools.base import effect_activities, effect_errors, tool_input
from keel.contracts.effects import UnknownOutcomePolicy
from keel.contracts.email import SEND_EMAIL, SendEmailInput, SendEmailOutput, message_id_for
from keel.contracts.tools import ToolCall, ToolResult, tool_activity_name
from keel.settings import KeelSettings

FAULT_EXIT_AFTER_EFFECT_ENV = "KEEL_FAULT_EXIT_AFTER_EFFECT"
"""Test/demo fault switch: tool names whose activity SIGKILLs its process once performed."""


class SmtpFailure(Exception):
    """An SMTP exchange that did not end with the message accepted."""

    def __init__(self, message: str, *, code: int | None = None, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.maybe_sent = maybe_sent
        """The exchange broke during DATA without a reply: the server may have the message."""

    @property
    def permanent(self) -> bool:
        """Whether retrying cannot help (the server refused the message for good)."""
        return self.code is not None and 500 <= self.code < 600


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def build_message(
    args: SendEmailInput, *, sender: str, message_id: str, date: datetime
) -> EmailMessage:
    """The email of ``args``, with its deterministic Message-ID."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = sender
    message["To"] = args.to
    message["Subject"] = args.subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    if args.in_reply_to:
        message["In-Reply-To"] = args.in_reply_to
        message["References"] = args.in_reply_to
    message.set_content(args.body)
    return message


def smtp_send(
    host: str, port: int, timeout: float, sender: str, to: str, message: EmailMessage
) -> str:
    """One SMTP exchange (blocking); returns the server's reply to DATA.

    Raises:
        SmtpFailure: the server refused (``code`` set) or could not be reached (``code`` None;
            ``maybe_sent`` when the exchange broke during DATA, after which the server may
            have accepted the message).
    """

    def expect(stage: str, reply: tuple[int, bytes], accepted: tuple[int, ...]) -> str:
        code, text = reply
        if code not in accepted:
            raise SmtpFailure(f"SMTP {stage} refused: {code} {_text(text)}", code=code)
        return f"{code} {_text(text)}"

    in_data = False
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            expect("EHLO", smtp.ehlo(), (250,))
            expect("MAIL FROM", smtp.mail(sender), (250,))
            expect("RCPT TO", smtp.rcpt(to), (250, 251))
            in_data = True
            return expect("DATA", smtp.data(message.as_bytes()), (250,))
    except SmtpFailure:
        raise
    except smtplib.SMTPResponseException as err:
        raise SmtpFailure(
            f"SMTP server replied {err.smtp_code} {_text(err.smtp_error)}", code=err.smtp_code
        ) from err
    except OSError as err:  # refused, reset, timed out, disconnected (SMTPException too)
        where = "during DATA, after which it may have the message" if in_data else "unavailable"
        raise SmtpFailure(
            f"SMTP server {host}:{port} {where}: {err!r}", maybe_sent=in_data
        ) from err


def fault_exit_after_effect(tool: str) -> None:
    """SIGKILL this process if ``KEEL_FAULT_EXIT_AFTER_EFFECT`` names ``tool`` (tests, demos)."""
    names = {n.strip() for n in os.environ.get(FAULT_EXIT_AFTER_EFFECT_ENV, "").split(",")}
    if tool in names:
        print(
            f"keel fault: {FAULT_EXIT_AFTER_EFFECT_ENV}={tool}: killing worker pid {os.getpid()} "
            "after the effect was performed, before the activity completes",
            file=sys.stderr,
            flush=True,
        )
        os.kill(os.getpid(), signal.SIGKILL)


class EmailSender:
    """The ``send_email`` activity; register ``activities()`` on a worker, ``aclose()`` at the
    end.

    Args:
        effects: the shared side-effect record.
        host, port: the SMTP server (plain SMTP, no TLS or AUTH: a local relay or a test sink).
        sender: the From address (and the envelope sender).
        timeout: seconds for connecting and for each SMTP reply.
        unknown_outcome: ``escalate`` (a person confirms) or ``resend`` (the receiver
            deduplicates by Message-ID); see the module docstring.
    """

    def __init__(
        self,
        effects: EffectRecord,
        *,
        host: str,
        port: int,
        sender: str,
        timeout: float = 20.0,
        unknown_outcome: UnknownOutcomePolicy = SEND_EMAIL.unknown_outcome,
    ) -> None:
        if unknown_outcome == "lookup":
            raise ValueError("SMTP cannot look a message up: use 'escalate' or 'resend'")
        self.effects = effects
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout = timeout
        self.unknown_outcome: UnknownOutcomePolicy = unknown_outcome

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host}:{self.port}, sender={self.sender!r})"

    @classmethod
    def open(
        cls,
        settings: KeelSettings,
        *,
        host: str = "127.0.0.1",
        port: int = 25,
        sender: str = "support@keel.example",
        timeout: float = 20.0,
    ) -> EmailSender:
        """The sender over the side-effect record of ``settings`` (and its unknown-outcome
        policy, ``KEEL_SMTP_UNKNOWN_OUTCOME``)."""
        return cls(
            open_effect_record(settings),
            host=host,
            port=port,
            sender=sender,
            timeout=timeout,
            unknown_outcome=settings.smtp_unknown_outcome,
        )

    def activities(self) -> list[Callable[..., Any]]:
        """The activities to register on a worker: the send, and its record and resolve."""
        return [self.send_email, *effect_activities(SEND_EMAIL.name, self.effects)]

    async def aclose(self) -> None:
        """Close the side-effect record."""
        await self.effects.aclose()

    @activity.defn(name=tool_activity_name(SEND_EMAIL.name))
    async def send_email(self, call: ToolCall) -> ToolResult:
        """Send one email once per idempotency key, through the side-effect record."""
        args = tool_input(SEND_EMAIL, SendEmailInput, call)

        async def perform(key: str) -> tuple[str, dict[str, Any]]:
            message_id = message_id_for(key)
            message = build_message(
                args, sender=self.sender, message_id=message_id, date=datetime.now(UTC)
            )
            try:
                reply = await asyncio.to_thread(
                    smtp_send, self.host, self.port, self.timeout, self.sender, args.to, message
                )
            except SmtpFailure as err:
                if err.permanent:
                    failure = ApplicationError(
                        str(err), {"code": err.code}, type="SmtpRejected", non_retryable=True
                    )
                else:
                    kind = "SmtpUnavailable" if err.code is None else "SmtpTransientFailure"
                    failure = ApplicationError(str(err), {"code": err.code}, type=kind)
                failure.__cause__ = err
                if err.maybe_sent:  # the record keeps the intent: the retry's outcome is unknown
                    raise failure from err
                raise NotPerformed(failure) from err
            output = SendEmailOutput(
                message_id=message_id, accepted_at=datetime.now(UTC), smtp_response=reply
            )
            return message_id, output.model_dump(mode="json")

        with effect_errors():
            receipt, output = await self.effects.perform_once(
                call.idempotency_key,
                SEND_EMAIL.name,
                args.model_dump(mode="json"),
                perform,
                policy=self.unknown_outcome,
                provider_ref=message_id_for(call.idempotency_key),
            )
        if not receipt.replayed:
            fault_exit_after_effect(SEND_EMAIL.name)
        return ToolResult(tool=SEND_EMAIL.name, output=output, effect=receipt)


def email_tool_activities(
    settings: KeelSettings, *, host: str, port: int, sender: str
) -> tuple[list[Callable[..., Any]], Callable[[], Awaitable[None]]]:
    """The email activity for a worker, and the coroutine function that closes it."""
    tools = EmailSender.open(settings, host=host, port=port, sender=sender)
    return tools.activities(), tools.aclose
