"""Clients and workers: the one place that wires settings, converter, tracing and code."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client, Interceptor
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from keel import SEARCH_ATTRIBUTES, model_queue
from keel.activities import AgentNodeActivities
from keel.activities.providers import ModelProvider, build_provider, close_provider
from keel.activities.tools.email import EmailSender
from keel.activities.tools.incident import IncidentTools
from keel.activities.tools.support import SupportDesk
from keel.settings import KeelSettings
from keel.workers.telemetry import tracing_interceptors
from keel.workflows import WORKFLOWS

log = logging.getLogger(__name__)


async def connect(
    settings: KeelSettings,
    *,
    address: str | None = None,
    interceptors: Sequence[Interceptor] | None = None,
) -> Client:
    """A client with Keel's pydantic data converter and tracing."""
    return await Client.connect(
        address or settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        interceptors=list(
            interceptors if interceptors is not None else tracing_interceptors(settings)
        ),
    )


class KeelWorker:
    """The two Temporal workers of one Keel worker process: workflows and tools on the task
    queue, model calls on its model queue (``keel.model_queue``)."""

    def __init__(self, main: Worker, models: Worker) -> None:
        self.main = main
        self.models = models
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> KeelWorker:
        await self._stack.enter_async_context(self.main)
        await self._stack.enter_async_context(self.models)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


def build_worker(
    client: Client,
    settings: KeelSettings,
    *,
    task_queue: str | None = None,
    provider: ModelProvider | None = None,
    nodes: AgentNodeActivities | None = None,
    activities: Sequence[Callable[..., Any]] = (),
    workflows: Sequence[type] = (),
) -> KeelWorker:
    """A worker running every Keel workflow (plus ``workflows``) and ``activities`` (tools)
    on ``task_queue``, and the agent-node activity on its model queue, with the concurrency
    bounds and model rate limit of ``settings``. ``running_worker`` adds every tool."""
    queue = task_queue or settings.task_queue
    nodes = nodes or agent_node_activities(settings, provider)
    main = Worker(
        client,
        task_queue=queue,
        workflows=[*WORKFLOWS, *workflows],
        activities=list(activities),
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        workflow_runner=workflow_runner(),
    )
    models = Worker(
        client,
        task_queue=model_queue(queue),
        activities=[nodes.run_agent_node],
        max_concurrent_activities=settings.max_concurrent_model_calls,
        max_task_queue_activities_per_second=settings.model_calls_per_second,
    )
    return KeelWorker(main, models)


@asynccontextmanager
async def running_worker(
    client: Client,
    settings: KeelSettings,
    *,
    task_queue: str | None = None,
    provider: ModelProvider | None = None,
    world_namespace: str = "default",
) -> AsyncIterator[KeelWorker]:
    """Run a full worker (agent nodes and every tool) for the duration of the block; what it
    opened (databases, model clients built here) is closed after."""
    nodes = agent_node_activities(settings, provider)
    incident = IncidentTools.open(settings, namespace=world_namespace)
    desk = SupportDesk()
    email = EmailSender.open(
        settings, host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_sender
    )
    try:
        async with build_worker(
            client,
            settings,
            task_queue=task_queue,
            nodes=nodes,
            activities=[*incident.activities(), *desk.activities(), *email.activities()],
        ) as worker:
            yield worker
    finally:
        await incident.aclose()
        await email.aclose()
        await nodes.aclose()
        if provider is None:
            await close_provider(nodes.provider)


def agent_node_activities(
    settings: KeelSettings, provider: ModelProvider | None = None
) -> AgentNodeActivities:
    """The agent-node activity over ``provider`` (default: ``KEEL_MODEL``), able to build
    the fallback models contracts name."""
    return AgentNodeActivities(
        provider or build_provider(settings),
        record_prompts=settings.record_prompts,
        fallback=lambda spec: build_provider(settings.model_copy(update={"model": spec})),
    )


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox Keel's workflows run in, with the ``keel`` package passed through.

    Without this the sandbox re-imports every ``keel`` module on every workflow run (about
    16 ms of CPU each on our machines, growing with each scenario). Keel's modules are
    deterministic workflow code and pure models with no mutable module state, so sharing
    them across runs is safe; the replay tests guard determinism.
    """
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("keel")
    )


_VALUE_TYPES = {
    SearchAttributeIndexedValueType.KEYWORD_LIST: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
    SearchAttributeIndexedValueType.KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SearchAttributeIndexedValueType.BOOL: IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
}


async def ensure_search_attributes(client: Client) -> None:
    """Register Keel's search attributes in the client's namespace if they are missing."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        known = set(listed.custom_attributes)
    except RPCError as err:
        # The time-skipping test server cannot list, but can add.
        if err.status is not RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {
        key.name: _VALUE_TYPES[key.indexed_value_type]
        for key in SEARCH_ATTRIBUTES
        if key.name not in known
    }
    if missing:
        log.info("registering search attributes %s", sorted(missing))
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
