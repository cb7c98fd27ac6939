"""Webhook notifications: signed, Slack-shaped when asked, one per gate event, delivered once
the receiver is back.

The activity tests run ``keel.notify.gate_event`` under ``ActivityEnvironment`` against a
local receiver (``tests.notify_receiver``); ``test_notify_delivery`` runs it from workflow
code.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from keel.activities.effects import EffectStatus, SqliteEffectRecord
from keel.activities.notify import GateNotifications, notify_channels
from keel.contracts.links import link_problem
from keel.contracts.notifications import (
    EmailChannel,
    GateEvent,
    WebhookChannel,
    delivery_id,
    idempotency_key,
    signature_header,
    signature_problem,
    slack_body,
)
from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.workers.link_key import load_link_key
from tests.notify_receiver import WebhookReceiver

SECRET = "whsec-" + "s" * 24
NOW = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)


def gate_event(kind: str = "opened", **changes: Any) -> GateEvent:
    fields: dict[str, Any] = {
        "kind": kind,
        "channel": "legal-hook",
        "workflow_id": "contract-review-7",
        "run_id": "run-1",
        "workflow_type": "ContractReview",
        "gate": "legal",
        "title": "Approve the vendor agreement",
        "state": "awaiting_approval",
        "reviewers": ["gc.morgan"],
        "roles": ["general-counsel"],
        "deadline": NOW + timedelta(hours=4),
        "occurred_at": NOW,
    }
    return GateEvent.model_validate(fields | changes)


# --------------------------------------------------------------------------- signatures


def test_a_signature_verifies_and_a_tampered_body_fails() -> None:
    body = b'{"type":"keel.gate.opened","gate":"legal"}'
    header = signature_header(SECRET, body, int(NOW.timestamp()))
    assert signature_problem(SECRET, body, header, NOW.timestamp()) is None
    tampered = body.replace(b"legal", b"finance")
    assert "no v1 signature matches" in (
        signature_problem(SECRET, tampered, header, NOW.timestamp()) or ""
    )
    assert "no v1 signature matches" in (
        signature_problem("another-secret-of-length", body, header, NOW.timestamp()) or ""
    )


def test_an_old_or_missing_signature_fails() -> None:
    body = b"{}"
    header = signature_header(SECRET, body, int(NOW.timestamp()))
    later = NOW.timestamp() + 301
    assert "tolerance" in (signature_problem(SECRET, body, header, later) or "")
    assert "no Keel-Signature" in (signature_problem(SECRET, body, None, later) or "")
    assert "single t=" in (signature_problem(SECRET, body, "v1=abc", later) or "")
    # A receiver rotating secrets accepts any v1 that matches.
    rotated = header + ",v1=" + "0" * 64
    assert signature_problem(SECRET, body, rotated, NOW.timestamp()) is None


def test_the_delivery_id_is_the_key_s_not_the_attempt_s() -> None:
    event = gate_event()
    key = idempotency_key("contract-review-7", "run-1", "legal", "opened", "legal-hook")
    assert event.idempotency_key == key
    assert event.delivery_id == delivery_id(key)
    assert gate_event("decided").delivery_id != event.delivery_id
    assert gate_event(channel="legal-slack").delivery_id != event.delivery_id


def test_the_slack_format_has_text_and_a_button_to_the_inbox() -> None:
    link = "https://inbox.example/gates/contract-review-7/legal?exp=1&sig=x"
    body = slack_body(gate_event(), link)
    assert (
        body["text"] == "Gate waiting for review: Approve the vendor agreement (contract-review-7)"
    )
    header, section, actions = body["blocks"]
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": "Gate waiting for review: Approve the vendor agreement",
        },
    }
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert "gc.morgan, role general-counsel" in section["text"]["text"]
    assert "Deadline: 2026-12-01 20:00 UTC" in section["text"]["text"]
    (button,) = actions["elements"]
    assert (button["type"], button["url"], button["style"]) == ("button", link, "primary")
    decided = slack_body(gate_event("decided", decided_by="gc.morgan", decision="approve"), link)
    assert "Decided by gc.morgan: approve" in decided["blocks"][1]["text"]["text"]
    assert "style" not in decided["blocks"][2]["elements"][0]


def test_channels_refuse_bad_configuration_clearly() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        WebhookChannel(url="https://hooks.example", secret="short")
    with pytest.raises(ValueError, match="url"):
        WebhookChannel(url="hooks.example", secret=SECRET)


def test_channels_come_from_the_environment_and_a_file(tmp_path: Path) -> None:
    hook = {"kind": "webhook", "url": "https://hooks.example/T1/secret-path", "secret": SECRET}
    path = tmp_path / "channels.json"
    mail = {"kind": "email", "host": "smtp", "sender": "k@x.example"}
    path.write_text(json.dumps({"legal-mail": mail}))
    settings = KeelSettings(notify_channels={"legal-hook": hook}, notify_channels_file=path)
    channels = notify_channels(settings)
    assert sorted(channels) == ["legal-hook", "legal-mail"]
    assert isinstance(channels["legal-mail"], EmailChannel) and channels["legal-mail"].port == 587
    twice = KeelSettings(notify_channels={"legal-mail": hook}, notify_channels_file=path)
    with pytest.raises(KeelUserError, match=r"\['legal-mail'\] are defined both"):
        notify_channels(twice)
    path.write_text(json.dumps({"x": {"kind": "carrier-pigeon"}}))
    with pytest.raises(KeelUserError, match=r"channels\.json: x: "):
        notify_channels(KeelSettings(notify_channels_file=path))
    with pytest.raises(KeelUserError, match="No such file"):
        notify_channels(KeelSettings(notify_channels_file=tmp_path / "missing.json"))
    with pytest.raises(KeelUserError, match=r"names \['Legal Hook'\] must be lower-case"):
        notify_channels(KeelSettings(notify_channels={"Legal Hook": hook}))
    assert SECRET not in repr(settings)


# --------------------------------------------------------------------------- the activity


def notifications(tmp_path: Path, channels: dict[str, Any]) -> GateNotifications:
    settings = KeelSettings(
        data_dir=tmp_path,
        inbox_url="https://inbox.example",
        notify_channels=channels,
    )
    return GateNotifications(settings, link_key=lambda: load_link_key(settings))


async def test_one_signed_delivery_per_event_and_a_retry_sends_nothing(tmp_path: Path) -> None:
    with WebhookReceiver() as receiver:
        notify = notifications(
            tmp_path, {"legal-hook": {"kind": "webhook", "url": receiver.url, "secret": SECRET}}
        )
        event = gate_event()
        first = await ActivityEnvironment().run(notify.notify_gate_event, event)
        again = await ActivityEnvironment().run(notify.notify_gate_event, event)
        (delivery,) = receiver.deliveries
    assert (first.replayed, again.replayed) == (False, True)
    assert first.delivery_id == again.delivery_id == delivery.delivery_id == event.delivery_id
    header = delivery.headers["keel-signature"]
    assert signature_problem(SECRET, delivery.body, header, time.time()) is None
    assert signature_problem(SECRET, delivery.body + b" ", header, time.time()) is not None
    body = delivery.json()
    assert body["type"] == "keel.gate.opened"
    assert (body["workflow_id"], body["run_id"], body["gate"]) == (
        "contract-review-7",
        "run-1",
        "legal",
    )
    assert (body["reviewers"], body["roles"]) == (["gc.morgan"], ["general-counsel"])
    assert body["deadline"] == "2026-12-01T20:00:00+00:00"
    assert_signed_link(body["inbox_url"], tmp_path, "contract-review-7", "legal")


def assert_signed_link(link: str, data_dir: Path, workflow_id: str, gate: str) -> None:
    url = urlsplit(link)
    assert url.path == f"/gates/{workflow_id}/{gate}"
    query = parse_qs(url.query)
    key = load_link_key(KeelSettings(data_dir=data_dir))
    _, _, got_id, got_gate = url.path.split("/")
    exp, sig = query["exp"][0], query["sig"][0]
    assert (
        link_problem(unquote(got_id), unquote(got_gate), exp, sig, key, datetime.now(UTC)) is None
    )


async def test_an_unanswered_delivery_is_resent_with_the_same_delivery_id(tmp_path: Path) -> None:
    """The receiver has the request but the answer never comes (the sender's timeout): the
    outcome is unknown, and the next attempt sends the same body under the same id."""
    with WebhookReceiver() as receiver:
        receiver.state.hold = threading.Event()
        channel = {"kind": "webhook", "url": receiver.url, "secret": SECRET, "timeout_seconds": 0.5}
        notify = notifications(tmp_path, {"legal-hook": channel})
        with pytest.raises(ApplicationError) as failure:
            await ActivityEnvironment().run(notify.notify_gate_event, gate_event())
        assert failure.value.type == "WebhookUnavailable" and not failure.value.non_retryable
        receiver.state.hold.set()
        receiver.state.hold = None
        resent = await ActivityEnvironment().run(notify.notify_gate_event, gate_event())
        first, second = receiver.deliveries
    assert resent.resent_after_unknown and not resent.replayed
    assert first.delivery_id == second.delivery_id == resent.delivery_id
    assert first.body == second.body
    entry = await SqliteEffectRecord(tmp_path / "effects.sqlite3").get(gate_event().idempotency_key)
    assert entry is not None and (entry.status, entry.resolution) == ("performed", "resend")


async def test_a_refusing_receiver_fails_clearly_and_is_not_retried(tmp_path: Path) -> None:
    with WebhookReceiver() as receiver:
        receiver.state.status = 410
        notify = notifications(
            tmp_path, {"legal-hook": {"kind": "webhook", "url": receiver.url, "secret": SECRET}}
        )
        with pytest.raises(ApplicationError) as failure:
            await ActivityEnvironment().run(notify.notify_gate_event, gate_event())
    assert failure.value.type == "WebhookRejected" and failure.value.non_retryable
    assert "answered 410" in str(failure.value) and "/hook" not in str(failure.value)
    entry = await SqliteEffectRecord(tmp_path / "effects.sqlite3").get(gate_event().idempotency_key)
    assert entry is not None and entry.status is EffectStatus.NOT_PERFORMED


async def test_an_unknown_channel_names_the_ones_defined(tmp_path: Path) -> None:
    notify = notifications(tmp_path, {})
    with pytest.raises(ApplicationError, match=r"defined: none.*KEEL_NOTIFY_CHANNELS") as failure:
        await ActivityEnvironment().run(notify.notify_gate_event, gate_event())
    assert failure.value.type == "NotifyChannelUnknown" and failure.value.non_retryable


async def test_the_body_is_compact_json_in_utf8(tmp_path: Path) -> None:
    """What a receiver parses and signs over: the exact bytes sent (no re-serialization)."""
    event = gate_event(title="Genehmigung für Lieferant")
    with WebhookReceiver() as receiver:
        notify = notifications(
            tmp_path, {"legal-hook": {"kind": "webhook", "url": receiver.url, "secret": SECRET}}
        )
        await ActivityEnvironment().run(notify.notify_gate_event, event)
        (delivery,) = receiver.deliveries
    assert "Genehmigung für Lieferant".encode() in delivery.body
    assert json.loads(delivery.body)["title"] == "Genehmigung für Lieferant"
    assert delivery.headers["content-type"] == "application/json"
