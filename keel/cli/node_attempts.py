"""The recorded attempts of an agent node, found in a stored ledger (for ``keel debug``).

A *node run* is one call of ``AgentNodes.run`` for a node: attempt 1, then the retries of
its rejected answers. A node can run more than once in an execution (a reviewer's
rejection re-invokes it; a continued execution runs it again in a later run), so an
attempt is named by the node, the node run (1-based, oldest first) and the attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from keel.cli.ledgers import RunLedger
from keel.cli.output import FAILURE, USAGE, CliError
from keel.cli.render import escape
from keel.contracts.ledger import AgentDecided, ValidationFailed

MAX_LISTED = 20
"""Node runs an error lists at most (an ingestion ledger can hold hundreds of one node)."""

_DECIDED = AgentDecided.model_fields["type"].default
_REJECTED = ValidationFailed.model_fields["type"].default


@dataclass(frozen=True)
class RecordedVerdict:
    """What the workflow made of an answer: accepted, or rejected with a kind and reasons."""

    accepted: bool
    kind: str | None = None
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        """``accepted``, or ``rejected (kind): reason; reason``."""
        if self.accepted:
            return "accepted"
        return f"rejected ({self.kind}): {'; '.join(self.reasons)}"


@dataclass(frozen=True)
class RecordedAttempt:
    """One recorded attempt: its decision, the verdict on it, and where it is stored."""

    node_run: int
    """The node run it belongs to (1-based)."""
    run_id: str
    """The Temporal run whose ledger (and history) holds it."""
    ordinal: int
    """Its place among this node's decisions in that Temporal run (0-based): the same place
    its activity's completion has among that run's completed calls of the node."""
    decided: AgentDecided
    verdict: RecordedVerdict
    ledger_input: dict[str, Any] | None
    """The node run's input as the ledger recorded it (PII-redacted), if it did."""


@dataclass
class NodeRun:
    """One run of a node: its attempts, in order."""

    index: int
    run_id: str
    attempts: list[RecordedAttempt] = field(default_factory=list)

    def describe(self) -> str:
        """One line for a list of choices."""
        first = self.attempts[0].decided
        numbers = ", ".join(str(a.decided.attempt) for a in self.attempts)
        return (
            f"--run-index {self.index}: ledger event #{first.seq}, run {self.run_id}, "
            f"attempts {numbers}, last {self.attempts[-1].verdict.describe()[:80]}"
        )


def node_runs(runs: Sequence[RunLedger], node: str) -> list[NodeRun]:
    """Every run of ``node`` in an execution's ledger, oldest first.

    Raises:
        CliError: a decision of the node does not parse (a forged or damaged ledger).
    """
    found: list[NodeRun] = []
    for run in runs:
        ordinal = 0
        current: NodeRun | None = None
        ledger_input: Any = None
        for index, raw in enumerate(run.events):
            if not _is(raw, _DECIDED) or raw.get("node") != node:
                continue
            decided = _decided(raw)
            if current is None or decided.attempt == 1:
                current = NodeRun(len(found) + 1, run.run_id)
                found.append(current)
                ledger_input = raw.get("input")
            current.attempts.append(
                RecordedAttempt(
                    node_run=current.index,
                    run_id=run.run_id,
                    ordinal=ordinal,
                    decided=decided,
                    verdict=_verdict(run.events[index + 1 :], decided),
                    ledger_input=ledger_input if isinstance(ledger_input, dict) else None,
                )
            )
            ordinal += 1
    return found


def agent_nodes(runs: Sequence[RunLedger]) -> list[str]:
    """The names of the agent nodes that decided something in the ledger, in order."""
    names: dict[str, None] = {}
    for run in runs:
        for raw in run.events:
            if _is(raw, _DECIDED) and isinstance(raw.get("node"), str):
                names[raw["node"]] = None
    return list(names)


def pick_attempt(
    runs: Sequence[RunLedger],
    workflow_id: str,
    node: str,
    *,
    node_run: int | None,
    attempt: int,
) -> tuple[RecordedAttempt, int]:
    """The recorded attempt named, and how many runs the node had.

    Raises:
        CliError: no such node, node run or attempt (exit 1, naming what there is); the
            node ran more than once and ``node_run`` is not given (exit 2, listing them).
    """
    found = node_runs(runs, node)
    if not found:
        known = ", ".join(escape(n) for n in agent_nodes(runs)) or "none"
        raise CliError(
            f"no agent node {escape(node)!r} decided anything in the ledger of "
            f"{escape(workflow_id)} (its agent nodes: {known})",
            FAILURE,
        )
    if node_run is None and len(found) > 1:
        raise CliError(
            f"agent node {escape(node)!r} ran {len(found)} times in {escape(workflow_id)}; "
            f"pick one:\n{_choices(found)}",
            USAGE,
        )
    index = node_run or 1
    if not 1 <= index <= len(found):
        raise CliError(
            f"agent node {escape(node)!r} ran {len(found)} time(s) in {escape(workflow_id)}, "
            f"so there is no node run {index}:\n{_choices(found)}",
            FAILURE,
        )
    chosen = found[index - 1]
    for recorded in chosen.attempts:
        if recorded.decided.attempt == attempt:
            return recorded, len(found)
    numbers = ", ".join(str(a.decided.attempt) for a in chosen.attempts)
    raise CliError(
        f"node run {index} of {escape(node)!r} recorded no attempt {attempt} (its attempts: "
        f"{numbers}; a call that failed before answering records no decision)",
        FAILURE,
    )


def _choices(found: Sequence[NodeRun]) -> str:
    lines = [f"  {escape(r.describe())}" for r in found[:MAX_LISTED]]
    if len(found) > MAX_LISTED:
        lines.append(f"  ... and {len(found) - MAX_LISTED} more (up to --run-index {len(found)})")
    return "\n".join(lines)


def _verdict(later: Sequence[Any], decided: AgentDecided) -> RecordedVerdict:
    """The workflow's verdict on ``decided``: a rejection is recorded right after the
    decision (same workflow code, no await between), as the node's next event."""
    for raw in later:
        if isinstance(raw, dict) and raw.get("node") == decided.node:
            if _is(raw, _REJECTED) and raw.get("attempt") == decided.attempt:
                reasons = raw.get("reasons")
                return RecordedVerdict(
                    accepted=False,
                    kind=str(raw.get("kind")),
                    reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
                )
            break
    return RecordedVerdict(accepted=True)


def _decided(raw: dict[str, Any]) -> AgentDecided:
    try:
        return AgentDecided.model_validate(raw)
    except ValidationError as exc:
        raise CliError(
            f"ledger event #{escape(str(raw.get('seq')))} is an AgentDecided that does not "
            f"parse: {escape(str(exc).splitlines()[0])}",
            FAILURE,
        ) from exc


def _is(raw: Any, kind: str) -> bool:
    return isinstance(raw, dict) and raw.get("type") == kind
