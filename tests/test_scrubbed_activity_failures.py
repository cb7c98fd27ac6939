"""No secret leaves an activity in a failure: whatever a tool or an app's activity raises,
what Temporal stores (and the workflow can copy to the ledger) is scrubbed of key-shaped
text and of the secrets the worker is configured with."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from keel.testing import keel_worker, offline_settings
from tests.probe_failing_activity import FailingActivityProbe

OPENAI_KEY = "sk-proj-" + "Q7" * 24
DB_PASSWORD = "hunter2-is-not-a-key-shape"
SETTINGS = offline_settings(
    openai_api_key=OPENAI_KEY,
    database_url=f"postgresql://keel:{DB_PASSWORD}@127.0.0.1:5432/test",
)
LEAK = f"login failed for keel:{DB_PASSWORD} with api key {OPENAI_KEY} (Bearer {OPENAI_KEY})"


@activity.defn(name="leaky.application_error")
async def leaky_application_error(arg: str) -> None:
    """A tool refusing for good, its message and details quoting secrets."""
    raise ApplicationError(LEAK, {"dsn": LEAK}, type="SmtpRejected", non_retryable=True)


@activity.defn(name="leaky.exception")
async def leaky_exception(arg: str) -> None:
    """A library error quoting the connection string, with the secret in its cause too."""
    try:
        raise OSError(f"connect to postgresql://keel:{DB_PASSWORD}@db failed")
    except OSError as cause:
        raise RuntimeError(LEAK) from cause


@pytest.mark.parametrize(
    ("name", "kind", "non_retryable"),
    [("leaky.application_error", "SmtpRejected", True), ("leaky.exception", "RuntimeError", False)],
)
async def test_an_activity_failure_reaches_history_scrubbed_with_its_semantics_kept(
    ts_env: WorkflowEnvironment, name: str, kind: str, non_retryable: bool
) -> None:
    worker = keel_worker(
        ts_env.client,
        apps=[],
        activities=[leaky_application_error, leaky_exception],
        workflows=[FailingActivityProbe],
        settings=SETTINGS,
    )
    async with worker as tq:
        handle = await ts_env.client.start_workflow(
            FailingActivityProbe.run, args=[name, "x"], id=f"leak-{uuid.uuid4()}", task_queue=tq
        )
        failure: dict[str, Any] = await handle.result()
        history = (await handle.fetch_history()).to_json()
    assert (failure["type"], failure["non_retryable"]) == (kind, non_retryable)
    assert "[redacted" in failure["message"] and "login failed for keel:" in failure["message"]
    assert failure["has_cause"] is False
    for secret in (OPENAI_KEY, DB_PASSWORD):
        assert secret not in repr(failure)
        assert secret not in history
