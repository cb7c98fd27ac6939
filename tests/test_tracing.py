"""Workflows and activities are traced through Temporal's OpenTelemetry interceptor."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.testing import WorkflowEnvironment

from keel.workers.runtime import connect
from keel.workers.telemetry import tracing_interceptors
from tests.conftest import keel_worker, offline_settings
from tests.helpers import start_review


def test_no_tracing_configured_means_no_interceptor() -> None:
    assert tracing_interceptors(offline_settings()) == []


async def test_spans_cover_the_workflow_and_the_model_call(ts_env: WorkflowEnvironment) -> None:
    exporter = InMemorySpanExporter()
    settings = offline_settings()
    client = await connect(
        settings,
        address=ts_env.client.service_client.config.target_host,
        interceptors=tracing_interceptors(settings, exporter=exporter),
    )
    async with keel_worker(client) as tq:
        handle = await start_review(client, tq, "low", prefix="traced")
        await handle.result()
    names = {span.name for span in exporter.get_finished_spans()}
    assert "StartWorkflow:ContractReview" in names
    assert "RunWorkflow:ContractReview" in names
    assert "RunActivity:keel.agent_node" in names
