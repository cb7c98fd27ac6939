"""Expense approval, a Keel app: an agent categorizes the claim, a rule routes it (over
$1,000 a manager approves), and the payout is recorded once.

``APP`` (in ``app.py``) declares it. It is loaded on first use: Temporal's workflow sandbox
imports this package for every workflow run, so importing it must do nothing.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "APP":
        from expense_approval.app import APP

        return APP
    raise AttributeError(f"module 'expense_approval' has no attribute {name!r}")


__all__ = ["APP"]
