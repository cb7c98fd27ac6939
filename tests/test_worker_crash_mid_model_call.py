"""A worker killed during a model call: the heartbeat lets Temporal notice within seconds
(not the contract's whole time budget), and another worker makes the call again.

This test waits the 10 s heartbeat timeout in real time, on purpose: the time-skipping test
server does not skip time while an activity is in flight (measured: an activity that never
heartbeats with a 10 s heartbeat timeout fails over after 10.07 s of wall time there too), so
no server would make it faster, and the timeout itself is what is under test."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.testing import WorkflowEnvironment

from keel.contracts.ledger import AgentDecided
from tests.conftest import REVIEW_ENV, free_port
from tests.fake_model_server import FakeModelServer, Reply
from tests.helpers import start_keel_worker, start_review

LOW = {
    "risk_level": "low",
    "clause_refs": ["3"],
    "rationale": "Capped liability and a short term.",
    "confidence": 0.9,
}


async def test_a_killed_worker_is_noticed_by_heartbeat(
    dev_env: WorkflowEnvironment, tmp_path: object
) -> None:
    with FakeModelServer(responder=lambda request: LOW) as server:
        # The first call hangs far longer than the heartbeat timeout (10 s).
        server.script(Reply.json(LOW).delayed(45))
        env = {
            **os.environ,
            **server.env("openai:gpt-4o-mini"),
            "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "KEEL_TASK_QUEUE": f"crash-{uuid.uuid4()}",
            **REVIEW_ENV,  # the test kit signs the reviews these processes take
            "KEEL_DATA_DIR": str(tmp_path),
            "KEEL_SMTP_PORT": str(free_port()),
            "KEEL_CODEC": "off",  # this test reads history raw (encryption: test_history_encrypted)
        }
        first = await start_keel_worker(env)
        handle = await start_review(dev_env.client, env["KEEL_TASK_QUEUE"], "low", prefix="crash")
        async with asyncio.timeout(30):
            while server.calls == 0:
                await asyncio.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        second = await start_keel_worker(env)
        try:
            result = await asyncio.wait_for(handle.result(), timeout=40)
        finally:
            second.send_signal(signal.SIGINT)
            await asyncio.wait_for(second.wait(), timeout=30)
    decided = [e for e in result.ledger if isinstance(e, AgentDecided)]
    assert [(d.attempt, d.activity_attempt) for d in decided] == [(1, 2)]
    history = await handle.fetch_history()
    started = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    timeout = started[0].last_failure.timeout_failure_info.timeout_type
    assert timeout == TimeoutType.TIMEOUT_TYPE_HEARTBEAT  # not start-to-close (60 s)
