"""OpenTelemetry traces of workflows and activities, through Temporal's tracing interceptor.

Spans are exported when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (OTLP over HTTP) or when
``KEEL_OTEL_CONSOLE=true`` (printed). Otherwise no interceptor is installed: no cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio.client import Interceptor

from keel.settings import KeelSettings

if TYPE_CHECKING:  # imported when tracing is on: a worker without it does not load the SDK
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

_provider: TracerProvider | None = None


def tracing_interceptors(
    settings: KeelSettings, *, exporter: SpanExporter | None = None
) -> list[Interceptor]:
    """Interceptors for ``Client.connect``; installs a tracer provider on first use."""
    global _provider
    if exporter is None and not settings.otel_exporter_otlp_endpoint and not settings.otel_console:
        return []
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )
    from temporalio.contrib.opentelemetry import TracingInterceptor

    if _provider is None:
        # OTEL_SERVICE_NAME (default ``keel``) names the service, as the SDK's metrics do.
        service = {"service.name": settings.otel_service_name}
        provider = TracerProvider(resource=Resource.create(service))
        if settings.otel_exporter_otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        if settings.otel_console:
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(provider)
        _provider = provider
    if exporter is not None:
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
    return [TracingInterceptor()]
