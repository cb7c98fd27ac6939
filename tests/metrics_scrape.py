"""Reading a Prometheus ``/metrics`` page in tests: its samples, and what the ledgers of the
runs behind it say the Keel metrics must be (counted here independently of
``keel.workflows.metrics``, from the events)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import httpx

from keel.contracts.ledger import (
    AgentDecided,
    AgentRetried,
    DefaultApplied,
    EventBase,
    GateDecided,
    GateExpired,
    GateOpened,
    PolicyApplied,
    ProviderFallback,
    ValidationFailed,
)

LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """The samples of a Prometheus text page; a label repeated on one sample fails (the
    Prometheus server refuses to scrape such a page)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, f"not a sample line: {line!r}"
        pairs = [(p["key"], p["value"]) for p in LABEL.finditer(m["labels"] or "")]
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"a label appears twice: {line!r}"
        samples.append(Sample(m["name"], dict(pairs), float(m["value"])))
    return samples


async def scrape(port: int) -> list[Sample]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    response.raise_for_status()
    return parse(response.text)


Key = tuple[str, frozenset[tuple[str, str]]]
"""A series: its name and its labels."""


def keel_values(samples: Iterable[Sample], task_queue: str) -> dict[Key, float]:
    """Keel's counter values (and histogram counts and sums) of the runs on ``task_queue``,
    by name and labels (the SDK's ``namespace``, ``task_queue``, ``workflow_type`` and
    ``service_name`` left out)."""
    sdk = {"namespace", "task_queue", "workflow_type", "service_name"}
    out: defaultdict[Key, float] = defaultdict(float)
    for s in samples:
        if not s.name.startswith("keel_") or s.labels.get("task_queue") != task_queue:
            continue
        if s.name.endswith("_bucket"):
            continue
        labels = frozenset((k, v) for k, v in s.labels.items() if k not in sdk)
        out[(s.name, labels)] += s.value
    return {key: round(value, 6) for key, value in out.items()}


def expected_values(ledgers: Iterable[list[EventBase]]) -> dict[Key, float]:
    """What Keel's metrics must hold after runs with these ledgers (counts and sums;
    ``keel_agent_node_runs_total`` and accepted decisions are not in any event: left out)."""
    out: defaultdict[Key, float] = defaultdict(float)

    def add(name: str, labels: dict[str, str], value: float = 1) -> None:
        if value:
            out[(name, frozenset(labels.items()))] += value

    for ledger in ledgers:
        opened: dict[str, GateOpened] = {}
        for i, e in enumerate(ledger):
            node = {
                "contract": str(getattr(e, "contract", "")),
                "node": str(getattr(e, "node", "")),
            }
            if isinstance(e, AgentDecided):
                if e.confidence is not None:
                    add("keel_agent_confidence_count", node)
                    add("keel_agent_confidence_sum", node, e.confidence)
                for direction, tokens in (("input", e.input_tokens), ("output", e.output_tokens)):
                    labels = {**node, "model": e.model, "direction": direction}
                    add("keel_agent_tokens_total", labels, tokens or 0)
            elif isinstance(e, ValidationFailed):
                add("keel_agent_decisions_total", {**node, "verdict": e.kind})
            elif isinstance(e, AgentRetried):
                cause = ledger[i - 1]
                assert isinstance(cause, ValidationFailed)
                add("keel_agent_retries_total", {**node, "kind": cause.kind})
            elif isinstance(e, ProviderFallback):
                add("keel_agent_fallbacks_total", node)
            elif isinstance(e, DefaultApplied):
                add("keel_agent_defaults_total", node)
            elif isinstance(e, PolicyApplied) and e.action == "deny":
                add("keel_guardrail_denials_total", {**node, "policy": e.policy})
            elif isinstance(e, GateOpened):
                opened[e.gate] = e
                add("keel_gate_opened_total", {"gate": e.gate})
            elif isinstance(e, GateDecided):
                gate = {"gate": e.gate, "decision": e.decision}
                add("keel_gate_decisions_total", gate)
                add("keel_gate_latency_seconds_count", gate)
                seconds = (e.at - opened[e.gate].at).total_seconds()
                add("keel_gate_latency_seconds_sum", gate, seconds)
            elif isinstance(e, GateExpired):
                add("keel_gate_expiries_total", {"gate": e.gate})
    return {key: round(value, 6) for key, value in out.items()}


def event_derived(values: Mapping[Key, float]) -> dict[Key, float]:
    """``values`` without what no single event carries (node outcomes, accepted answers,
    escalations): what ``expected_values`` can be compared with."""
    return {
        key: value
        for key, value in values.items()
        if key[0]
        not in {
            "keel_agent_node_runs_total",
            "keel_agent_escalations_total",
            "keel_gate_sla_escalations_total",
        }
        and ("verdict", "accepted") not in key[1]
    }


async def until(
    port: int, ready: Callable[[list[Sample]], bool], timeout: float = 15
) -> list[Sample]:
    """The page once ``ready`` says so, or as it is after ``timeout`` seconds (the exporter
    may lag what was recorded by a moment): the caller asserts what it needs."""
    samples = await scrape(port)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while not ready(samples):
                await asyncio.sleep(0.2)
                samples = await scrape(port)
    return samples
