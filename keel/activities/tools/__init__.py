"""Engine tools: the ``send_email`` tool over SMTP and what every tool activity shares."""

from keel.activities.tools.base import tool_input
from keel.activities.tools.email import EmailSender

__all__ = ["EmailSender", "tool_input"]
