"""Customer support email: triage, look up, draft under a guard, approve refunds, send once.

``APP`` declares it; see README.md beside this file.
"""

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from keel.activities.tools.email import EmailSender
from keel.contracts.email import SEND_EMAIL
from keel.offline import OfflineFault
from keel.scenarios.support_email.contracts import (
    MAX_EMAIL_BYTES,
    SUPPORT_REPLY,
    SUPPORT_TRIAGE,
    SupportEmail,
)
from keel.scenarios.support_email.offline import draft_reply, policy_violation, triage_email
from keel.scenarios.support_email.tools import SupportDesk
from keel.scenarios.support_email.workflow import SupportEmailWorkflow
from keel.workers.app import App, AppContext, DemoReview, DemoRun, Entry


@asynccontextmanager
async def open_activities(context: AppContext) -> AsyncIterator[Sequence[Callable[..., Any]]]:
    """The support desk's reads and the SMTP sender (over the side-effect record)."""
    settings = context.settings
    email = EmailSender.open(
        settings, host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_sender
    )
    try:
        yield [*SupportDesk().activities(), *email.activities()]
    finally:
        await email.aclose()


def summarize(result: Any) -> str:
    """``intent, order, reply Message-ID``."""
    sent = f", reply {result['reply_message_id']}" if result.get("reply_message_id") else ""
    return (
        f"{result.get('intent') or 'untriaged'}, {result.get('order_number') or 'no order'}{sent}"
    )


APP = App(
    name="support-email",
    workflows=[SupportEmailWorkflow],
    entries=[
        Entry(
            "support-email",
            SupportEmailWorkflow,
            SupportEmail,
            MAX_EMAIL_BYTES,
            title_field="subject",
        )
    ],
    contracts=[SUPPORT_TRIAGE, SUPPORT_REPLY],
    tools=[SEND_EMAIL],
    activities=open_activities,
    offline_rules={SUPPORT_TRIAGE.name: triage_email, SUPPORT_REPLY.name: draft_reply},
    offline_faults={"reply_policy_violation": policy_violation},
    samples=Path(__file__).parent / "samples",
    demo=[
        DemoRun(
            "support, refund request",
            "support-email",
            "support-refund",
            faults=[OfflineFault(kind="reply_policy_violation", contract=SUPPORT_REPLY.key)],
            reviews={
                "approve-refund": DemoReview(
                    "support.lead.chen",
                    "approve",
                    "Damage is plausible for this model; refund approved.",
                )
            },
        ),
        DemoRun("support, injection", "support-email", "support-injection"),
    ],
    summarize=summarize,
)
"""The support email app."""

__all__ = ["APP", "SupportEmailWorkflow"]
