"""Readable text for ledgers and gates (``keel ledger``, ``keel gates``, ``keel demo``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from keel.contracts.gates import GateView
from keel.contracts.integrity import LedgerReport
from keel.contracts.ledger import GENESIS_HASH, EventBase, verify_chain

_Formatter = Callable[[Any], str]

_FORMATS: dict[str, _Formatter] = {
    "WorkflowStarted": lambda e: (
        f"{e.workflow} {e.workflow_id} (input sha256 {e.input_sha256[:12]})"
    ),
    "InputRejected": lambda e: "; ".join(e.reasons),
    "CheckpointTaken": lambda e: f"{e.checkpoint} keys={e.keys}",
    "AgentDecided": lambda e: (
        f"{e.node} {e.contract} (fp {e.contract_fingerprint[:12]}) {e.provider}/{e.model} "
        f"attempt {e.attempt}"
        + (f" (provider call {e.activity_attempt})" if e.activity_attempt > 1 else "")
        + ": "
        + (_output_text(e.output) if e.output else f"UNPARSED ({e.parse_error})")
        + f", tokens {e.input_tokens}/{e.output_tokens}, {e.latency_ms:.1f} ms"
        + (f", feedback {e.feedback}" if e.feedback else "")
    ),
    "ValidationFailed": lambda e: (
        f"{e.node} attempt {e.attempt} [{e.kind}]: {'; '.join(e.reasons)}"
    ),
    "AgentRetried": lambda e: f"{e.node} -> attempt {e.next_attempt} from {e.from_checkpoint}",
    "AgentCallFailed": lambda e: f"{e.node} attempt {e.attempt}: {e.error_type}: {e.message}",
    "PolicyApplied": lambda e: (
        f"{e.node} {e.policy}: {e.action}"
        + (f", {len(e.changes)} redaction(s)" if e.changes else "")
        + (f" ({e.reason})" if e.action == "deny" else "")
    ),
    "ProviderFallback": lambda e: (
        f"{e.node} attempt {e.attempt}: {e.from_model} -> {e.to_model} ({e.reason})"
    ),
    "RolledBack": lambda e: f"to {e.checkpoint} ({e.reason}); discarded {e.discarded_keys}",
    "Escalated": lambda e: f"{e.subject} -> {', '.join(e.to)}: {e.reason}",
    "DefaultApplied": lambda e: f"{e.node}: {e.reason}",
    "GateOpened": lambda e: (
        f"{e.gate} '{e.title}' for {', '.join(e.reviewers) or 'anyone'}, "
        f"deadline {e.deadline:%Y-%m-%d %H:%M}"
    ),
    "GateDecided": lambda e: (
        f"{e.gate}: {e.decision} by {e.reviewer} via {e.via}"
        + (f" for {e.on_behalf_of}" if e.on_behalf_of else "")
        + (f" from {e.device}" if e.device else "")
        + _signed_by(e)
        + (f", comment {e.comment!r}" if e.comment else "")
        + (f", modifications {e.modifications}" if e.modifications else "")
    ),
    "GateApproved": lambda e: (
        f"{e.gate}: approval {e.approvals} of {e.approvals_needed} by {e.reviewer}"
        + (f" for {e.on_behalf_of}" if e.on_behalf_of else "")
        + _signed_by(e)
    ),
    "GateReassigned": lambda e: (
        f"{e.gate}: {e.reviewer} handed it to "
        f"{', '.join([*e.to_reviewers, *(f'role {r}' for r in e.to_roles)])}: {e.comment!r}"
    ),
    "GateDeferred": lambda e: (
        f"{e.gate}: {e.reviewer} said not now" + (f" ({e.comment!r})" if e.comment else "")
    ),
    "ReviewRefused": lambda e: f"{e.gate} from {e.reviewer} via {e.via}: {'; '.join(e.reasons)}",
    "GateExpired": lambda e: (
        f"{e.gate} after {e.waited_seconds / 3600:.1f} h -> {e.default_decision}"
    ),
    "Routed": lambda e: f"{e.rule} read {e.inputs} -> {e.route}",
    "PlanProposed": lambda e: (
        f"round {e.round} by {e.planner} ({e.source}): "
        + (", ".join(_task_text(t) for t in e.tasks) or "no tasks")
        + ("; done" if e.done else "")
    ),
    "PlanRejected": lambda e: f"round {e.round} #{e.rejection}: {'; '.join(e.reasons)}",
    "PlanMaterialized": lambda e: (
        f"round {e.round}: " + " then ".join("+".join(level) for level in e.levels)
    ),
    "TaskCompleted": lambda e: (
        f"r{e.round}/{e.ref} {e.tool}"
        + (f" effect {e.effect['provider_id']}" if e.effect else "")
        + (" (replayed)" if e.effect and e.effect.get("replayed") else "")
    ),
    "TaskFailed": lambda e: f"r{e.round}/{e.ref} {e.tool}: {e.error}",
    "TaskSkipped": lambda e: f"r{e.round}/{e.ref}: {e.reason}",
    "Compensated": lambda e: (
        f"r{e.round}/{e.ref} undone by {e.tool}" + ("" if e.ok else f" FAILED: {e.error}")
    ),
    "LedgerContinued": lambda e: f"run {e.run} continues run {e.previous_run_id}",
    "ContinuedAsNew": lambda e: f"after {e.rounds_done} rounds: {e.reason}",
    "ChainHeadSigned": lambda e: f"#{e.covers_seq} {e.covers_hash[:16]} by {e.key_id} ({e.reason})",
    "WorkflowCompleted": lambda e: (
        f"{e.outcome} ({_fields(e.summary, 'decided_by', 'reason', 'rounds', 'summary')})"
    ),
}


def _task_text(task: dict[str, Any]) -> str:
    after = f" after {'+'.join(task['depends_on'])}" if task.get("depends_on") else ""
    gate = " [gated]" if task.get("gate") else ""
    undo = f" [undo: {task['compensation']}]" if task.get("compensation") else ""
    return f"{task['ref']}={task['tool']}{after}{gate}{undo}"


def _output_text(output: dict[str, Any]) -> str:
    """The answer's first short scalar fields and its confidence: what a reader scans for."""
    scalars = [
        f"{name}={value}"
        for name, value in output.items()
        if name != "confidence" and isinstance(value, str | int | float) and len(str(value)) <= 40
    ]
    return ", ".join([*scalars[:3], f"confidence={output.get('confidence')}"])


def _fields(values: dict[str, Any], *names: str) -> str:
    return ", ".join(f"{n}={values[n]}" for n in names if n in values)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls (newlines, ANSI escapes), Unicode line breaks and bidi overrides."""

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    r"""``text`` with every character that could forge a line, move the cursor or reorder
    what a terminal shows written as an escape (``\n``, ``\x1b``, ``\u2028``)."""
    return _CONTROL.sub(lambda m: _ESCAPES.get(m[0]) or _code(m[0]), text)


def _code(char: str) -> str:
    point = ord(char)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


def ledger_text(
    events: Sequence[EventBase],
    *,
    genesis: str | None = None,
    report: LedgerReport | None = None,
    status: str = "RUNNING",
) -> str:
    """One line per event, then the verification: ``report`` (of the ledger as stored, with
    its signatures) when given, else the hash chain of ``events`` (from ``genesis`` when
    they are one run of a workflow that continued as new); ``status`` is the latest run's."""
    lines = []
    for event in events:
        formatter = _FORMATS.get(event.type)
        detail = formatter(event) if formatter else event.describe()
        lines.append(f"#{event.seq:<3} {event.at:%Y-%m-%d %H:%M:%S}  {event.type:<17} {detail}")
    if report is not None:
        lines += verification_lines(report, status)
    else:
        first_seq = events[0].seq if events and genesis else 1
        chain = verify_chain(events, genesis=genesis or GENESIS_HASH, first_seq=first_seq)
        if chain.ok:
            lines.append(f"hash chain verified: {chain.events} events, head {chain.head_hash[:16]}")
        else:
            lines.append(f"HASH CHAIN BROKEN at event {chain.broken_at}: {chain.reason}")
    return "\n".join(escape(line) for line in lines)  # a field's newline cannot forge a line


def _signed_by(event: Any) -> str:
    """`` from <issuer>, signed by <key id>`` for a signed reviewer action."""
    auth = event.auth or {}
    issuer = auth.get("issuer") or auth.get("method")
    text = f" from {issuer}" if issuer else ""
    return text + (f", signed by {event.key_id}" if event.key_id else "")


def verification_lines(report: LedgerReport, status: str = "RUNNING") -> list[str]:
    """What ``keel ledger`` and ``keel verify`` say of a verified (or broken) ledger whose
    latest run has ``status``."""
    if not report.ok:
        return [f"LEDGER BROKEN at event #{report.broken_at}: {report.reason}"]
    lines = [f"hash chain verified: {report.events} events, head {report.head_hash[:16]}"]
    if report.legacy:
        return [*lines, f"scheme {report.scheme}: unsigned legacy ledger (nothing signs it)"]
    last = report.last_signed
    if last is None:
        lines.append(f"scheme {report.scheme}: no signed head yet")
    else:
        lines.append(
            f"scheme {report.scheme}: signed by {last.key_id} at #{last.covers_seq} "
            f"({last.reason}); {len(report.signed)} signed heads"
        )
    if report.unsigned:
        why = (
            "run still open"
            if status == "RUNNING"
            else f"the run is {status.lower()}: it ended before signing them"
        )
        lines.append(f"{report.unsigned} events after the last signed head are unsigned ({why})")
    if report.signed and not report.signatures_checked:
        lines.append(
            "signatures not checked: no trusted keys here (set KEEL_TRUSTED_KEYS_FILE, or run "
            "keel verify --keys FILE)"
        )
    if report.decisions_checked is not None:
        lines.append(f"{report.decisions_checked} reviewer decisions signed by trusted keys")
    return lines


def gates_text(rows: list[tuple[str, GateView]]) -> str:
    """The open gates across executions, as a table."""
    if not rows:
        return "no gates are waiting for a reviewer"
    header = f"{'WORKFLOW ID':<44} {'GATE':<22} {'STATE':<18} {'DEADLINE (UTC)':<17} REVIEWERS"
    lines = [header]
    for workflow_id, gate in rows:
        deadline = f"{gate.deadline:%Y-%m-%d %H:%M}" if gate.deadline else "-"
        who = [*gate.reviewers, *(f"role {r}" for r in gate.roles)]
        reviewers = escape(", ".join(who) or "anyone")
        if gate.approvals_needed > 1:
            reviewers += f" ({len(gate.approved_by)} of {gate.approvals_needed} approvals)"
        lines.append(
            f"{escape(workflow_id):<44} {escape(gate.gate):<22} {gate.state.value:<18} "
            f"{deadline:<17} {reviewers}"
        )
        if gate.reason:  # why it opened, e.g. an escalated agent node's problem and its fix
            lines.append(f"  why: {escape(gate.reason)}")
    return "\n".join(lines)


def ui_link(ui_url: str, namespace: str, workflow_id: str, run_id: str | None) -> str:
    """The Temporal UI's page of an execution (its history, when ``run_id`` is known)."""
    tail = f"/{run_id}/history" if run_id else ""
    return f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{workflow_id}{tail}"
