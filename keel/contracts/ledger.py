"""The ledger: typed, append-only, hash-chained events.

Hash scheme ``keel-ledger/2`` (named by the ``scheme`` of each run's first event): an event's
``hash`` is the hex sha256 of the RFC 8785 canonical JSON of the event without its ``hash``
key; the event holds ``prev_hash``, so changing, dropping or reordering any event breaks
every hash after it. ``keel-ledger/1`` (a first event naming no scheme, ledgers written
before signing) was sha256 over ``prev_hash`` and sorted-key JSON. Chain heads are signed
(``ChainHeadSigned``) at gates, at completion and before continue-as-new.
``verify_chain`` checks typed events this process holds; ``keel.contracts.integrity``
checks a ledger as stored (its raw JSON objects) and its signatures.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

import rfc8785
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    WithJsonSchema,
    model_serializer,
)

from keel.contracts.agent import canonical_json
from keel.contracts.canonical import canonical_bytes, plain_canonical_bytes

GENESIS_HASH = "0" * 64
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

LEDGER_SCHEME = "keel-ledger/2"
"""The hash scheme Keel records with: sha256 over the RFC 8785 form of the event sans hash."""
LEGACY_SCHEME = "keel-ledger/1"
"""Ledgers recorded before ``keel-ledger/2`` (their first event names no scheme): unsigned."""
SCHEMES = (LEDGER_SCHEME, LEGACY_SCHEME)
HEAD_PURPOSE = "keel/ledger-head/1"
"""The purpose a chain head is signed for (``keel.contracts.signing.signing_bytes``)."""
COMPLETION = "completion"
"""The reason of the signed head a completed run's ledger ends with."""
MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer RFC 8785 (I-JSON) represents exactly; larger ones are recorded as text."""


def event_hash(raw: Mapping[str, Any], scheme: str = LEDGER_SCHEME) -> str:
    """The hash an event must carry under ``scheme``, over its JSON object as stored.

    Raises:
        ValueError: an unknown scheme, or content with no RFC 8785 form (a number outside
            I-JSON's range, a non-string key, text that is not Unicode).
    """
    body = {key: value for key, value in raw.items() if key != "hash"}
    if scheme == LEGACY_SCHEME:
        text = str(raw.get("prev_hash", "")) + canonical_json(body)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    if scheme != LEDGER_SCHEME:
        raise ValueError(f"unknown hash scheme {str(scheme)[:40]!r} (known: {', '.join(SCHEMES)})")
    try:
        return hashlib.sha256(canonical_bytes(body)).hexdigest()
    except (rfc8785.CanonicalizationError, TypeError, RecursionError) as err:
        raise ValueError(f"the event has no RFC 8785 form: {str(err)[:200]}") from None


def json_safe(value: Any) -> Any:
    """``value`` (a JSON-mode dump) with what RFC 8785 cannot hold replaced: NaN and
    infinities by null (what pydantic writes for them), integers beyond 2**53 - 1 by their
    decimal text, lone surrogates in text by U+FFFD. The ledger records events this way, so
    the hash the workflow computes is the hash of the JSON it stores."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, str):
        return _unicode(value)
    if isinstance(value, dict):
        return {_unicode(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


E = TypeVar("E", bound="EventBase")


class EventBase(BaseModel):
    """Fields every ledger event carries; the ledger sets them when it records the event.

    An app's own event type subclasses this with a ``type: Literal["Name"] = "Name"`` field,
    is registered with ``register_event_type`` (``App.event_types`` does it), and may
    override ``describe`` for its line in ``keel ledger``.
    """

    type: str = ""
    seq: int = 0
    at: datetime = EPOCH
    prev_hash: str = ""
    hash: str = ""
    scheme: str | None = None
    """The hash scheme, named by each run's first event only (absent from the others' JSON)."""
    omitted_when_none: ClassVar[frozenset[str]] = frozenset({"scheme"})
    """Fields left out of the JSON (and the hash) while None: fields added to an event type
    after ledgers of it were recorded, so those ledgers' hashes stay what they were."""

    @model_serializer(mode="wrap")
    def _without_absent_fields(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self.omitted_when_none:
                if name in data and data[name] is None:
                    del data[name]
        return data

    def compute_hash(self) -> str:
        """The hash this event must carry, given its ``prev_hash`` (``keel-ledger/2``)."""
        return event_hash(json_safe(self.model_dump(mode="json", exclude={"hash"})))

    def describe(self) -> str:
        """One line about the event for ``keel ledger``: its own fields, compactly."""
        own = self.model_dump(
            mode="json", exclude={"type", "seq", "at", "prev_hash", "hash", "scheme"}
        )
        return ", ".join(f"{name}={_short(value)}" for name, value in own.items())


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else canonical_json(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ForeignEvent(EventBase):
    """An event of a type this process does not know (an app it never imported): kept whole,
    so the chain still verifies and the event still prints."""

    model_config = ConfigDict(extra="allow")


class WorkflowStarted(EventBase):
    """The run began; the input is recorded by digest, not by value."""

    type: Literal["WorkflowStarted"] = "WorkflowStarted"
    workflow: str
    workflow_id: str
    run_id: str
    input_sha256: str


class InputRejected(EventBase):
    """The input failed validation; the run fails with these reasons."""

    type: Literal["InputRejected"] = "InputRejected"
    reasons: list[str]


class CheckpointTaken(EventBase):
    """A snapshot of the context before an agent node (what a rollback returns to)."""

    type: Literal["CheckpointTaken"] = "CheckpointTaken"
    checkpoint: str
    node: str
    context_sha256: str
    keys: list[str]


class AgentDecided(EventBase):
    """One model answer with its provenance: contract, fingerprint, model, prompt hash, raw text."""

    type: Literal["AgentDecided"] = "AgentDecided"
    node: str
    contract: str
    contract_fingerprint: str
    provider: str
    model: str
    prompt_sha256: str
    prompt: str | None = None
    raw_response: str
    output: dict[str, Any] | None = None
    parse_error: str | None = None
    confidence: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float
    attempt: int
    activity_attempt: int
    provider_calls: int = 1
    feedback: list[str] = Field(default_factory=list)
    input: dict[str, Any] | None = None
    """The node's input as the model saw it (after the contract's guardrails), with its PII
    replaced by markers: on the first decision of each node run (later attempts of that run
    had the same input; their ``feedback`` says what changed). What ``keel debug`` and
    ``keel export --dataset`` re-render prompts from; None for runs recorded before."""
    omitted_when_none: ClassVar[frozenset[str]] = EventBase.omitted_when_none | {"input"}


class ValidationFailed(EventBase):
    """An answer was rejected: unparseable, off-schema, against a rule, or under the threshold."""

    type: Literal["ValidationFailed"] = "ValidationFailed"
    node: str
    contract: str
    attempt: int
    kind: Literal["parse", "schema", "rule", "confidence"]
    reasons: list[str]


class AgentRetried(EventBase):
    """The node re-enters from its checkpoint, with this feedback."""

    type: Literal["AgentRetried"] = "AgentRetried"
    node: str
    contract: str
    next_attempt: int
    from_checkpoint: str
    feedback: list[str]


class AgentCallFailed(EventBase):
    """The model call itself failed (after Temporal's retries of transient errors)."""

    type: Literal["AgentCallFailed"] = "AgentCallFailed"
    node: str
    contract: str
    attempt: int
    error_type: str
    message: str
    retryable: bool


class ProviderFallback(EventBase):
    """The worker's model kept failing; the node moved to the contract's next model."""

    type: Literal["ProviderFallback"] = "ProviderFallback"
    node: str
    contract: str
    attempt: int
    from_model: str
    to_model: str
    reason: str


class PolicyApplied(EventBase):
    """A guardrail's decision before a model call (allow, modify or deny)."""

    type: Literal["PolicyApplied"] = "PolicyApplied"
    node: str
    contract: str
    attempt: int
    policy: str
    action: Literal["allow", "deny", "modify"]
    reason: str
    changes: list[dict[str, Any]] = Field(default_factory=list)


class RolledBack(EventBase):
    """The context went back to a checkpoint (a reviewer rejected what followed it)."""

    type: Literal["RolledBack"] = "RolledBack"
    checkpoint: str
    reason: str
    discarded_keys: list[str]


class Escalated(EventBase):
    """A node or gate handed over to people."""

    type: Literal["Escalated"] = "Escalated"
    subject: str
    """The node or gate that escalated."""
    reason: str
    to: list[str]


class NodeFailed(EventBase):
    """An agent node failed the run for a reason that is not the agent's (its last event)."""

    type: Literal["NodeFailed"] = "NodeFailed"
    node: str
    contract: str
    problem: str
    """``keel.contracts.agent_node.SystemProblem``: unknown-contract, provider-auth, ..."""
    reason: str
    fix: str
    error_type: str


class DefaultApplied(EventBase):
    """The node took its contract's deterministic default after its budget was spent."""

    type: Literal["DefaultApplied"] = "DefaultApplied"
    node: str
    contract: str
    output: dict[str, Any]
    reason: str


class GateOpened(EventBase):
    """A gate is waiting for a reviewer."""

    type: Literal["GateOpened"] = "GateOpened"
    gate: str
    title: str
    reviewers: list[str]
    sla_seconds: float
    deadline: datetime
    context: dict[str, Any]
    roles: list[str] | None = None
    """Roles whose holders may decide (besides ``reviewers`` by name)."""
    approvals_needed: int | None = None
    """Distinct approvers needed (n-of-m), when more than one."""
    requesters: list[str] | None = None
    """Who asked for the work and so may not decide it (separation of duties)."""
    omitted_when_none: ClassVar[frozenset[str]] = frozenset(
        {"scheme", "roles", "approvals_needed", "requesters"}
    )


class SignedAction(EventBase):
    """What every event of an accepted review carries: who, as whom, how it was
    authenticated, and the signature an auditor checks against the reviewer trust file.

    ``signed`` is the decision's signed content as it arrived (``keel.contracts.reviews``):
    the signature covers exactly it, so ``keel verify --reviewer-keys FILE`` can check it.
    """

    reviewer: str
    on_behalf_of: str | None = None
    roles: list[str] | None = None
    auth: dict[str, Any] | None = None
    """How the signer authenticated the reviewer (method, issuer, the device it saw)."""
    key_id: str | None = None
    signature: str | None = None
    signed: dict[str, Any] | None = None
    via: Literal["update", "signal"]
    omitted_when_none: ClassVar[frozenset[str]] = frozenset(
        {"scheme", "on_behalf_of", "roles", "auth", "key_id", "signature", "signed"}
    )


class GateDecided(SignedAction):
    """A reviewer decided a gate (for an n-of-m gate: the approval that completed it, with
    every approver in ``approvers``)."""

    type: Literal["GateDecided"] = "GateDecided"
    gate: str
    decision: str
    state: str
    comment: str | None = None
    modifications: dict[str, Any] | None = None
    device: str | None = None
    """Recorded by ledgers before decisions were signed (the caller's claim); now in
    ``auth``, as the signing service saw it."""
    approvers: list[str] | None = None
    omitted_when_none: ClassVar[frozenset[str]] = SignedAction.omitted_when_none | {"approvers"}


class GateApproved(SignedAction):
    """One approval of an n-of-m gate that needs more: the gate stays open."""

    type: Literal["GateApproved"] = "GateApproved"
    gate: str
    approvals: int
    approvals_needed: int
    comment: str | None = None
    modifications: dict[str, Any] | None = None
    """A ``modify``: the version the later approvers approve (earlier approvals no longer
    count)."""


class GateReassigned(SignedAction):
    """A reviewer handed the gate to other reviewers or roles; it stays open."""

    type: Literal["GateReassigned"] = "GateReassigned"
    gate: str
    to_reviewers: list[str]
    to_roles: list[str]
    comment: str


class GateDeferred(SignedAction):
    """A reviewer said "not now" without deciding; the gate stays open for the others."""

    type: Literal["GateDeferred"] = "GateDeferred"
    gate: str
    comment: str | None = None


class ReviewRefused(EventBase):
    """A review signal was refused; what it held is recorded by digest."""

    type: Literal["ReviewRefused"] = "ReviewRefused"
    gate: str | None
    reviewer: str | None
    via: Literal["signal"]
    reasons: list[str]
    payload_sha256: str


class GateExpired(EventBase):
    """No reviewer decided before the SLAs passed; the gate took its default."""

    type: Literal["GateExpired"] = "GateExpired"
    gate: str
    default_decision: str
    waited_seconds: float


class Routed(EventBase):
    """A named rule routed the run, with the values it read."""

    type: Literal["Routed"] = "Routed"
    rule: str
    inputs: dict[str, Any]
    route: str


class PlanProposed(EventBase):
    """A planner's plan passed validation and is recorded before it runs."""

    type: Literal["PlanProposed"] = "PlanProposed"
    round: int
    planner: str
    """``name@version`` of the planner contract."""
    source: str
    """``agent``, ``default`` or ``human``: who produced the plan."""
    plan_sha256: str
    done: bool
    summary: str
    tasks: list[dict[str, Any]]


class PlanRejected(EventBase):
    """A planner's plan failed validation; the reasons are fed back."""

    type: Literal["PlanRejected"] = "PlanRejected"
    round: int
    rejection: int
    plan_sha256: str
    reasons: list[str]
    tasks: list[dict[str, Any]]


class PlanMaterialized(EventBase):
    """A plan's tasks became child workflows, in these dependency levels."""

    type: Literal["PlanMaterialized"] = "PlanMaterialized"
    round: int
    levels: list[list[str]]
    children: dict[str, str]
    """Task ref -> child workflow id."""


class TaskCompleted(EventBase):
    """A planned task finished, with its output and effect receipt."""

    type: Literal["TaskCompleted"] = "TaskCompleted"
    round: int
    ref: str
    tool: str
    workflow_id: str
    output: dict[str, Any]
    effect: dict[str, Any] | None = None


class TaskFailed(EventBase):
    """A planned task failed."""

    type: Literal["TaskFailed"] = "TaskFailed"
    round: int
    ref: str
    tool: str
    workflow_id: str | None
    error: str


class TaskSkipped(EventBase):
    """A planned task did not run (a dependency failed or a gate rejected it)."""

    type: Literal["TaskSkipped"] = "TaskSkipped"
    round: int
    ref: str
    reason: str


class Compensated(EventBase):
    """A completed task was undone by its compensation (or the compensation failed)."""

    type: Literal["Compensated"] = "Compensated"
    ref: str
    """The task that was undone."""
    round: int
    tool: str
    workflow_id: str
    ok: bool
    output: dict[str, Any] | None = None
    error: str | None = None


class EffectOutcomeUnknown(EventBase):
    """Nobody knows whether a side effect happened (an attempt died after it may have acted);
    the tool's policy decides what happens next (``keel.contracts.effects``)."""

    type: Literal["EffectOutcomeUnknown"] = "EffectOutcomeUnknown"
    idempotency_key: str
    tool: str
    policy: str
    """``lookup``, ``resend`` or ``escalate``."""
    known: dict[str, Any] = Field(default_factory=dict)
    """What the record knows: when the intent was recorded, attempts, the provider ref."""


class EffectResolved(EventBase):
    """An unknown outcome was resolved: confirmed performed, or confirmed not performed (the
    effect is then attempted again)."""

    type: Literal["EffectResolved"] = "EffectResolved"
    idempotency_key: str
    tool: str
    resolution: Literal["confirmed_performed", "confirmed_not_performed"]
    by: str
    """Who resolved it (a reviewer at a gate)."""
    gate: str | None = None


class LedgerContinued(EventBase):
    """First event of a run after continue-as-new: links to the previous run's head."""

    type: Literal["LedgerContinued"] = "LedgerContinued"
    previous_run_id: str
    previous_head: str
    run: int
    rounds_done: int


class ContinuedAsNew(EventBase):
    """The run continues as new; the next run's LedgerContinued links back."""

    type: Literal["ContinuedAsNew"] = "ContinuedAsNew"
    reason: str
    rounds_done: int


class WorkflowCompleted(EventBase):
    """The run's outcome."""

    type: Literal["WorkflowCompleted"] = "WorkflowCompleted"
    outcome: str
    summary: dict[str, Any] = Field(default_factory=dict)


class ChainHeadSigned(EventBase):
    """The worker signed the chain head ``covers_hash`` (event ``covers_seq``) with its
    Ed25519 key: at each gate (opened, decided), at completion and before continue-as-new.

    The signature is over ``message()`` with ``HEAD_PURPOSE``
    (``keel.contracts.signing.signing_bytes``): scheme, workflow and run id, the covered
    event's number and hash, and the reason.
    """

    type: Literal["ChainHeadSigned"] = "ChainHeadSigned"
    reason: str
    """``gate-opened:NAME``, ``gate-decided:NAME``, ``completion`` or ``continue-as-new``."""
    covers_seq: int
    covers_hash: str
    workflow_id: str
    run_id: str
    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str
    signature: str
    """URL-safe base64 (no padding) of the 64 signature bytes."""

    def message(self, scheme: str = LEDGER_SCHEME) -> dict[str, Any]:
        """What the signature is over (with ``HEAD_PURPOSE``)."""
        return head_message(
            scheme, self.workflow_id, self.run_id, self.covers_seq, self.covers_hash, self.reason
        )


def head_message(
    scheme: str, workflow_id: str, run_id: str, seq: int, head: str, reason: str
) -> dict[str, Any]:
    """The message a chain-head signature is over."""
    return {
        "scheme": scheme,
        "workflow_id": workflow_id,
        "run_id": run_id,
        "seq": seq,
        "head": head,
        "reason": reason,
    }


BuiltinEvent = Annotated[
    WorkflowStarted
    | InputRejected
    | CheckpointTaken
    | AgentDecided
    | ValidationFailed
    | AgentRetried
    | AgentCallFailed
    | ProviderFallback
    | PolicyApplied
    | RolledBack
    | Escalated
    | NodeFailed
    | DefaultApplied
    | GateOpened
    | GateDecided
    | GateApproved
    | GateReassigned
    | GateDeferred
    | ReviewRefused
    | GateExpired
    | Routed
    | PlanProposed
    | PlanRejected
    | PlanMaterialized
    | TaskCompleted
    | TaskFailed
    | TaskSkipped
    | Compensated
    | EffectOutcomeUnknown
    | EffectResolved
    | LedgerContinued
    | ContinuedAsNew
    | WorkflowCompleted
    | ChainHeadSigned,
    Field(discriminator="type"),
]


_EVENT_TYPES: dict[str, type[EventBase]] = {
    cls.model_fields["type"].default: cls for cls in get_args(get_args(BuiltinEvent)[0])
}


def register_event_type(cls: type[EventBase]) -> type[EventBase]:
    """Let ledgers hold events of ``cls`` (an app's own type); returns ``cls``.

    Raises:
        ValueError: ``cls`` has no ``type`` default, or the name is taken by another class.
    """
    name = cls.model_fields["type"].default
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} needs a field type: Literal['Name'] = 'Name'")
    known = _EVENT_TYPES.get(name)
    if known is not None and known is not cls:
        raise ValueError(f"ledger event type {name!r} is already registered ({known.__name__})")
    _EVENT_TYPES[name] = cls
    return cls


def event_types() -> dict[str, type[EventBase]]:
    """Every event type this process knows, by name."""
    return dict(_EVENT_TYPES)


def _parse_event(value: Any) -> EventBase:
    if isinstance(value, EventBase):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"a ledger event is a JSON object, not {type(value).__name__}")
    cls = _EVENT_TYPES.get(str(value.get("type")), ForeignEvent)
    return cls.model_validate(value)


def _dump_event(event: EventBase, info: SerializationInfo) -> Any:
    return event.model_dump(mode=info.mode)


LedgerEvent = Annotated[
    EventBase,
    PlainValidator(_parse_event),
    PlainSerializer(_dump_event),
    WithJsonSchema({"type": "object", "description": "a ledger event"}),
]
"""A ledger event of any registered type (``ForeignEvent`` for types this process does not
know), serialized whole; use it for ledger fields of results and queries."""

LEDGER_ADAPTER: TypeAdapter[list[LedgerEvent]] = TypeAdapter(list[LedgerEvent])


class ChainReport(BaseModel):
    """Result of ``verify_chain``."""

    ok: bool
    events: int
    head_hash: str
    broken_at: int | None = None
    reason: str | None = None


def verify_chain(
    events: Sequence[EventBase], *, genesis: str = GENESIS_HASH, first_seq: int = 1
) -> ChainReport:
    """Check sequence numbers, links and hashes of a ledger, starting from ``genesis``.

    A run after continue-as-new starts from the previous run's head and sequence number:
    pass those as ``genesis`` and ``first_seq`` to check that run alone.
    """
    prev = genesis
    for index, event in enumerate(events):
        problem = None
        if event.seq != first_seq + index:
            problem = f"sequence number {event.seq} where {first_seq + index} was expected"
        elif event.prev_hash != prev:
            problem = "prev_hash does not match the previous event's hash"
        elif event.compute_hash() != event.hash:
            problem = "hash does not match the event's content"
        if problem:
            return ChainReport(
                ok=False, events=len(events), head_hash=prev, broken_at=event.seq, reason=problem
            )
        prev = event.hash
    return ChainReport(ok=True, events=len(events), head_hash=prev)


def seal_event(event: E, *, seq: int, at: datetime, prev_hash: str, scheme: str | None) -> E:
    """``event`` numbered, stamped, linked and hashed (``keel-ledger/2``), its content made
    RFC 8785-safe first (``json_safe``), so that its stored JSON hashes to its ``hash``.

    Raises:
        ValueError: the safe content no longer fits the event's type (a typed field held a
            value that only JSON-safe replacement could store).
    """
    updates: dict[str, Any] = {"seq": seq, "at": at, "prev_hash": prev_hash}
    if scheme is not None:
        updates["scheme"] = scheme
    stamped = event.model_copy(update=updates)
    dumped = stamped.model_dump(mode="json", exclude={"hash"})
    plain = plain_canonical_bytes(dumped)
    if plain is not None:  # nothing to make safe: the dump is the body
        return stamped.model_copy(update={"hash": hashlib.sha256(plain).hexdigest()})
    body = json_safe(dumped)
    if _has_nan(dumped) or body != dumped:
        stamped = type(stamped).model_validate(body)
    return stamped.model_copy(update={"hash": event_hash(body)})


def _has_nan(value: Any) -> bool:
    """Whether ``value`` holds a NaN (NaN != NaN, so comparing dumps does not see one)."""
    if isinstance(value, float):
        return value != value
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return False


def parse_ledger(raw: list[dict[str, Any]]) -> list[EventBase]:
    """Typed events from their JSON form (query answers, exports)."""
    return LEDGER_ADAPTER.validate_python(raw)
