"""The Prometheus endpoint of a worker process: the SDK's metrics and Keel's own.

Temporal's SDK serves ``/metrics`` from its ``Runtime``; a client made with that runtime
gives it to every worker built on the client, so the SDK's worker metrics
(``temporal_workflow_completed``, ``temporal_activity_execution_latency``, ...) and Keel's
(``keel.workflows.metrics``, emitted from workflow code) are served together.

A runtime binds its address when it is made, so there is one per address per process
(``metrics_runtime`` keeps them): ``keel worker`` and ``keel dev`` serve
``KEEL_METRICS_HOST:KEEL_METRICS_PORT`` (127.0.0.1:9464 by default; port 0: none), and the
CLI's other commands, the test kit and tests use the SDK's default runtime and serve nothing
unless they ask (``metrics_client``). An address already taken (a second worker on one host)
costs that worker its endpoint, with a warning, not its start.
"""

from __future__ import annotations

import dataclasses
import sys

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import ServiceClient

from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.workflows.metrics import METRICS

SDK_METRICS = (
    "temporal_workflow_completed",
    "temporal_worker_task_slots_used",
    "temporal_worker_task_slots_available",
    "temporal_workflow_task_schedule_to_start_latency",
    "temporal_activity_execution_latency",
)
"""The SDK's metrics the provisioned dashboard shows beside Keel's (counters without a
``_total`` suffix, latencies in milliseconds: the SDK's defaults, which Temporal's own SDK
dashboards expect); the metrics test finds each on a worker's ``/metrics``."""

_runtimes: dict[tuple[str, str], Runtime] = {}


def metrics_address(settings: KeelSettings) -> str | None:
    """``host:port`` of the endpoint ``settings`` ask for (None: port 0, no endpoint)."""
    if not settings.metrics_port:
        return None
    host = settings.metrics_host
    return f"[{host}]:{settings.metrics_port}" if ":" in host else f"{host}:{settings.metrics_port}"


def telemetry_config(bind_address: str, service_name: str) -> TelemetryConfig:
    """Prometheus at ``bind_address``, every metric labelled ``service_name``; Keel's
    histograms with their own buckets.

    The SDK's own ``service_name`` label (always ``temporal-core-sdk``) is replaced by
    ``service_name``: with both, a metric would carry the label twice, which Prometheus
    refuses to scrape.
    """
    return TelemetryConfig(
        metrics=PrometheusConfig(
            bind_address=bind_address,
            histogram_bucket_overrides={
                m.name: list(m.buckets) for m in METRICS.values() if m.buckets
            },
        ),
        global_tags={"service_name": service_name},
        attach_service_name=False,
    )


def metrics_runtime(settings: KeelSettings) -> Runtime | None:
    """The process's runtime serving ``/metrics`` where ``settings`` say, made on first
    use; None when the port is 0 or the address is taken (a warning says so).

    Raises:
        KeelUserError: the address is not one (``KEEL_METRICS_HOST``).
    """
    address = metrics_address(settings)
    if address is None:
        return None
    key = (address, settings.otel_service_name)
    if key not in _runtimes:
        try:
            _runtimes[key] = Runtime(
                telemetry=telemetry_config(address, settings.otel_service_name)
            )
        except ValueError as err:  # the SDK's: a bad address, or one already bound
            if "Invalid" in str(err):
                raise KeelUserError(
                    f"metrics endpoint {address}: {err} (set KEEL_METRICS_HOST to an IP "
                    "address, or KEEL_METRICS_PORT=0 for none)"
                ) from err
            print(
                f"metrics: no endpoint at {address} ({err}): set KEEL_METRICS_PORT to a free "
                "port (0: none)",
                file=sys.stderr,
                flush=True,
            )
            return None
    return _runtimes[key]


async def metrics_client(client: Client, settings: KeelSettings) -> Client:
    """``client`` (same server, namespace, converter, interceptors) on a new connection
    made with ``metrics_runtime(settings)``: workers built on it serve their metrics there.
    ``client`` itself when there is no endpoint, or when it was made with that runtime
    (``keel worker`` connects with it: one runtime, one connection per process)."""
    runtime = metrics_runtime(settings)
    if runtime is None or client.service_client.config.runtime is runtime:
        return client
    connect = dataclasses.replace(client.service_client.config, runtime=runtime)
    config = client.config()
    config["service_client"] = await ServiceClient.connect(connect)
    return Client(**config)


def metrics_note(settings: KeelSettings) -> str:
    """What a serving process prints about its endpoint."""
    address = metrics_address(settings)
    if address is None or (address, settings.otel_service_name) not in _runtimes:
        return "metrics: no Prometheus endpoint (KEEL_METRICS_PORT=0, or its port is taken)"
    return f"metrics: http://{address}/metrics (Prometheus: the SDK's metrics and Keel's)"
