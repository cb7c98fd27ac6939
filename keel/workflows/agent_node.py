"""The agent-node building block: checkpoint, one activity per attempt, validate, gate, retry.

Everything but the model call is workflow code, so an attempt costs exactly one activity
round trip (DESIGN.md, cost model).

Two kinds of failure, never confused: the agent's (an answer that does not parse, fails the
schema, a rule or the confidence threshold) is retried with feedback and, once the budget is
spent, takes the contract's ``on_exhausted`` path; a failure that is not the agent's (unknown
contract, other contract code, a misconfigured provider, a refused key or request, a provider
still failing after its retries) never takes the business default: it fails the run with what
to fix, or, when the contract says ``on_system_failure="escalate"``, opens the escalation gate
with the reason and the fix in view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from keel.contracts.agent import AgentContract, In, Out, RetryStrategy, UseDefault
    from keel.contracts.agent_node import (
        AGENT_NODE_ACTIVITY,
        AgentDecision,
        AgentNodeRequest,
        SystemFailure,
        classify_failure,
    )
    from keel.contracts.gates import GateSpec, GateState
    from keel.contracts.guardrails import (
        CLASSIFIER_ACTIVITY,
        CLASSIFIER_NOT_CONFIGURED_ERROR,
        CLASSIFIER_POLICY,
        DEFAULT_PHONE_REGIONS,
        MAX_CLASSIFIER_TEXT,
        ClassifierRequest,
        ClassifierVerdict,
        GuardrailDecision,
        GuardrailOutcome,
        GuardrailState,
        PiiScrubber,
        apply_guardrails,
        classifier_decision,
        estimate_tokens,
        redact_pii,
        scrub_text,
        untrusted_strings,
    )
    from keel.contracts.judging import judge_answer
    from keel.contracts.ledger import (
        AgentCallFailed,
        AgentDecided,
        AgentRetried,
        DefaultApplied,
        Escalated,
        NodeFailed,
        PolicyApplied,
        ProviderFallback,
        ValidationFailed,
    )
    from keel.contracts.names import MODEL_QUEUE_ROUTE
    from keel.contracts.secrets import scrub_secrets

from keel.workflows.context import Checkpoint, WorkflowContext
from keel.workflows.gates import GateBook
from keel.workflows.ledger import Ledger
from keel.workflows.metrics import node_settled
from keel.workflows.patches import engine_patched

OutputCheck = Callable[[Any], list[str]]
"""A deterministic check of a schema-valid output; returns reasons to reject it."""

HEARTBEAT_TIMEOUT = timedelta(seconds=10)

SYSTEM_FAILURES_PATCH = "keel-agent-node-system-failures"
"""Runs recorded before system failures were told apart replay the old path (the failed
call taken as a spent budget); every other run records this patch marker when a call fails."""

NODE_INPUT_PATCH = "keel-ledger-node-input"
"""Runs recorded before node inputs were in the ledger replay without them (their signed
heads cover ledgers without ``AgentDecided.input``); every run since records the input."""

GUARDRAIL_NEEDLES_PATCH = "keel-guardrail-needles-2"
"""The injection check with every pattern's needles covering it and line breaks read as
spaces (it denies what slipped past before): a run recorded before it replays the verdicts
it ran with."""

NODE_FAILED = "AgentNodeFailed"
"""``ApplicationError.type`` of a run an agent node failed for a reason not the agent's."""

PERMANENT_ERRORS = [
    "ProviderPermanentError",
    "ProviderAuthError",
    "ProviderConfigError",
    "ContractNotFoundError",
    "ContractFingerprintMismatch",
]


@dataclass
class AgentOutcome(Generic[Out]):
    """What an agent node settled on, typed by the contract's output model.

    ``output`` is ``None`` when a guardrail denied the call, or the node escalated and the
    human rejected or never answered. ``failure`` is set when the escalation was for a
    failure that was not the agent's (``on_system_failure="escalate"``).
    """

    output: Out | None
    source: Literal["agent", "default", "human", "none", "denied"]
    attempts: int
    checkpoint: Checkpoint
    note: str
    failure: SystemFailure | None = None


class AgentNodes:
    """Runs agent nodes for one workflow execution."""

    def __init__(self, ledger: Ledger, context: WorkflowContext, gates: GateBook) -> None:
        self._ledger = ledger
        self._context = context
        self._gates = gates
        self.tokens_used = 0
        """Tokens of this run's model calls so far (what the providers reported)."""

    async def run(
        self,
        node: str,
        contract: AgentContract[In, Out],
        node_input: In,
        *,
        feedback: Sequence[str] = (),
        check: Callable[[Out], list[str]] | None = None,
    ) -> AgentOutcome[Out]:
        """Run ``node`` under ``contract`` until an output passes, or the budget is spent.

        Raises:
            ApplicationError: (type ``AgentNodeFailed``, non-retryable) the model call failed
                for a reason that is not the agent's and the contract does not escalate
                those; the message says what to fix, the details hold the ``SystemFailure``
                and the ledger's last events.
        """
        outcome = await self._run(node, contract, node_input, feedback=feedback, check=check)
        node_settled(self._ledger.metrics, node, contract.key, outcome.source, outcome.attempts)
        return outcome

    async def _run(
        self,
        node: str,
        contract: AgentContract[In, Out],
        node_input: In,
        *,
        feedback: Sequence[str],
        check: Callable[[Out], list[str]] | None,
    ) -> AgentOutcome[Out]:
        checkpoint = self._context.checkpoint(node)
        payload = node_input.model_dump(mode="json")
        if engine_patched(NODE_INPUT_PATCH):
            # What callers feed back (a reviewer's comment) is no input of the contract's:
            # its PII goes neither to the model nor into the ledger.
            feedback = [str(item) for item in redact_pii(list(feedback))]
        attempt_feedback = list(feedback)
        reasons: list[str] = []
        # The worker's model first, then the contract's fallbacks; a fallback sticks.
        models: list[str | None] = [None, *contract.fallback_models]
        attempt = 0
        asked = False
        input_recorded = False
        while attempt < contract.max_attempts:
            attempt += 1
            workflow.set_current_details(
                f"Agent node **{node}** ({contract.key}), attempt {attempt} of "
                f"{contract.max_attempts}"
            )
            guarded = self._guard(node, contract, payload, attempt_feedback, attempt)
            if guarded.denied is not None:
                return AgentOutcome(None, "denied", attempt, checkpoint, guarded.message)
            if attempt == 1 and contract.guardrails.classifier is not None and not asked:
                asked = True  # the input does not change between attempts: asked once
                stop = await self._ask_classifier(node, contract, payload, checkpoint)
                if stop is not None:
                    return stop
            try:
                decision = await self._call(
                    node,
                    contract,
                    guarded.payload,
                    attempt_feedback,
                    attempt,
                    models[0],
                    record_input=not input_recorded,
                    pii_free=_scrubbed_nothing(contract, guarded),
                )
                input_recorded = True
            except ActivityError as err:
                told_apart = engine_patched(SYSTEM_FAILURES_PATCH)
                if told_apart and isinstance(err.cause, CancelledError):
                    raise  # the run is being cancelled: not a failure to classify
                reason, retryable = self._record_call_failure(node, contract, attempt, err)
                if retryable and len(models) > 1:
                    self._ledger.record(
                        ProviderFallback(
                            node=node,
                            contract=contract.key,
                            attempt=attempt,
                            from_model=models[0] or "the worker's model",
                            to_model=models[1] or "the worker's model",
                            reason=reason,
                        )
                    )
                    models.pop(0)
                    attempt -= 1  # the provider failed, not the answer: same attempt again
                    continue
                if not told_apart:  # a run recorded before: replay what it did
                    reasons = [reason]
                    break
                failure = self._classify(contract, err)
                return await self._not_the_agents(node, contract, failure, checkpoint, attempt)
            verdict = judge_answer(contract, decision, check)
            if isinstance(verdict, BaseModel):
                return AgentOutcome(verdict, "agent", attempt, checkpoint, "accepted")
            kind, reasons = verdict
            self._ledger.record(
                ValidationFailed(
                    node=node, contract=contract.key, attempt=attempt, kind=kind, reasons=reasons
                )
            )
            if attempt < contract.max_attempts:
                if contract.retry_strategy is RetryStrategy.FEEDBACK:
                    attempt_feedback = [*feedback, *reasons]
                self._ledger.record(
                    AgentRetried(
                        node=node,
                        contract=contract.key,
                        next_attempt=attempt + 1,
                        from_checkpoint=checkpoint.name,
                        feedback=attempt_feedback,
                    )
                )
        return await self._exhausted(node, contract, reasons, checkpoint, attempt, check)

    def _guard(
        self,
        node: str,
        contract: AgentContract[Any, Any],
        payload: dict[str, Any],
        feedback: list[str],
        attempt: int,
    ) -> GuardrailOutcome:
        """Run the contract's guardrails before a model call, and record their decisions
        (every decision on the first attempt, the ones that acted afterwards)."""
        state = GuardrailState(
            tokens_used=self.tokens_used,
            prompt_tokens_estimate=contract.prompt_overhead_tokens
            + sum(estimate_tokens(item) for item in feedback),
        )
        legacy = not engine_patched(GUARDRAIL_NEEDLES_PATCH)
        outcome = apply_guardrails(payload, contract.guardrails, state, legacy=legacy)
        for decision in outcome.decisions:
            if attempt == 1 or decision.action != "allow":
                self._ledger.record(
                    PolicyApplied(
                        node=node,
                        contract=contract.key,
                        attempt=attempt,
                        policy=decision.policy,
                        action=decision.action,
                        reason=decision.reason,
                        changes=[c.model_dump(mode="json") for c in decision.changes],
                    )
                )
        return outcome

    async def _ask_classifier(
        self,
        node: str,
        contract: AgentContract[In, Out],
        payload: dict[str, Any],
        checkpoint: Checkpoint,
    ) -> AgentOutcome[Out] | None:
        """Ask the contract's prompt-injection classifier (an activity) about the untrusted
        fields, PII scrubbed; record its decision. ``None``: go on to the model call."""
        config = contract.guardrails
        name = config.classifier or ""
        texts: list[str] = []
        room = MAX_CLASSIFIER_TEXT
        for _path, text in untrusted_strings(payload, config.untrusted_fields):
            if room <= 0:
                break
            clean = scrub_text(text, config.phone_regions)[0][:room]
            texts.append(clean)
            room -= len(clean)
        try:
            verdict: ClassifierVerdict = await workflow.execute_activity(
                CLASSIFIER_ACTIVITY,
                ClassifierRequest(classifier=name, contract=contract.key, node=node, texts=texts),
                result_type=ClassifierVerdict,
                task_queue=_model_queue(),
                start_to_close_timeout=contract.time_budget,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=30),
                    maximum_attempts=contract.provider_attempts,
                    non_retryable_error_types=[CLASSIFIER_NOT_CONFIGURED_ERROR],
                ),
                summary=f"{node}: prompt-injection classifier {name}",
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise
            return await self._classifier_failed(node, contract, err, checkpoint)
        decision = classifier_decision(verdict, config.classifier_threshold)
        self._record_policy(node, contract, decision)
        if decision.action == "deny":
            note = f"guardrail '{decision.policy}' denied the model call: {decision.reason}"
            return AgentOutcome(None, "denied", 1, checkpoint, note)
        return None

    async def _classifier_failed(
        self,
        node: str,
        contract: AgentContract[In, Out],
        err: ActivityError,
        checkpoint: Checkpoint,
    ) -> AgentOutcome[Out] | None:
        """No verdict: what the contract's ``on_classifier_failure`` says, never silence."""
        config = contract.guardrails
        cause = err.cause
        message = scrub_secrets(str(cause) if cause else str(err))
        error_type = cause.type if isinstance(cause, ApplicationError) and cause.type else "Error"
        what = f"the prompt-injection classifier {config.classifier!r} gave no verdict ({message})"
        if config.on_classifier_failure == "allow":
            self._record_policy(
                node,
                contract,
                GuardrailDecision(
                    policy=CLASSIFIER_POLICY,
                    action="allow",
                    reason=f"{what}; the contract fails open: the patterns' verdict stands",
                ),
            )
            return None
        denial = GuardrailDecision(
            policy=CLASSIFIER_POLICY,
            action="deny",
            reason=f"{what}; the contract fails closed: the text was not sent to the model",
        )
        self._record_policy(node, contract, denial)
        if config.on_classifier_failure == "deny":
            note = f"guardrail '{denial.policy}' denied the model call: {denial.reason}"
            return AgentOutcome(None, "denied", 1, checkpoint, note)
        configured = error_type == CLASSIFIER_NOT_CONFIGURED_ERROR or _non_retryable(err)
        failure = SystemFailure(
            problem="provider-config" if configured else "provider-unavailable",
            reason=what,
            fix=(
                "configure the classifier on every worker (KEEL_GUARDRAIL_CLASSIFIER_BASE_URL, "
                "_MODEL, _API_KEY) or fix its settings"
                if configured
                else "bring the classifier's endpoint back, or set the contract's "
                "on_classifier_failure to 'deny' or 'allow'"
            ),
            error_type=error_type,
            message=message,
        )
        return await self._not_the_agents(node, contract, failure, checkpoint, 1)

    def _record_policy(
        self, node: str, contract: AgentContract[Any, Any], decision: GuardrailDecision
    ) -> None:
        self._ledger.record(
            PolicyApplied(
                node=node,
                contract=contract.key,
                attempt=1,
                policy=decision.policy,
                action=decision.action,
                reason=decision.reason,
                changes=[c.model_dump(mode="json") for c in decision.changes],
            )
        )

    async def _call(
        self,
        node: str,
        contract: AgentContract[Any, Any],
        payload: dict[str, Any],
        feedback: list[str],
        attempt: int,
        model: str | None,
        *,
        record_input: bool = False,
        pii_free: bool = False,
    ) -> AgentDecision:
        decision: AgentDecision = await workflow.execute_activity(
            AGENT_NODE_ACTIVITY,
            AgentNodeRequest(
                contract=contract.key,
                contract_fingerprint=contract.fingerprint,
                node=node,
                input=payload,
                feedback=feedback,
                attempt=attempt,
                model=model,
            ),
            result_type=AgentDecision,
            task_queue=_model_queue(),
            start_to_close_timeout=contract.time_budget,
            # The activity heartbeats during the model call: a dead worker is noticed fast.
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=60),
                maximum_attempts=contract.provider_attempts,
                non_retryable_error_types=PERMANENT_ERRORS,
            ),
            summary=f"{node}: {contract.key}, try {attempt} of {contract.max_attempts}",
        )
        self.tokens_used += (decision.input_tokens or 0) + (decision.output_tokens or 0)
        recorded_input = None
        if record_input and engine_patched(NODE_INPUT_PATCH):
            # What the scrubber found nothing in, redact_pii leaves as it is: no second walk.
            recorded_input = payload if pii_free else redact_pii(payload)
        self._ledger.record(
            AgentDecided(
                node=node,
                feedback=feedback,
                input=recorded_input,
                **decision.model_dump(),
            )
        )
        return decision

    def _record_call_failure(
        self, node: str, contract: AgentContract[Any, Any], attempt: int, err: ActivityError
    ) -> tuple[str, bool]:
        cause = err.cause
        # Scrubbed again (the activity already did): a worker of another version, or a
        # failure that did not come through the activity's translation, may carry a key.
        message = scrub_secrets(str(cause) if cause else str(err))
        error_type = cause.type if isinstance(cause, ApplicationError) and cause.type else "Error"
        retryable = not (isinstance(cause, ApplicationError) and cause.non_retryable)
        self._ledger.record(
            AgentCallFailed(
                node=node,
                contract=contract.key,
                attempt=attempt,
                error_type=error_type,
                message=message,
                retryable=retryable,
            )
        )
        return (
            f"the model call failed ({error_type}): {message}",
            retryable,
        )

    def _classify(self, contract: AgentContract[Any, Any], err: ActivityError) -> SystemFailure:
        """What failed, from the activity's error (its type, provider and status)."""
        cause = err.cause
        if isinstance(cause, ApplicationError):
            error_type, message = cause.type or "Error", cause.message
            detail = cause.details[0] if cause.details else None
        elif isinstance(cause, TimeoutError):
            kind = cause.type.name.lower().replace("_", "-") if cause.type else "activity"
            error_type, message, detail = "TimeoutError", f"the call hit its {kind} timeout", None
        else:
            error_type, message, detail = type(cause).__name__, str(cause or err), None
        message = scrub_secrets(message)
        info = detail if isinstance(detail, dict) else {}
        status = info.get("status")
        provider = info.get("provider")
        return classify_failure(
            error_type,
            message,
            contract=contract.key,
            task_queue=_model_queue(),
            status=status if isinstance(status, int) else None,
            provider=provider if isinstance(provider, str) else None,
            attempts=contract.provider_attempts if not _non_retryable(err) else None,
        )

    async def _not_the_agents(
        self,
        node: str,
        contract: AgentContract[Any, Out],
        failure: SystemFailure,
        checkpoint: Checkpoint,
        attempts: int,
    ) -> AgentOutcome[Out]:
        """A failure that is not the agent's: fail the run saying what to fix, or escalate
        with the reason in view. Never the business default."""
        policy = contract.on_exhausted
        if contract.on_system_failure == "escalate" and not isinstance(policy, UseDefault):
            reason = f"not the agent's answer ({failure.problem}): {failure.reason}"
            outcome = await self._escalate(
                node,
                contract,
                policy.gate,
                f"{reason}; fix: {failure.fix}",
                {
                    "node": node,
                    "contract": contract.key,
                    "problem": "system",
                    "kind": failure.problem,
                    "reason": failure.reason,
                    "fix": failure.fix,
                },
                attempts,
                checkpoint,
                None,
            )
            outcome.failure = failure
            return outcome
        self._ledger.record(
            NodeFailed(
                node=node,
                contract=contract.key,
                problem=failure.problem,
                reason=failure.reason,
                fix=failure.fix,
                error_type=failure.error_type,
            )
        )
        workflow.set_current_details(f"Agent node **{node}** failed: {failure.explain(node)}")
        raise ApplicationError(
            failure.explain(node),
            {
                "node": node,
                "contract": contract.key,
                **failure.model_dump(mode="json"),
                "ledger_tail": [e.model_dump(mode="json") for e in self._ledger.events[-8:]],
            },
            type=NODE_FAILED,
            non_retryable=True,
        )

    async def _exhausted(
        self,
        node: str,
        contract: AgentContract[Any, Out],
        reasons: list[str],
        checkpoint: Checkpoint,
        attempts: int,
        check: Callable[[Out], list[str]] | None,
    ) -> AgentOutcome[Out]:
        policy = contract.on_exhausted
        if isinstance(policy, UseDefault):
            self._ledger.record(
                DefaultApplied(
                    node=node, contract=contract.key, output=policy.output, reason=policy.reason
                )
            )
            output = contract.output_model.model_validate(policy.output)
            return AgentOutcome(output, "default", attempts, checkpoint, policy.reason)
        return await self._escalate(
            node,
            contract,
            policy.gate,
            "; ".join(reasons) or "retry budget spent",
            {"node": node, "contract": contract.key, "last_problems": reasons},
            attempts,
            checkpoint,
            check,
        )

    async def _escalate(
        self,
        node: str,
        contract: AgentContract[Any, Out],
        spec: GateSpec,
        reason: str,
        context: dict[str, Any],
        attempts: int,
        checkpoint: Checkpoint,
        check: Callable[[Out], list[str]] | None,
    ) -> AgentOutcome[Out]:
        """Hand the node to a person through ``spec``, saying why."""
        self._ledger.record(
            Escalated(subject=f"node:{node}", reason=reason, to=list(spec.reviewers))
        )
        record = self._gates.open(
            spec,
            context,
            # A person's answer must pass the same content check the agent's had to.
            check=(lambda mods: _human_problems(contract, mods, check)) if check else None,
            reason=reason,
        )
        await self._gates.wait(record)
        review = record.review
        if record.state is GateState.MODIFIED and review and review.modifications:
            output = contract.output_model.model_validate(
                {"confidence": 1.0, **review.modifications}
            )
            return AgentOutcome(output, "human", attempts, checkpoint, f"by {review.reviewer}")
        note = f"escalation gate {record.name} ended {record.state.value} ({reason})"
        return AgentOutcome(None, "none", attempts, checkpoint, note)


def _model_queue() -> str:
    """The queue of this run's model calls: the workflow's own (eager dispatch: one trip
    less through matching), or its model queue when the worker runs a rate limit there.
    The worker answers (``keel.workers.model_calls``); the answer is recorded in each
    call's scheduled event and not compared on replay, so a worker without the route (a
    replayer) answers the workflow's own queue."""
    own = workflow.info().task_queue
    route = workflow.extern_functions().get(MODEL_QUEUE_ROUTE)
    return str(route(own)) if route is not None else own


def _non_retryable(err: ActivityError) -> bool:
    cause = err.cause
    return isinstance(cause, ApplicationError) and cause.non_retryable


def _human_problems(
    contract: AgentContract[Any, Out],
    modifications: dict[str, Any],
    check: Callable[[Out], list[str]],
) -> list[str]:
    try:
        output = contract.output_model.model_validate({"confidence": 1.0, **modifications})
    except ValidationError:
        return []  # the gate's own schema check reports these
    return check(output)


def _scrubbed_nothing(contract: AgentContract[Any, Any], guarded: GuardrailOutcome) -> bool:
    """Whether the contract's PII scrubber, with ``redact_pii``'s phone regions, ran on this
    payload and found nothing: then ``redact_pii(payload)`` equals ``payload``."""
    config = contract.guardrails
    return tuple(config.phone_regions) == DEFAULT_PHONE_REGIONS and any(
        d.policy == PiiScrubber.name and d.action == "allow" for d in guarded.decisions
    )
