"""What only the server can bound: a signal is in history before any workflow code sees it,
so the size of one and the number per run are limits of the dev server Keel starts (and of
a deployment's dynamic config). Against them, a flood of signals cannot get a run
terminated for its history size: the server refuses the excess, and the run completes."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from keel.contracts.ledger import ReviewRefused
from keel.testing import events_of
from keel.workers.devstack import SERVER_LIMITS
from tests.conftest import keel_worker
from tests.helpers import decide, review, signal_review, start_review, wait_for_gate

pytestmark = pytest.mark.integration
GATE = "standard-review"
MAX_SIGNALS = SERVER_LIMITS["history.maximumSignalsPerExecution"]


async def test_an_oversized_signal_never_reaches_history(dev_env: WorkflowEnvironment) -> None:
    async with keel_worker(dev_env.client) as tq:
        handle = await start_review(dev_env.client, tq, "medium", prefix="limits-size")
        await wait_for_gate(handle, GATE)
        huge = review(GATE, "approve", "x" * 1_200_000)
        with pytest.raises(RPCError, match="size exceeds limit"):
            await signal_review(handle, huge)
        await decide(handle, review(GATE, "approve", "legal.priya"))
        result = await handle.result()
    assert result.outcome == "approved"
    history = await handle.fetch_history()
    assert history.to_json_dict() and len(history.to_json()) < 500_000


async def test_a_signal_flood_is_cut_off_by_the_server_and_the_run_completes(
    dev_env: WorkflowEnvironment,
) -> None:
    padding = "p" * 400_000  # each signal under the size limit, together far past 50 MiB
    accepted, refused = 0, 0
    async with keel_worker(dev_env.client) as tq:
        handle = await start_review(dev_env.client, tq, "medium", prefix="limits-flood")
        await wait_for_gate(handle, GATE)
        for _ in range(MAX_SIGNALS + 20):
            try:
                await signal_review(handle, {"gate": GATE, "padding": padding})
                accepted += 1
            except RPCError as err:
                assert "limit for signal events" in err.message
                refused += 1
        receipt: Any = await decide(handle, review(GATE, "approve", "legal.priya"))
        result = await handle.result()
    assert (accepted, refused) == (MAX_SIGNALS, 20)
    assert receipt.state.value == "approved" and result.outcome == "approved"
    assert len(events_of(result.ledger, ReviewRefused)) == 20  # the recorded ones, bounded
