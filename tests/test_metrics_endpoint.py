"""The worker's Prometheus endpoint without a server: where it binds, what a taken or bad
address does, its buckets and service name, and how label values stay bounded."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import keel.workflows.metrics as metrics_module
from keel.contracts.ledger import ValidationFailed
from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.workers.metrics import (
    metrics_address,
    metrics_client,
    metrics_note,
    metrics_runtime,
    telemetry_config,
)
from keel.workers.runtime import connect
from keel.workflows.ledger import Ledger
from keel.workflows.metrics import (
    CONFIDENCE_BUCKETS,
    GATE_LATENCY_BUCKETS,
    MAX_LABEL_CHARS,
    OTHER,
    BoundedNames,
    node_settled,
)
from tests.conftest import free_port, offline_settings


def test_the_default_endpoint_is_localhost_9464_and_port_zero_turns_it_off() -> None:
    assert metrics_address(offline_settings()) == "127.0.0.1:9464"
    off = offline_settings(metrics_port=0)
    assert metrics_address(off) is None and metrics_runtime(off) is None
    assert "no Prometheus endpoint" in metrics_note(off)
    assert metrics_address(offline_settings(metrics_host="::1", metrics_port=9000)) == "[::1]:9000"


async def test_a_worker_client_made_on_the_metrics_runtime_is_kept_not_reconnected(
    dev_env: WorkflowEnvironment,
) -> None:
    # keel worker connects on the runtime that serves /metrics, so the process holds one
    # runtime and one connection; a client on another runtime gets a connection on it.
    settings = offline_settings(metrics_port=free_port())
    runtime = metrics_runtime(settings)
    address = dev_env.client.service_client.config.target_host
    client = await connect(settings, address=address, runtime=runtime)
    assert client.service_client.config.runtime is runtime
    assert await metrics_client(client, settings) is client
    moved = await metrics_client(dev_env.client, settings)
    assert moved is not dev_env.client and moved.service_client.config.runtime is runtime


async def test_one_runtime_per_address_serves_metrics_there() -> None:
    settings = offline_settings(metrics_port=free_port(), otel_service_name="svc-under-test")
    runtime = metrics_runtime(settings)
    assert runtime is not None
    assert metrics_runtime(settings) is runtime, "an address is bound once per process"
    assert f"http://127.0.0.1:{settings.metrics_port}/metrics" in metrics_note(settings)
    runtime.metric_meter.create_counter("keel_probe_total").add(1, {"contract": "c@1"})
    async with httpx.AsyncClient() as http:
        page = (await http.get(f"http://127.0.0.1:{settings.metrics_port}/metrics")).text
    (line,) = [line for line in page.splitlines() if line.startswith("keel_probe_total")]
    assert 'service_name="svc-under-test"' in line and line.count("service_name=") == 1


def test_a_taken_port_costs_the_endpoint_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert metrics_runtime(offline_settings(metrics_port=port)) is None
    err = capsys.readouterr().err
    assert f"metrics: no endpoint at 127.0.0.1:{port}" in err and "KEEL_METRICS_PORT" in err


def test_a_host_that_is_not_an_address_is_refused_with_what_to_set() -> None:
    with pytest.raises(KeelUserError, match="KEEL_METRICS_HOST"):
        metrics_runtime(offline_settings(metrics_host="not an address", metrics_port=free_port()))


def test_keel_histograms_get_their_own_buckets_and_one_service_label() -> None:
    config = telemetry_config("127.0.0.1:1", "billing")
    assert config.global_tags == {"service_name": "billing"}
    assert config.attach_service_name is False  # else the SDK's own service_name repeats it
    metrics = config.metrics
    assert metrics is not None and not isinstance(metrics, str)
    overrides = getattr(metrics, "histogram_bucket_overrides", None)
    assert overrides == {
        "keel_agent_confidence": list(CONFIDENCE_BUCKETS),
        "keel_gate_latency_seconds": list(GATE_LATENCY_BUCKETS),
    }


def test_otel_service_name_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "keel-eu-workers")
    monkeypatch.setenv("KEEL_METRICS_PORT", "0")
    settings = KeelSettings(_env_file=None)
    assert settings.otel_service_name == "keel-eu-workers" and settings.metrics_port == 0


def test_label_values_are_capped_per_scope_and_cut_to_length() -> None:
    names = BoundedNames(limit=2)
    assert [names.label("node:c@1", n) for n in ("a", "b", "c", "a")] == ["a", "b", OTHER, "a"]
    assert names.label("node:d@1", "c") == "c", "each scope has its own cap"
    assert len(names.label("node:e@1", "x" * 500)) == MAX_LABEL_CHARS


@workflow.defn(name="MetricsGuardProbe", sandboxed=False)
class MetricsGuardProbe:
    """Records one rejection in a ledger and settles a node: both counted by broken code."""

    @workflow.run
    async def run(self) -> int:
        ledger = Ledger()
        ledger.record(
            ValidationFailed(node="n", contract="c@1", attempt=1, kind="parse", reasons=["r"])
        )
        node_settled(ledger.metrics, "n", "c@1", "agent", 1)
        return len(ledger.events)


async def test_a_metric_that_cannot_be_counted_costs_the_metric_not_the_run(
    ts_env: WorkflowEnvironment,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug in a metric")

    monkeypatch.setitem(metrics_module._HANDLERS, "ValidationFailed", broken)
    monkeypatch.setattr(metrics_module, "_node_labels", broken)
    tq = f"metrics-guard-{uuid.uuid4()}"
    async with Worker(ts_env.client, task_queue=tq, workflows=[MetricsGuardProbe]):
        recorded = await ts_env.client.execute_workflow(
            MetricsGuardProbe.run, id=f"metrics-guard-{uuid.uuid4()}", task_queue=tq
        )
    assert recorded == 1
    assert "metrics: ValidationFailed not counted" in caplog.text
    assert "metrics: node n not counted" in caplog.text
