"""Keel's metrics on a real dev server, scraped from the worker's ``/metrics``: after a
contract review (a retried answer, a gate decided) and support emails (a refund approved, a
prompt injection denied), escalations and expiries, a fallback and a default, they hold
exactly what the runs' ledgers say, once each, also when a worker that never saw the run
replays it; ``keel worker`` serves them, named by ``OTEL_SERVICE_NAME``."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from keel.activities.providers.base import ModelReply, ModelRequest
from keel.activities.tools.email import EmailSender
from keel.contracts import REGISTRY, AgentContract, UseDefault
from keel.contracts.ledger import (
    AgentDecided,
    ChainHeadSigned,
    EventBase,
    GateDecided,
    ValidationFailed,
    parse_ledger,
)
from keel.errors import ProviderRetryableError
from keel.offline import OfflineFault, OfflineProvider
from keel.scenarios.contract_review.contracts import (
    RISK_CLASSIFIER,
    RiskAssessment,
    RiskClassifierInput,
)
from keel.scenarios.support_email import SupportEmailWorkflow
from keel.scenarios.support_email.tools import SupportDesk
from keel.settings import KeelSettings
from keel.testing import events_of, ledger_of
from keel.workers.apps import resolve_apps
from keel.workers.metrics import SDK_METRICS, metrics_client
from keel.workers.runtime import build_worker
from keel.workers.smtp_sink import SmtpSink
from keel.workflows.metrics import METRICS
from tests.conftest import REVIEW_ENV, free_port, keel_worker, offline_settings
from tests.helpers import decide, review, start_keel_worker, start_review, wait_for_gate
from tests.metrics_scrape import (
    Sample,
    event_derived,
    expected_values,
    keel_values,
    until,
)
from tests.probe_workflows import AgentNodeProbe
from tests.samples import load_sample

SERVICE = "keel-metrics-under-test"
RETRIED = "risk-classifier@1"


def metrics_settings(**overrides: Any) -> KeelSettings:
    return offline_settings(metrics_port=free_port(), otel_service_name=SERVICE, **overrides)


@asynccontextmanager
async def support_tools(tmp: Path) -> AsyncIterator[list[Any]]:
    with SmtpSink() as sink:
        sender = EmailSender.open(
            offline_settings(data_dir=tmp),
            host="127.0.0.1",
            port=sink.port,
            sender="support@keel.example",
        )
        try:
            yield [*SupportDesk().activities(), *sender.activities()]
        finally:
            await sender.aclose()


async def start_support(
    client: Client, tq: str, sample: str
) -> WorkflowHandle[SupportEmailWorkflow, Any]:
    return await client.start_workflow(
        SupportEmailWorkflow.run, load_sample(sample), id=f"metrics-{uuid.uuid4()}", task_queue=tq
    )


async def idle_at_gate(handle: WorkflowHandle[Any, Any], gate: str) -> None:
    """Until the run has signed its ledger at ``gate``: it then waits with nothing in flight."""
    reason = f"gate-opened:{gate}"
    async with asyncio.timeout(30):
        while not any(
            isinstance(e, ChainHeadSigned) and e.reason == reason for e in await ledger_of(handle)
        ):
            await asyncio.sleep(0.1)


def value(samples: list[Sample], name: str, tq: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name
        and s.labels.get("task_queue") == tq
        and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_metrics_after_a_review_and_support_emails_are_what_their_ledgers_say(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = metrics_settings()
    client = await metrics_client(dev_env.client, settings)
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1], contract=RETRIED)]
    async with (
        support_tools(tmp_path) as tools,
        keel_worker(client, provider=OfflineProvider(faults), tools=tools) as tq,
    ):
        contract = await start_review(client, tq, "medium", prefix="metrics")
        await wait_for_gate(contract, "standard-review")
        await decide(contract, review("standard-review", "approve", "legal.priya"))
        refund = await start_support(client, tq, "support-refund")
        await wait_for_gate(refund, "approve-refund")
        await decide(refund, review("approve-refund", "approve", "support.lead.chen"))
        injection = await start_support(client, tq, "support-injection")
        results = [await h.result() for h in (contract, refund, injection)]
    ledgers: list[list[EventBase]] = [list(r.ledger) for r in results]
    expected = expected_values(ledgers)

    samples = await until(
        settings.metrics_port, lambda s: event_derived(keel_values(s, tq)) == expected
    )
    assert event_derived(keel_values(samples, tq)) == expected

    # The scenario did what the metrics are about: a retried answer, two gates, a denial.
    assert value(samples, "keel_agent_retries_total", tq, contract=RETRIED, kind="parse") == 1
    assert value(samples, "keel_agent_decisions_total", tq, contract=RETRIED, verdict="parse") == 1
    assert value(samples, "keel_guardrail_denials_total", tq) >= 1
    for gate, reviewer in (("standard-review", "legal.priya"), ("approve-refund", None)):
        assert value(samples, "keel_gate_decisions_total", tq, gate=gate, decision="approve") == 1
        count = value(samples, "keel_gate_latency_seconds_count", tq, gate=gate)
        assert count == 1
        assert reviewer is None or all(reviewer not in str(s.labels) for s in samples)
    # Every answer is one decision, accepted or rejected with a reason.
    decided = [e for ledger in ledgers for e in events_of(ledger, AgentDecided)]
    rejected = [e for ledger in ledgers for e in events_of(ledger, ValidationFailed)]
    assert value(samples, "keel_agent_decisions_total", tq) == len(decided)
    assert value(samples, "keel_agent_decisions_total", tq, verdict="accepted") == len(
        decided
    ) - len(rejected)
    # The retried node settled after a retry, the others on their first answer.
    assert value(samples, "keel_agent_node_runs_total", tq, contract=RETRIED) == 1
    assert (
        value(samples, "keel_agent_node_runs_total", tq, contract=RETRIED, outcome="retried") == 1
    )
    assert value(samples, "keel_agent_node_runs_total", tq, outcome="first_pass") >= 2
    # Labels are bounded: the SDK's, the service's, Keel's own; never a workflow id.
    keel_samples = [
        s for s in samples if s.name.startswith("keel_") and s.labels.get("task_queue") == tq
    ]
    assert {s.labels["service_name"] for s in keel_samples} == {SERVICE}
    assert {s.labels["workflow_type"] for s in keel_samples} == {
        "ContractReview",
        "SupportEmail",
    }
    ids = {h.id for h in (contract, refund, injection)}
    assert not any(i in str(s.labels) for s in samples for i in ids)
    for s in keel_samples:
        base = s.name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        spec = METRICS[base if base in METRICS else s.name]
        extra = set(s.labels) - {"namespace", "task_queue", "workflow_type", "service_name", "le"}
        assert extra <= set(spec.labels), (s.name, extra)
    # The SDK's own worker metrics are on the same page, under the same service name.
    sdk = [
        s for s in samples if s.name.startswith("temporal_") and s.labels.get("task_queue") == tq
    ]
    assert sdk and {s.labels.get("service_name") for s in sdk} == {SERVICE}
    assert value(samples, "temporal_workflow_completed", tq) == 3
    # What the dashboard shows of the SDK's is there too.
    names = {s.name.removesuffix("_bucket") for s in samples}
    assert set(SDK_METRICS) <= names


async def test_a_worker_that_replays_a_run_counts_nothing_twice(
    dev_env: WorkflowEnvironment,
) -> None:
    """The run waits at its gate while its worker stops; a new worker (no cached run)
    replays its history to take the decision, and again for each query after it ends."""
    settings = metrics_settings()
    client = await metrics_client(dev_env.client, settings)
    tq = f"metrics-replay-{uuid.uuid4()}"
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1], contract=RETRIED)]

    def worker() -> Any:
        return build_worker(
            client, settings, apps=resolve_apps(), task_queue=tq, provider=OfflineProvider(faults)
        )

    async with worker():
        handle = await start_review(client, tq, "medium", prefix="metrics-replay")
        await wait_for_gate(handle, "standard-review")
        await idle_at_gate(handle, "standard-review")
    async with worker():
        await decide(handle, review("standard-review", "approve", "legal.priya"))
        result = await handle.result()
        for _ in range(3):  # a closed run is replayed from its start for every query
            await handle.query("ledger")
    expected = expected_values([list(result.ledger)])

    samples = await until(
        settings.metrics_port, lambda s: event_derived(keel_values(s, tq)) == expected
    )
    assert event_derived(keel_values(samples, tq)) == expected
    assert value(samples, "keel_agent_decisions_total", tq) == len(
        events_of(result.ledger, AgentDecided)
    )
    assert value(samples, "keel_gate_opened_total", tq) == 1
    assert value(samples, "keel_gate_decisions_total", tq) == len(
        events_of(result.ledger, GateDecided)
    )
    assert value(samples, "keel_agent_node_runs_total", tq) == 1
    assert value(samples, "keel_gate_latency_seconds_count", tq) == 1


async def test_keel_worker_serves_metrics_named_by_otel_service_name(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    port = free_port()
    tq = f"metrics-cli-{uuid.uuid4()}"
    env = {
        **os.environ,
        **REVIEW_ENV,
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "KEEL_TASK_QUEUE": tq,
        "KEEL_DATA_DIR": str(tmp_path),
        "KEEL_MODEL": "offline",
        "KEEL_CODEC": "off",
        "KEEL_METRICS_PORT": str(port),
        "OTEL_SERVICE_NAME": "keel-billing-workers",
    }
    proc = await start_keel_worker(env)
    try:
        handle = await start_review(dev_env.client, tq, "low", prefix="metrics-cli")
        await handle.result()
        samples = await until(
            port, lambda s: value(s, "keel_agent_node_runs_total", tq, outcome="first_pass") == 1
        )
    finally:
        proc.send_signal(signal.SIGINT)
        await proc.wait()
    ours = [s for s in samples if s.labels.get("task_queue") == tq]
    assert {s.labels.get("service_name") for s in ours} == {"keel-billing-workers"}
    assert any(s.name.startswith("temporal_") for s in ours)


async def test_escalations_and_expiries_are_counted_on_the_time_skipping_server(
    ts_env: WorkflowEnvironment,
) -> None:
    """Three malformed answers escalate the node to a person, who classifies by hand; the
    standard review then goes unanswered through its SLA (escalated) and its escalation SLA
    (expired)."""
    settings = metrics_settings()
    client = await metrics_client(ts_env.client, settings)
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1, 2, 3], contract=RETRIED)]
    human = {"risk_level": "medium", "clause_refs": ["3"], "rationale": "checked by hand"}
    async with keel_worker(client, faults=faults) as tq:
        handle = await start_review(client, tq, "low", prefix="metrics-escalation")
        await wait_for_gate(handle, "risk-classification")
        await decide(
            handle, review("risk-classification", "modify", "legal.sam", modifications=human)
        )
        await wait_for_gate(handle, "standard-review")
        result = await handle.result()  # time skips through both SLAs
    assert result.outcome == "rejected"
    samples = await until(
        settings.metrics_port, lambda s: value(s, "keel_gate_expiries_total", tq) == 1
    )
    assert event_derived(keel_values(samples, tq)) == expected_values([list(result.ledger)])
    node = {"contract": RETRIED, "node": "classify-risk"}
    assert value(samples, "keel_agent_decisions_total", tq, verdict="parse", **node) == 3
    assert value(samples, "keel_agent_retries_total", tq, kind="parse", **node) == 2
    assert value(samples, "keel_agent_escalations_total", tq, **node) == 1
    assert value(samples, "keel_agent_node_runs_total", tq, outcome="escalated", **node) == 1
    assert value(samples, "keel_agent_node_runs_total", tq) == 1
    assert value(samples, "keel_gate_decisions_total", tq, gate="risk-classification") == 1
    assert value(samples, "keel_gate_decisions_total", tq, decision="modify") == 1
    assert value(samples, "keel_gate_sla_escalations_total", tq, gate="standard-review") == 1
    assert value(samples, "keel_gate_expiries_total", tq, gate="standard-review") == 1
    assert value(samples, "keel_gate_opened_total", tq) == 2
    # The expired gate has no decision, so no latency; the decided one waited in workflow time.
    assert value(samples, "keel_gate_latency_seconds_count", tq, gate="standard-review") == 0
    assert value(samples, "keel_gate_latency_seconds_count", tq, gate="risk-classification") == 1


def probe_contract(version: int, **changes: Any) -> AgentContract[Any, Any]:
    return REGISTRY.register(
        AgentContract(
            name="risk-classifier",
            version=version,
            description="a risk classifier for the metrics tests",
            input_model=RiskClassifierInput,
            output_model=RiskAssessment,
            system_prompt=RISK_CLASSIFIER.system_prompt,
            prompt_template=RISK_CLASSIFIER.prompt_template,
            on_exhausted=UseDefault(output=PROBE_DEFAULT, reason="no usable answer"),
            **changes,
        )
    )


PROBE_DEFAULT = {
    "risk_level": "high",
    "clause_refs": [],
    "rationale": "assume high",
    "confidence": 1.0,
}
FALLS_BACK = probe_contract(88, provider_attempts=2, fallback_models=("offline",))
DEFAULTS = probe_contract(89, max_attempts=2)


class Overloaded:
    """A provider that is always overloaded (HTTP 529)."""

    name, model = "overloaded", "busy-1"

    async def complete(self, request: ModelRequest) -> ModelReply:
        raise ProviderRetryableError("overloaded", provider=self.name, status=529)


async def test_fallbacks_and_defaults_are_counted(ts_env: WorkflowEnvironment) -> None:
    settings = metrics_settings()
    client = await metrics_client(ts_env.client, settings)
    raw = load_sample("contract-medium-risk")
    node_input = {k: raw[k] for k in RiskClassifierInput.model_fields}
    faults = [OfflineFault(kind="malformed_json", agent_attempts=[1, 2], contract=DEFAULTS.key)]
    ledgers = []
    for contract, provider in ((FALLS_BACK, Overloaded()), (DEFAULTS, OfflineProvider(faults))):
        async with keel_worker(client, provider=provider, extra_workflows=[AgentNodeProbe]) as tq:
            result = await client.execute_workflow(
                AgentNodeProbe.run,
                {"contract": contract.key, "input": node_input},
                id=f"metrics-probe-{uuid.uuid4()}",
                task_queue=tq,
            )
        ledgers.append((tq, parse_ledger(result["ledger"])))
    (fell_back, _), (defaulted, _) = ledgers
    samples = await until(
        settings.metrics_port, lambda s: value(s, "keel_agent_defaults_total", defaulted) == 1
    )
    for tq, ledger in ledgers:
        assert event_derived(keel_values(samples, tq)) == expected_values([list(ledger)])
    node = {"node": "probe"}
    assert value(samples, "keel_agent_fallbacks_total", fell_back, **node) == 1
    assert value(samples, "keel_agent_node_runs_total", fell_back, outcome="first_pass") == 1
    assert value(samples, "keel_agent_defaults_total", defaulted, contract=DEFAULTS.key) == 1
    assert value(samples, "keel_agent_node_runs_total", defaulted, outcome="default") == 1
    assert value(samples, "keel_agent_decisions_total", defaulted, verdict="parse") == 2
    assert value(samples, "keel_agent_retries_total", defaulted, kind="parse") == 1


async def test_keel_dev_serves_metrics_for_its_worker(tmp_path: Path) -> None:
    from tests.test_dev_and_demo import DevStack, stack_env

    port = free_port()
    env = {
        **stack_env(tmp_path, free_port(), free_port()),
        "KEEL_INBOX_PORT": str(free_port()),
        "KEEL_PROGRESS_PORT": str(free_port()),
        "KEEL_METRICS_PORT": str(port),
        "OTEL_SERVICE_NAME": "keel-dev-under-test",
    }
    async with DevStack(env, "--app", "keel.scenarios.contract_review"):
        samples = await until(port, lambda s: any(x.name == "temporal_worker_start" for x in s))
    started = [s for s in samples if s.name == "temporal_worker_start"]
    assert started and {s.labels["service_name"] for s in started} == {"keel-dev-under-test"}
