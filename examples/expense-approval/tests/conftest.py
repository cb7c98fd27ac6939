"""The expense desk under test: keel.testing's plugin gives the test server (``keel_env``),
workers on fresh queues (``keel_worker``) and settings that ignore the environment
(``offline_settings``); this file adds what is particular to this app."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from keel import KeelSettings
from keel.testing import ModelProvider
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from expense_approval import APP
from expense_approval.contracts import ExpenseResult
from expense_approval.payroll import Payroll, database
from expense_approval.workflow import ExpenseApprovalWorkflow


def claim(
    amount_usd: float, merchant: str = "Lufthansa", description: str = "Flight"
) -> dict[str, Any]:
    """A claim as an employee submits it."""
    return {
        "claim_id": f"EXP-{uuid.uuid4().hex[:8]}",
        "employee": "ada.okafor",
        "merchant": merchant,
        "description": description,
        "amount_usd": amount_usd,
    }


@dataclass
class Desk:
    """A running expense worker: submit claims, read what payroll paid."""

    client: Client
    task_queue: str
    settings: KeelSettings

    async def submit(
        self, claim: dict[str, Any]
    ) -> WorkflowHandle[ExpenseApprovalWorkflow, ExpenseResult]:
        return await self.client.start_workflow(
            ExpenseApprovalWorkflow.run,
            claim,
            id=f"expense-{claim['claim_id']}",
            task_queue=self.task_queue,
        )

    def payouts(self) -> list[dict[str, Any]]:
        """What the payroll system recorded for this worker (its scope is the queue)."""
        payroll = Payroll(database(self.settings.data_dir), self.task_queue)
        try:
            return payroll.payouts()
        finally:
            payroll.close()


DeskFactory = Callable[..., AbstractAsyncContextManager[Desk]]


@pytest.fixture
def open_desk(
    keel_env: WorkflowEnvironment, keel_worker: Any, offline_settings: KeelSettings
) -> DeskFactory:
    """``async with open_desk(model=...) as desk``: the app on a fresh queue; the offline
    model (the app's rule) unless ``model`` is given."""

    @asynccontextmanager
    async def open_desk(model: ModelProvider | None = None) -> AsyncIterator[Desk]:
        async with keel_worker(apps=[APP], model=model, settings=offline_settings) as queue:
            yield Desk(keel_env.client, queue, offline_settings)

    return open_desk
