"""Keel's own metrics, counted in workflow code from the events the ledger records.

Every metric comes from ``workflow.metric_meter()``: the SDK skips it while a run replays
(a worker restart, a query on a worker that had evicted the run), so each event is counted
once, by the worker that first recorded it. The ledger calls ``LedgerMetrics.observe`` for
every event it records; the only other call site is ``node_settled`` (an accepted answer
records no event of its own).

Names are exported exactly as ``METRICS`` spells them (the SDK adds no prefix or suffix to
custom metrics); the SDK adds the labels ``namespace``, ``task_queue`` and ``workflow_type``,
and Keel's runtime ``service_name`` (``keel.workers.metrics``). Labels are bounded: contract,
node, gate, verdict, kind, policy; never a workflow id or a person. Node and gate names an
app or a planner makes per item (an ingestion record's id, a planned task's ref) are capped
per contract (``MAX_NAMES``): past the cap they count as ``other``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from keel.contracts.ledger import (
        AgentDecided,
        AgentRetried,
        DefaultApplied,
        Escalated,
        EventBase,
        GateDecided,
        GateExpired,
        GateOpened,
        NodeFailed,
        PolicyApplied,
        ProviderFallback,
        ValidationFailed,
    )

GATE_LATENCY_BUCKETS = (
    *(1.0, 10.0, 60.0, 300.0, 900.0, 1800.0),
    *(3600.0, 2 * 3600.0, 4 * 3600.0, 8 * 3600.0, 24 * 3600.0, 3 * 86400.0, 7 * 86400.0),
)
"""Seconds from a gate's opening to its decision: a minute to a week (SLAs are hours)."""

CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
"""Finer near the top, where contracts set their thresholds."""


@dataclass(frozen=True)
class Metric:
    """One of Keel's metrics, as it appears on ``/metrics``."""

    name: str
    kind: Literal["counter", "histogram"]
    description: str
    labels: tuple[str, ...]
    unit: str = ""
    buckets: tuple[float, ...] = ()


_NODE = ("contract", "node")
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "keel_agent_decisions_total",
            "counter",
            "Agent answers (AgentDecided), by what the workflow made of each: accepted, or "
            "rejected for its parse, schema, rule or confidence",
            (*_NODE, "verdict"),
        ),
        Metric(
            "keel_agent_node_runs_total",
            "counter",
            "Agent node runs by how they settled: first_pass, retried (accepted after a "
            "retry), default, escalated, denied (by a guardrail), failed (not the agent's "
            "fault)",
            (*_NODE, "outcome"),
        ),
        Metric(
            "keel_agent_retries_total",
            "counter",
            "Agent retries (AgentRetried), by the kind of the rejection that caused them",
            (*_NODE, "kind"),
        ),
        Metric(
            "keel_agent_fallbacks_total",
            "counter",
            "Switches to a contract's fallback model after the model call failed",
            _NODE,
        ),
        Metric(
            "keel_agent_defaults_total",
            "counter",
            "Spent retry budgets that took the contract's deterministic default",
            _NODE,
        ),
        Metric(
            "keel_agent_escalations_total",
            "counter",
            "Agent nodes handed to a person (the contract's escalation gate)",
            _NODE,
        ),
        Metric(
            "keel_guardrail_denials_total",
            "counter",
            "Model calls a guardrail denied, by policy",
            (*_NODE, "policy"),
        ),
        Metric(
            "keel_agent_confidence",
            "histogram",
            "Confidence of each agent answer that reported one",
            _NODE,
            buckets=CONFIDENCE_BUCKETS,
        ),
        Metric(
            "keel_agent_tokens_total",
            "counter",
            "Tokens of the model calls, as the providers reported them",
            (*_NODE, "model", "direction"),
        ),
        Metric("keel_gate_opened_total", "counter", "Approval gates opened", ("gate",)),
        Metric(
            "keel_gate_decisions_total",
            "counter",
            "Gate decisions (GateDecided) by decision: approve, modify, reject",
            ("gate", "decision"),
        ),
        Metric(
            "keel_gate_latency_seconds",
            "histogram",
            "Workflow time from a gate's opening to its decision",
            ("gate", "decision"),
            unit="s",
            buckets=GATE_LATENCY_BUCKETS,
        ),
        Metric(
            "keel_gate_sla_escalations_total",
            "counter",
            "Gates escalated because their SLA passed without a decision",
            ("gate",),
        ),
        Metric(
            "keel_gate_expiries_total",
            "counter",
            "Gates that expired without a decision and took their default",
            ("gate",),
        ),
    )
}
"""Every metric Keel emits, by name (the docs, the dashboard and its tests read this)."""

SDK_LABELS = ("namespace", "task_queue", "workflow_type", "service_name")
"""Labels on every Keel metric besides its own: the SDK's, and the runtime's service name."""

MAX_NAMES = 50
"""Distinct node names per contract (and gate names per workflow type) counted by name."""

OTHER = "other"
MAX_LABEL_CHARS = 100


class BoundedNames:
    """Names as labels, at most ``limit`` distinct per scope; later ones are ``other``.

    Process-wide (the ``keel`` package is shared by every run in the sandbox), so the cap
    holds across runs. Which names make the cap depends on the order a worker saw them:
    metrics only, never workflow state.
    """

    def __init__(self, limit: int = MAX_NAMES) -> None:
        self._limit = limit
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def label(self, scope: str, name: str) -> str:
        """``name`` (cut to ``MAX_LABEL_CHARS``), or ``other`` once ``scope`` is full."""
        name = name[:MAX_LABEL_CHARS]
        with self._lock:
            seen = self._seen.setdefault(scope, set())
            if name in seen:
                return name
            if len(seen) >= self._limit:
                return OTHER
            seen.add(name)
            return name


NAMES = BoundedNames()


class LedgerMetrics:
    """The metrics of one run, made from its ledger's events as they are recorded; the
    instruments are made on first use (a run that records no such event makes none)."""

    def __init__(self) -> None:
        self._instruments: dict[str, Any] = {}

    def observe(self, event: EventBase, events: Sequence[EventBase]) -> None:
        """Count ``event``, just recorded; ``events`` is the run's ledger so far (it ends
        with ``event``). Never raises: a metric must not fail a run."""
        handler = _HANDLERS.get(event.type)
        if handler is None:
            return
        try:
            handler(self, event, events)
        except Exception as err:  # a bug here must cost a metric, never the run
            workflow.logger.warning("metrics: %s not counted: %r", event.type, err)

    def add(self, name: str, labels: Mapping[str, str], value: int = 1) -> None:
        """Add ``value`` to the counter ``name`` with ``labels``."""
        if value > 0:
            self._instrument(name).add(value, labels)

    def record(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        """Record ``value`` in the histogram ``name`` with ``labels``."""
        self._instrument(name).record(value, labels)

    def _instrument(self, name: str) -> Any:
        found = self._instruments.get(name)
        if found is None:
            spec = METRICS[name]
            meter = workflow.metric_meter()
            if spec.kind == "counter":
                found = meter.create_counter(name, spec.description, spec.unit or None)
            else:
                found = meter.create_histogram_float(name, spec.description, spec.unit or None)
            self._instruments[name] = found
        return found


def node_settled(
    metrics: LedgerMetrics, node: str, contract: str, source: str, attempts: int
) -> None:
    """Count how an agent node run settled (``AgentOutcome.source`` after ``attempts``); an
    accepted answer also counts as a decision with verdict ``accepted``. Never raises."""
    try:
        labels = _node_labels(contract, node)
        if source == "agent":
            metrics.add("keel_agent_decisions_total", {**labels, "verdict": "accepted"})
            outcome = "first_pass" if attempts == 1 else "retried"
        else:
            outcome = {"default": "default", "denied": "denied"}.get(source, "escalated")
        metrics.add("keel_agent_node_runs_total", {**labels, "outcome": outcome})
    except Exception as err:  # as in observe: a metric, never the run
        workflow.logger.warning("metrics: node %s not counted: %r", node, err)


def _node_labels(contract: str, node: str) -> dict[str, str]:
    return {"contract": contract, "node": NAMES.label(f"node:{contract}", node)}


def _gate_label(gate: str) -> dict[str, str]:
    return {"gate": NAMES.label(f"gate:{workflow.info().workflow_type}", gate)}


def _decided(m: LedgerMetrics, e: AgentDecided, _: Sequence[EventBase]) -> None:
    labels = _node_labels(e.contract, e.node)
    if e.confidence is not None:
        m.record("keel_agent_confidence", e.confidence, labels)
    labels["model"] = e.model[:MAX_LABEL_CHARS]
    m.add("keel_agent_tokens_total", {**labels, "direction": "input"}, e.input_tokens or 0)
    m.add("keel_agent_tokens_total", {**labels, "direction": "output"}, e.output_tokens or 0)


def _rejected(m: LedgerMetrics, e: ValidationFailed, _: Sequence[EventBase]) -> None:
    labels = _node_labels(e.contract, e.node)
    m.add("keel_agent_decisions_total", {**labels, "verdict": e.kind})


def _retried(m: LedgerMetrics, e: AgentRetried, events: Sequence[EventBase]) -> None:
    # The rejection that caused it is the event before it.
    cause = events[-2] if len(events) > 1 else None
    kind = cause.kind if isinstance(cause, ValidationFailed) else "unknown"
    m.add("keel_agent_retries_total", {**_node_labels(e.contract, e.node), "kind": kind})


def _fallback(m: LedgerMetrics, e: ProviderFallback, _: Sequence[EventBase]) -> None:
    m.add("keel_agent_fallbacks_total", _node_labels(e.contract, e.node))


def _default(m: LedgerMetrics, e: DefaultApplied, _: Sequence[EventBase]) -> None:
    m.add("keel_agent_defaults_total", _node_labels(e.contract, e.node))


def _failed(m: LedgerMetrics, e: NodeFailed, _: Sequence[EventBase]) -> None:
    labels = _node_labels(e.contract, e.node)
    m.add("keel_agent_node_runs_total", {**labels, "outcome": "failed"})


def _policy(m: LedgerMetrics, e: PolicyApplied, _: Sequence[EventBase]) -> None:
    if e.action == "deny":
        labels = {**_node_labels(e.contract, e.node), "policy": e.policy[:MAX_LABEL_CHARS]}
        m.add("keel_guardrail_denials_total", labels)


def _escalated(m: LedgerMetrics, e: Escalated, events: Sequence[EventBase]) -> None:
    kind, _, name = e.subject.partition(":")
    if kind == "gate":
        m.add("keel_gate_sla_escalations_total", _gate_label(name))
    elif kind == "node":
        # Escalated names the node only: its contract is the one of the node's last event.
        contract = next(
            (
                str(getattr(x, "contract", ""))
                for x in reversed(events)
                if getattr(x, "node", None) == name and getattr(x, "contract", None)
            ),
            "unknown",
        )
        m.add("keel_agent_escalations_total", _node_labels(contract, name))


def _opened(m: LedgerMetrics, e: GateOpened, _: Sequence[EventBase]) -> None:
    m.add("keel_gate_opened_total", _gate_label(e.gate))


def _gate_decided(m: LedgerMetrics, e: GateDecided, events: Sequence[EventBase]) -> None:
    labels = {**_gate_label(e.gate), "decision": e.decision}
    m.add("keel_gate_decisions_total", labels)
    opened = next(
        (x for x in reversed(events) if isinstance(x, GateOpened) and x.gate == e.gate), None
    )
    if opened is not None:  # opened in an earlier run of a continued execution: no latency
        seconds = max((e.at - opened.at).total_seconds(), 0.0)
        m.record("keel_gate_latency_seconds", seconds, labels)


def _expired(m: LedgerMetrics, e: GateExpired, _: Sequence[EventBase]) -> None:
    m.add("keel_gate_expiries_total", _gate_label(e.gate))


_HANDLERS: dict[str, Callable[[LedgerMetrics, Any, Sequence[EventBase]], None]] = {
    "AgentDecided": _decided,
    "ValidationFailed": _rejected,
    "AgentRetried": _retried,
    "ProviderFallback": _fallback,
    "DefaultApplied": _default,
    "NodeFailed": _failed,
    "PolicyApplied": _policy,
    "Escalated": _escalated,
    "GateOpened": _opened,
    "GateDecided": _gate_decided,
    "GateExpired": _expired,
}
