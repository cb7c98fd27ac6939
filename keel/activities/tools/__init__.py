"""Engine tools: the ``send_email`` tool over SMTP and what every tool activity shares."""

from keel.activities.tools.base import effect_activities, effect_errors, tool_input
from keel.activities.tools.email import EmailSender

__all__ = ["EmailSender", "effect_activities", "effect_errors", "tool_input"]
