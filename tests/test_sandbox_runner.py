"""Keel's sandbox runner (``keel.workers.sandbox``) answers the worker's serialization-
context questions without entering the sandbox and compiles its calls once; it must give
every payload the context Temporal's stock runner gives it, and still refuse what the
sandbox refuses in workflow code."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowFailureError
from temporalio.converter import (
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker, WorkflowInstanceDetails, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _fake_info

from keel.workers.runtime import workflow_runner
from keel.workers.sandbox import KeelSandboxedWorkflowRunner
from tests.probe_sandbox import (
    SandboxProbeChild,
    SandboxProbeContexts,
    SandboxProbeOpensAFile,
    echo,
)


class RecordingCodec(PayloadCodec, WithSerializationContext):
    """Passes payloads through unchanged and records, for each call, the direction, the
    payloads' data and the serialization context the worker gave."""

    def __init__(self, calls: list[tuple[Any, ...]], context: SerializationContext | None = None):
        self.calls = calls
        self.context = context

    def with_context(self, context: SerializationContext) -> RecordingCodec:
        return RecordingCodec(self.calls, context)

    def _record(self, direction: str, payloads: Sequence[Payload]) -> list[Payload]:
        self.calls.append((direction, [p.data for p in payloads], self.context))
        return list(payloads)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self._record("encode", payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self._record("decode", payloads)


def normalised(calls: list[tuple[Any, ...]], run: str, queue: str) -> list[tuple[Any, ...]]:
    """The calls with this run's workflow id and task queue written as placeholders."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.replace(run.encode(), b"<run>")
        if isinstance(value, str):
            return value.replace(run, "<run>").replace(queue, "<queue>")
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    out = []
    for direction, data, context in calls:
        fields = (
            {k: plain(v) for k, v in dataclasses.asdict(context).items()}
            if dataclasses.is_dataclass(context) and not isinstance(context, type)
            else context
        )
        out.append((direction, plain(data), type(context).__name__, fields))
    return out


async def contexts_under(client: Client, runner: WorkflowRunner) -> list[tuple[Any, ...]]:
    """Run the contexts probe on a worker with ``runner``; every codec call it made."""
    calls: list[tuple[Any, ...]] = []
    config = client.config()
    config["data_converter"] = dataclasses.replace(
        config["data_converter"], payload_codec=RecordingCodec(calls)
    )
    queue, run = f"sandbox-{uuid.uuid4()}", f"probe-{uuid.uuid4()}"
    async with Worker(
        Client(**config),
        task_queue=queue,
        workflows=[SandboxProbeContexts, SandboxProbeChild],
        activities=[echo],
        workflow_runner=runner,
        max_cached_workflows=0,  # every task replays from the start: decode paths too
    ):
        handle = await client.start_workflow(
            SandboxProbeContexts.run, "hello", id=run, task_queue=queue
        )
        assert await handle.result() == ["echo hello", "echo hello!", "child hello"]
        assert await handle.query(SandboxProbeContexts.progress) == await handle.result()
    return normalised(calls, run, queue)


async def test_every_payload_gets_the_context_the_stock_runner_gives_it(
    dev_env: WorkflowEnvironment,
) -> None:
    keel_runner = workflow_runner()
    assert isinstance(keel_runner, KeelSandboxedWorkflowRunner)
    stock = SandboxedWorkflowRunner(restrictions=keel_runner.restrictions)
    expected = await contexts_under(dev_env.client, stock)
    got = await contexts_under(dev_env.client, keel_runner)
    # The same calls (the parent's and the child's tasks may interleave either way).
    assert sorted(map(repr, got)) == sorted(map(repr, expected))
    # The probe reached every kind of context: the workflow's, and an activity's (a
    # regular and a local one), each with the payloads it carries.
    kinds = {(c[2], c[3].get("is_local") if isinstance(c[3], dict) else None) for c in got}
    assert ("WorkflowSerializationContext", None) in kinds
    assert ("ActivitySerializationContext", False) in kinds
    assert ("ActivitySerializationContext", True) in kinds
    activity_payloads = [c[1] for c in got if c[2] == "ActivitySerializationContext"]
    assert [b'"hello"'] in activity_payloads and [b'"echo hello"'] in activity_payloads
    # ... and the child's, under its own workflow id.
    assert any(
        c[2] == "WorkflowSerializationContext" and c[3]["workflow_id"] == "<run>-child" for c in got
    )


async def test_workflow_code_is_still_held_to_the_sandbox(dev_env: WorkflowEnvironment) -> None:
    queue = f"sandbox-{uuid.uuid4()}"
    async with Worker(
        dev_env.client,
        task_queue=queue,
        workflows=[SandboxProbeOpensAFile],
        workflow_runner=workflow_runner(),
    ):
        handle = await dev_env.client.start_workflow(
            SandboxProbeOpensAFile.run, "/etc/hostname", id=f"open-{uuid.uuid4()}", task_queue=queue
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert "Cannot access __builtins__.open" in str(failure.value.cause)


def details(workflow_class: type) -> WorkflowInstanceDetails:
    """What a worker hands a runner to make an instance of ``workflow_class`` (the SDK's
    own validation details: fake run info, no interceptors)."""
    converter = DataConverter.default
    return WorkflowInstanceDetails(
        payload_converter_factory=converter._new_payload_converter,
        failure_converter_class=converter.failure_converter_class,
        interceptor_classes=[],
        defn=workflow._Definition.from_class(workflow_class),  # type: ignore[arg-type]
        info=_fake_info,
        randomness_seed=-1,
        extern_functions={},
        disable_eager_activity_execution=False,
        worker_level_failure_exception_types=[],
        patch_activation_callback=None,
        last_completion_result=Payloads(),
        last_failure=Failure(),
    )


async def test_the_context_answers_outside_a_command_are_the_stock_runners() -> None:
    # The external-store context is asked for only with external payload storage, which no
    # worker here configures: compare the answers of the two kinds of instance directly.
    keel_runner = workflow_runner()
    stock = SandboxedWorkflowRunner(restrictions=keel_runner.restrictions)
    ours = keel_runner.create_instance(details(SandboxProbeContexts))
    theirs = stock.create_instance(details(SandboxProbeContexts))
    assert type(ours).__name__ == "_QuickInstance" and type(theirs).__name__ == "_Instance"
    assert ours.get_serialization_context(None) == theirs.get_serialization_context(None)
    assert ours.get_external_store_context(None) == theirs.get_external_store_context(None)
    assert ours.get_external_store_context(None).target is not None
