"""A database outage of 20 s while incidents roll back: every incident waits, none gives up
or compensates, and each rollback happens once when the database is back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from keel.activities.effects import EffectRecord, EffectStatus, PostgresEffectRecord
from keel.activities.sqlstore import PostgresStore
from keel.contracts.ledger import TaskCompleted
from keel.scenarios.incident.tools import IncidentTools
from keel.scenarios.incident.world import IncidentWorld
from tests.conftest import keel_worker
from tests.helpers import decide, review, types_of, wait_for_gate
from tests.standins import ScriptedPlanner, plan, task
from tests.tcp_proxy import TcpProxy
from tests.test_effects import PG_URL
from tests.test_effects_db_cut import proxied_url
from tests.test_incident_workflow import start_incident

INCIDENTS = 3
OUTAGE_SECONDS = 20.0
ROLLBACK = {"service": "checkout-api", "deploy_id": "dep-7f3a91", "to_version": "1.41.3"}
ROLL_FORWARD = {
    "tool": "roll_forward_deploy",
    "input": {"service": "checkout-api", "to_version": "1.42.0"},
}


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    running = await TcpProxy("127.0.0.1", 5432).start()
    yield running
    await running.aclose()


def incident_plan() -> list[dict[str, object]]:
    return [
        plan(
            task("rb", "rollback_deploy", gate="Approve rb", compensation=ROLL_FORWARD, **ROLLBACK),
            task(
                "notify",
                "update_incident",
                after=["rb"],
                incident_id="INC-7",
                status="mitigating",
                note="rolled back checkout-api",
            ),
        ),
        plan(done=True, summary="rolled back; error rate recovering"),
    ]


@pytest.mark.integration  # a real 20 s outage: not for the quick run
async def test_incidents_wait_out_a_database_outage_and_roll_back_once(
    ts_env: WorkflowEnvironment,
    proxy: TcpProxy,
) -> None:
    namespaces = [f"test-{uuid.uuid4().hex[:10]}" for _ in range(INCIDENTS)]
    async with AsyncExitStack() as stack:
        queues, handles, tools_of = [], [], []
        for namespace in namespaces:
            store = PostgresStore(
                proxied_url(proxy), connect_timeout_seconds=2, acquire_timeout_seconds=2
            )
            effects = EffectRecord(store, record_retry_seconds=5)
            tools = IncidentTools(IncidentWorld(store, namespace=namespace), effects)
            stack.push_async_callback(tools.aclose)
            planner = ScriptedPlanner(*incident_plan())
            queues.append(
                await stack.enter_async_context(
                    keel_worker(ts_env.client, provider=planner, tools=tools.activities())
                )
            )
            tools_of.append(tools)
        for tq in queues:
            handles.append(await start_incident(ts_env.client, tq))
        for handle in handles:
            await wait_for_gate(handle, "approve-rb")
        proxy.refuse(True)  # the database goes away as the rollbacks are approved
        for handle in handles:
            await decide(handle, review("approve-rb", "approve", "oncall.lead"))
        await asyncio.sleep(OUTAGE_SECONDS)
        for handle in handles:  # nobody gave up while the database was away
            assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
        proxy.refuse(False)
        results = [await asyncio.wait_for(h.result(), timeout=60) for h in handles]
    assert proxy.refused > INCIDENTS  # the tools really met the outage, again and again
    direct = PostgresEffectRecord(PG_URL)
    try:
        for handle, result, namespace in zip(handles, results, namespaces, strict=True):
            types = types_of(result.ledger)
            assert result.outcome == "mitigated", (result.outcome, result.summary)
            assert "TaskFailed" not in types and "Compensated" not in types
            assert [e.ref for e in result.ledger if isinstance(e, TaskCompleted)] == [
                "rb",
                "notify",
            ]
            world = IncidentWorld(direct.store, namespace=namespace)
            actions = await world.deploy_actions("checkout-api")
            assert [a["kind"] for a in actions] == ["rollback"]
            assert len(await world.notes("INC-7")) == 1
            entry = await direct.get(f"{handle.id}/r1/rb")
            assert entry is not None and entry.status is EffectStatus.PERFORMED
    finally:
        await direct.aclose()
