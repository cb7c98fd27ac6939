"""Processes and user-facing tools: worker, embedded dev stack, the ``keel`` CLI, demo."""
