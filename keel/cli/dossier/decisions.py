"""One agent decision as the dossier shows it: its provenance, what checked it, what happened
to it downstream, and the ten answers an auditor asks of it.

What became of it (and which gate reviewed it) is ``keel.contracts.outcomes``' pairing, the
one the training export and the trust report use, so the three never disagree.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.contracts.ledger import (
    AgentCallFailed,
    AgentDecided,
    AgentRetried,
    DefaultApplied,
    Escalated,
    PolicyApplied,
    ProviderFallback,
    RolledBack,
    Routed,
    ValidationFailed,
)
from keel.contracts.outcomes import DecisionOutcome, OutcomeKind
from keel.contracts.registry import REGISTRY
from keel.errors import ContractNotFoundError

if TYPE_CHECKING:
    from keel.cli.dossier.gates import GateFacts

NOT_SHOWN = "(not shown: nested too deeply to write out)"
SHOWN_CHARS = 2_000
"""Characters of a raw answer or prompt shown in full view; the rest is one click away."""

OUTCOMES: dict[OutcomeKind, str] = {
    "accepted": "accepted",
    "accepted_by_rule": "accepted by rule",
    "approved": "approved",
    "modified": "modified",
    "rejected": "rejected",
    "expired": "expired",
    "pending": "pending",
    "default_applied": "default applied",
    "failed_validation": "failed validation",
}
"""How the dossier names each outcome kind."""

QUESTIONS = (
    ("contract", "Contract version"),
    ("model", "Model"),
    ("prompt", "Prompt hash"),
    ("raw", "Raw answer"),
    ("confidence", "Confidence"),
    ("retries", "Retries and why"),
    ("approver", "Who approved"),
    ("when", "When"),
    ("changed", "What changed"),
    ("rule", "Which rule routed"),
)
"""The auditor's ten questions, by the key the page marks each answer with."""


@dataclass
class Answer:
    """One of the ten answers about a decision."""

    key: str
    question: str
    text: str
    detail: str = ""


@dataclass
class Text:
    """A long text (a raw answer, a prompt): what is shown, and how long it is in full."""

    full: str
    shown: str
    sha256: str

    @classmethod
    def of(cls, text: str) -> Text:
        """``text``, its first ``SHOWN_CHARS`` characters shown."""
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        return cls(full=text, shown=text[:SHOWN_CHARS], sha256=digest)

    @property
    def truncated(self) -> bool:
        """Whether only part of the text is shown."""
        return len(self.full) > len(self.shown)


@dataclass
class DecisionFacts:
    """An ``AgentDecided`` event and everything the ledger says about it."""

    event: AgentDecided
    raw: Text
    node_input: dict[str, Any] | None
    """The input the model saw: recorded on this event, or on the node run's first attempt."""
    guardrails: list[PolicyApplied] = field(default_factory=list)
    fallbacks: list[ProviderFallback] = field(default_factory=list)
    call_failures: list[AgentCallFailed] = field(default_factory=list)
    validation: list[ValidationFailed] = field(default_factory=list)
    retried: AgentRetried | None = None
    routed: list[Routed] = field(default_factory=list)
    gate: GateFacts | None = None
    default: DefaultApplied | None = None
    escalated: Escalated | None = None
    rolled_back: RolledBack | None = None
    record: DecisionOutcome | None = None
    """What became of it, as ``keel.contracts.outcomes`` pairs it."""
    unverified: bool = False
    """Whether it, or an event that decided its fate, lies at or after where the ledger
    broke (nothing vouches for those)."""

    def seqs(self) -> list[int]:
        """The numbers of its own events and of those that decided its fate."""
        own: list[Any] = [self.event, *self.validation, *self.routed]
        own += [e for e in (self.retried, self.default, self.escalated, self.rolled_back) if e]
        return [e.seq for e in own] + (self.gate.seqs() if self.gate is not None else [])

    @property
    def anchor(self) -> str:
        """The page's id for this decision."""
        return f"decision-{self.event.seq}"

    @property
    def accepted(self) -> bool:
        """Whether the answer passed every check (schema, rules, confidence)."""
        return not self.validation and self.event.output is not None

    @property
    def prompt_text(self) -> Text | None:
        """The prompt, when the worker recorded it (``record_prompts``)."""
        return Text.of(self.event.prompt) if self.event.prompt is not None else None

    @property
    def output_json(self) -> str | None:
        """The parsed output, indented."""
        return _pretty(self.event.output) if self.event.output is not None else None

    @property
    def input_json(self) -> str | None:
        """The recorded input, indented."""
        return _pretty(self.node_input) if self.node_input is not None else None

    @property
    def threshold(self) -> float | None:
        """The contract's confidence threshold, when this process has the contract that
        made the decision (the same fingerprint)."""
        contract = _registered(self.event)
        return contract.confidence_threshold if contract is not None else None

    @property
    def contract_note(self) -> str:
        """Whether the contract version this process knows is the one that decided."""
        try:
            known = REGISTRY.get(self.event.contract)
        except ContractNotFoundError:
            return "not loaded here: threshold and prompt not re-checked"
        if known.fingerprint != self.event.contract_fingerprint:
            return (
                f"the registered {self.event.contract} has fingerprint {known.fingerprint[:12]}, "
                "not the recorded one: the contract changed under the same version"
            )
        return "matches the registered contract"

    @property
    def prompt_check(self) -> str:
        """The prompt re-rendered from the contract and the recorded input, checked against
        the recorded hash (empty when it cannot be re-rendered)."""
        contract = _registered(self.event)
        if contract is None or self.node_input is None:
            return ""
        try:
            prompt = contract.render_prompt(self.node_input, self.event.feedback)
        except Exception as exc:  # a recorded input the template cannot take
            return f"could not be re-rendered from the recorded input ({type(exc).__name__})"
        digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()
        if digest == self.event.prompt_sha256:
            return "re-rendered from the contract and the recorded input: the hash matches"
        return "re-rendered from the contract and the recorded input: the hash DIFFERS"

    @property
    def outcome(self) -> str:
        """What happened to the answer, in a few words."""
        if self.record is not None:
            return OUTCOMES[self.record.kind]
        if self.event.output is None:
            return "unparsed"
        if self.validation:
            return "failed validation"
        if self.gate is not None:
            return self.gate.verdict
        if self.rolled_back is not None:
            return "rolled back"
        if self.routed:
            return "accepted by rule"
        return "accepted"

    def answers(self) -> list[Answer]:
        """The ten answers, from this decision's own events."""
        e = self.event
        texts = dict(
            contract=(e.contract, f"fingerprint {e.contract_fingerprint}; {self.contract_note}"),
            model=(f"{e.provider}/{e.model}", _call_text(self)),
            prompt=(e.prompt_sha256, self.prompt_check),
            raw=(
                f"{len(self.raw.full)} characters, sha256 {self.raw.sha256[:16]}",
                "shown below",
            ),
            confidence=(_confidence_text(e.confidence, self.threshold), ""),
            retries=_retries(self),
            approver=self._approver(),
            when=self._when(),
            changed=self._changed(),
            rule=self._rule(),
        )
        return [Answer(key, question, *texts[key]) for key, question in QUESTIONS]

    def _approver(self) -> tuple[str, str]:
        if self.gate is not None and self.gate.deciders:
            who = ", ".join(self.gate.deciders)
            if self.gate.verdict == "rejected":
                return f"nobody: rejected by {who}", f"at gate {self.gate.name}"
            return who, f"at gate {self.gate.name} ({self.gate.verdict})"
        if self.gate is not None:
            return "nobody", f"gate {self.gate.name}: {self.gate.verdict}"
        if not self.accepted:
            return "nobody", "the answer did not pass its checks"
        return "no person", "no gate reviewed this decision"

    def _when(self) -> tuple[str, str]:
        answered = f"the agent answered at {self.event.at.isoformat()}"
        if self.gate is not None and self.gate.closed_at is not None:
            return self.gate.closed_at.isoformat(), f"{self.gate.verdict} at the gate; {answered}"
        return self.event.at.isoformat(), answered

    def _changed(self) -> tuple[str, str]:
        if self.gate is not None and self.gate.changes:
            changes = "; ".join(
                f"{c.field}: {_clip(c.agent)} -> {_clip(c.reviewer)}" for c in self.gate.changes
            )
            return changes, f"modified by the reviewer at gate {self.gate.name} (diff there)"
        if self.rolled_back is not None:
            return "answer discarded", f"rolled back to {self.rolled_back.checkpoint}"
        if self.default is not None:
            return "default applied", self.default.reason
        if not self.accepted:
            return "answer not used", "it failed its checks"
        return "nothing", "the answer was used as given"

    def _rule(self) -> tuple[str, str]:
        if not self.routed:
            return "none", "no rule routed on this decision"
        return (
            "; ".join(f"{r.rule} -> {r.route}" for r in self.routed),
            "; ".join(f"read {_compact(r.inputs)}" for r in self.routed),
        )


def _registered(event: AgentDecided) -> Any:
    """The registered contract that made ``event`` (same fingerprint), else None."""
    try:
        contract = REGISTRY.get(event.contract)
    except ContractNotFoundError:
        return None
    return contract if contract.fingerprint == event.contract_fingerprint else None


def _call_text(facts: DecisionFacts) -> str:
    e = facts.event
    tokens = f"tokens {e.input_tokens}/{e.output_tokens}" if e.input_tokens is not None else ""
    calls = f"provider call {e.activity_attempt}" if e.activity_attempt > 1 else ""
    moved = "; ".join(f"fell back {f.from_model} -> {f.to_model}" for f in facts.fallbacks)
    parts = [tokens, f"{e.latency_ms:.1f} ms", calls, moved]
    return ", ".join(p for p in parts if p)


def _confidence_text(confidence: float | None, threshold: float | None) -> str:
    if confidence is None:
        return "none reported"
    if threshold is None:
        return f"{confidence:g} (threshold unknown: contract not loaded)"
    verdict = "meets" if confidence >= threshold else "BELOW"
    return f"{confidence:g} ({verdict} the threshold {threshold:g})"


def _retries(facts: DecisionFacts) -> tuple[str, str]:
    e = facts.event
    run = facts.record.node_run if facts.record is not None else 1
    why = f"this attempt was asked to address: {'; '.join(e.feedback)}" if e.feedback else ""
    where = f"attempt {e.attempt}" + (f" of the node's run {run}" if run > 1 else "")
    if facts.retried is not None:
        failed = "; ".join(r for v in facts.validation for r in v.reasons)
        kinds = ", ".join(sorted({v.kind for v in facts.validation})) or "rejected"
        text = f"{where}, retried as attempt {facts.retried.next_attempt}"
        return text, f"failed {kinds}: {failed}" + (f"; {why}" if why else "")
    if e.attempt > 1:
        text = f"{where}, a retry"
    elif run > 1:
        text = f"{where}: the node ran again"
    else:
        text = f"{where} (first)"
    if facts.validation:
        failed = "; ".join(r for v in facts.validation for r in v.reasons)
        then = (
            "escalated to people"
            if facts.escalated
            else "the contract's default applied"
            if facts.default
            else "not retried"
        )
        return f"{text}; failed, {then}", f"failed: {failed}" + (f"; {why}" if why else "")
    return text, why


def _pretty(value: Any) -> str:
    return as_json(value, indent=2)


def _compact(value: Any) -> str:
    return as_json(value)


def as_json(value: Any, indent: int | None = None) -> str:
    """``value`` as JSON text for the page (a note instead, for a value nested too deeply
    to write out: a forged ledger may hold one)."""
    try:
        return json.dumps(value, indent=indent, ensure_ascii=False, sort_keys=True, default=str)
    except (ValueError, TypeError, RecursionError):
        return NOT_SHOWN


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
