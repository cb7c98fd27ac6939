"""Hostile starts: an input of any shape or size ends its run, non-retryably, with a reason
of bounded size, in a ledger of bounded size; an input the worker cannot even decode ends
the run FAILED instead of leaving it "running" forever."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from keel.contracts.ledger import InputRejected
from keel.scenarios.contract_review.contracts import MAX_INPUT_BYTES
from keel.testing import events_of
from tests.conftest import keel_worker
from tests.helpers import ledger_of
from tests.samples import load_sample

REJECTION_LIMIT = 16_000
"""Bytes of JSON an ``InputRejected`` event may take at most, whatever the input."""
MESSAGE_LIMIT = 5_000
"""Characters a run's failure message may take at most."""


async def start_raw(client: Client, task_queue: str, payload: Any) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        "ContractReview", payload, id=f"hostile-start-{uuid.uuid4()}", task_queue=task_queue
    )


async def invalid_input_failure(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.non_retryable
    return cause


def rejection_of(ledger: list[Any]) -> InputRejected:
    [rejected] = events_of(ledger, InputRejected)
    assert len(json.dumps(rejected.model_dump(mode="json")).encode()) < REJECTION_LIMIT
    return rejected


async def test_an_input_over_the_size_limit_is_refused_by_size_before_validation(
    ts_env: WorkflowEnvironment,
) -> None:
    payload = {f"{i:04d}" + "k" * 1020: "v" for i in range(300)}  # 300 keys of 1 KB
    async with keel_worker(ts_env.client) as tq:
        handle = await start_raw(ts_env.client, tq, payload)
        cause = await invalid_input_failure(handle)
        ledger = await ledger_of(handle)
    assert cause.type == "InvalidInput"
    assert f"the limit is {MAX_INPUT_BYTES}" in cause.message
    assert rejection_of(ledger).reasons == [cause.message.split(": ", 1)[1]]


async def test_thousands_of_wrong_fields_and_long_keys_leave_a_bounded_rejection(
    ts_env: WorkflowEnvironment,
) -> None:
    payload: dict[str, Any] = load_sample("contract-low-risk")
    payload.update({f"x{i}": i for i in range(5000)})  # 5,000 unknown fields
    payload.update({f"{i}" + "K" * 20_000: "v" for i in range(5)})  # five 20 KB keys
    payload["annual_value_usd"] = "a" * 50_000
    assert len(json.dumps(payload).encode()) < MAX_INPUT_BYTES
    async with keel_worker(ts_env.client) as tq:
        handle = await start_raw(ts_env.client, tq, payload)
        cause = await invalid_input_failure(handle)
        ledger = await ledger_of(handle)
    assert cause.type == "InvalidInput"
    assert len(cause.message) < MESSAGE_LIMIT
    reasons = rejection_of(ledger).reasons
    assert len(reasons) <= 21
    assert reasons[-1].startswith("and ") and reasons[-1].endswith(" more problems")
    assert "annual_value_usd: Input should be a valid number" in reasons[0]
    assert all(len(reason) <= 600 for reason in reasons)


def raw(data: bytes, encoding: bytes = b"json/plain") -> RawValue:
    """A payload sent as is, past the client's converter."""
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


UNDECODABLE = {
    "JSON nested 2,000 levels": raw(b"[" * 2000 + b"]" * 2000),
    "an object nested 2,000 levels": raw(b'{"a":' * 2000 + b"1" + b"}" * 2000),
    "invalid JSON": raw(b"{not json"),
    "invalid UTF-8": raw(b'{"title": "\xff\xfe"}'),
    "an unknown encoding": raw(b"{}", encoding=b"binary/weird"),
    "a JSON list": raw(b"[1, 2, 3]"),  # the run takes an object
    "raw bytes": raw(b"\x00\x01", encoding=b"binary/plain"),
}


async def ends_failed(client: Client, handle: WorkflowHandle[Any, Any], timeout: float) -> str:
    """The failure message of the run, once it has ended FAILED within ``timeout`` s."""
    async with asyncio.timeout(timeout):
        while (await handle.describe()).status is WorkflowExecutionStatus.RUNNING:
            await asyncio.sleep(0.2)
    assert (await handle.describe()).status is WorkflowExecutionStatus.FAILED
    async for event in handle.fetch_history_events():
        if event.event_type is EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            failure = event.workflow_execution_failed_event_attributes.failure
            assert failure.application_failure_info.non_retryable
            return failure.message
    raise AssertionError("no failure event")


async def test_every_undecodable_start_ends_failed_with_a_reason(
    ts_env: WorkflowEnvironment,
) -> None:
    async with keel_worker(ts_env.client) as tq:
        handles = {
            name: await start_raw(ts_env.client, tq, payload)
            for name, payload in UNDECODABLE.items()
        }
        messages = {
            name: await ends_failed(ts_env.client, handle, timeout=20)
            for name, handle in handles.items()
        }
    for name, message in messages.items():
        expected = "invalid input: " if name == "raw bytes" else "undecodable input: "
        assert message.startswith(expected), (name, message)
        assert len(message) < MESSAGE_LIMIT, name
