"""Email notifications over real STARTTLS and AUTH, against the SMTP sink.

The sink offers STARTTLS with a certificate it made at start and requires AUTH after it, so
a message it keeps went through both; each failure names what to fix and is not retried.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from keel.activities.effects import EffectStatus, SqliteEffectRecord
from keel.activities.notify import GateNotifications
from keel.contracts.email import message_id_for
from keel.contracts.notifications import EmailChannel
from keel.settings import KeelSettings
from keel.workers.link_key import load_link_key
from keel.workers.smtp_sink import ReceivedMail, SmtpSink
from tests.test_effects_db_cut import HookedSink
from tests.test_notify_webhooks import assert_signed_link, gate_event

USER, PASSWORD = "keel-notify", "correct horse battery"


def mail_channel(sink: SmtpSink, **changes: Any) -> dict[str, Any]:
    return {
        "kind": "email",
        "host": "127.0.0.1",
        "port": sink.port,
        "ca_file": str(sink.ca_file) if sink.tls else None,
        "username": USER,
        "password": PASSWORD,
        "sender": "keel@keel.example",
        "to": ["legal-team@keel.example"],
        "addresses": {"general-counsel": ["gc@keel.example"], "nobody": ["x@keel.example"]},
    } | changes


def notifications(tmp_path: Path, channel: dict[str, Any]) -> GateNotifications:
    settings = KeelSettings(
        data_dir=tmp_path,
        inbox_url="https://inbox.example",
        notify_channels={"legal-mail": channel},
    )
    return GateNotifications(settings, link_key=lambda: load_link_key(settings))


@pytest.fixture
def sink() -> Any:
    with SmtpSink(tls=True, credentials={USER: PASSWORD}) as sink:
        yield sink


async def test_an_event_is_mailed_once_through_starttls_and_auth(
    sink: SmtpSink, tmp_path: Path
) -> None:
    notify = notifications(tmp_path, mail_channel(sink))
    event = gate_event(channel="legal-mail")
    first = await ActivityEnvironment().run(notify.notify_gate_event, event)
    again = await ActivityEnvironment().run(notify.notify_gate_event, event)
    (mail,) = sink.messages
    assert (first.replayed, again.replayed) == (False, True)
    assert mail.message_id == first.provider_id == message_id_for(event.idempotency_key)
    assert mail.rcpt_tos == ["legal-team@keel.example", "gc@keel.example"]
    assert mail.subject == "[Keel] Gate waiting for review: Approve the vendor agreement"
    assert "Deadline: 2026-12-01 20:00 UTC" in mail.body
    (link,) = [line.split(": ", 1)[1] for line in mail.body.splitlines() if "inbox:" in line]
    assert_signed_link(link, tmp_path, "contract-review-7", "legal")
    assert ("Auto-Submitted", "auto-generated") in mail.headers


async def test_a_lost_answer_to_data_resends_with_the_same_message_id(tmp_path: Path) -> None:
    """The server has the whole message but its 250 comes after the sender gave up: the
    outcome is unknown, and the next attempt sends it again under the same Message-ID."""
    slow = [True]

    def late_answer(mail: ReceivedMail) -> None:
        if slow.pop() if slow else False:
            time.sleep(1.0)  # the sink's loop: it answers nobody meanwhile

    with HookedSink(late_answer, tls=True, credentials={USER: PASSWORD}) as sink:
        notify = notifications(tmp_path, mail_channel(sink, timeout_seconds=0.5))
        event = gate_event(channel="legal-mail")
        with pytest.raises(ApplicationError, match="lost during DATA") as failure:
            await ActivityEnvironment().run(notify.notify_gate_event, event)
        assert failure.value.type == "SmtpUnavailable" and not failure.value.non_retryable
        await asyncio.sleep(1.0)
        resent = await ActivityEnvironment().run(notify.notify_gate_event, event)
        mails = sink.messages
    assert resent.resent_after_unknown
    assert [m.message_id for m in mails] == [message_id_for(event.idempotency_key)] * 2


async def test_a_wrong_password_fails_clearly_and_sends_nothing(
    sink: SmtpSink, tmp_path: Path
) -> None:
    notify = notifications(tmp_path, mail_channel(sink, password="wrong"))
    event = gate_event(channel="legal-mail")
    with pytest.raises(ApplicationError) as failure:
        await ActivityEnvironment().run(notify.notify_gate_event, event)
    assert failure.value.type == "SmtpAuthFailed" and failure.value.non_retryable
    assert f"refused the login of {USER!r}: 535" in str(failure.value)
    assert "check the channel's username and password" in str(failure.value)
    assert "wrong" not in str(failure.value)
    assert sink.count() == 0
    entry = await SqliteEffectRecord(tmp_path / "effects.sqlite3").get(event.idempotency_key)
    assert entry is not None and entry.status is EffectStatus.NOT_PERFORMED


async def test_auth_without_starttls_is_refused(sink: SmtpSink, tmp_path: Path) -> None:
    notify = notifications(tmp_path, mail_channel(sink, starttls=False))
    with pytest.raises(ApplicationError) as failure:
        await ActivityEnvironment().run(notify.notify_gate_event, gate_event(channel="legal-mail"))
    assert failure.value.type in ("SmtpAuthFailed", "SmtpRejected")
    assert failure.value.non_retryable and sink.count() == 0


async def test_an_unverifiable_certificate_is_refused(sink: SmtpSink, tmp_path: Path) -> None:
    notify = notifications(tmp_path, mail_channel(sink, ca_file=None))
    with pytest.raises(
        ApplicationError, match="CERTIFICATE_VERIFY_FAILED: self-signed certificate"
    ) as failure:
        await ActivityEnvironment().run(notify.notify_gate_event, gate_event(channel="legal-mail"))
    assert failure.value.type == "SmtpTlsFailed" and sink.count() == 0


async def test_a_server_without_starttls_is_refused(tmp_path: Path) -> None:
    with SmtpSink() as plain:
        notify = notifications(tmp_path, mail_channel(plain))
        with pytest.raises(ApplicationError, match="does not offer STARTTLS") as failure:
            await ActivityEnvironment().run(
                notify.notify_gate_event, gate_event(channel="legal-mail")
            )
        assert failure.value.type == "SmtpTlsFailed" and plain.count() == 0


async def test_a_gate_nobody_has_an_address_for_says_so(sink: SmtpSink, tmp_path: Path) -> None:
    notify = notifications(tmp_path, mail_channel(sink, to=[], addresses={}))
    with pytest.raises(ApplicationError, match="has no address for gate 'legal'") as failure:
        await ActivityEnvironment().run(notify.notify_gate_event, gate_event(channel="legal-mail"))
    assert failure.value.type == "NotifyMisconfigured" and failure.value.non_retryable


def test_an_email_channel_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="needs a username"):
        EmailChannel(host="smtp", sender="k@x.example", password="p")
    with pytest.raises(ValueError, match="sender"):
        EmailChannel(host="smtp", sender="not an address")
    channel = EmailChannel(
        host="smtp",
        sender="k@x.example",
        to=("a@x.example",),
        addresses={"gc.morgan": ("gc@x.example", "a@x.example"), "legal": ("l@x.example",)},
    )
    assert channel.recipients(["gc.morgan"], ["legal", "finance"]) == [
        "a@x.example",
        "gc@x.example",
        "l@x.example",
    ]
