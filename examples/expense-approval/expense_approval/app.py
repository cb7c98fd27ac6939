"""The expense approval app: what ``keel worker --app expense_approval`` serves."""

from __future__ import annotations

from typing import Any

from keel import App, Entry

from expense_approval.contracts import CATEGORIZER, ExpenseClaim, PayoutRecorded
from expense_approval.offline import categorize_expense
from expense_approval.payroll import open_payroll
from expense_approval.workflow import ExpenseApprovalWorkflow


def summarize(result: Any) -> str:
    """``claim id: outcome by whom``."""
    return f"{result['claim_id']}: {result['outcome']} by {result['decided_by']}"


APP = App(
    name="expense-approval",
    workflows=[ExpenseApprovalWorkflow],
    entries=[
        Entry(
            "expense-approval",
            ExpenseApprovalWorkflow,
            ExpenseClaim,
            16_000,
            title_field="claim_id",
        )
    ],
    contracts=[CATEGORIZER],
    activities=open_payroll,
    offline_rules={CATEGORIZER.name: categorize_expense},
    event_types=[PayoutRecorded],
    summarize=summarize,
)
