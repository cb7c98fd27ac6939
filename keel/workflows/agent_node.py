"""The agent-node building block: checkpoint, one activity per attempt, validate, gate, retry.

Everything but the model call is workflow code, so an attempt costs exactly one activity
round trip (DESIGN.md, cost model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from keel.contracts.agent import AgentContract, RetryStrategy, UseDefault
    from keel.contracts.agent_node import AGENT_NODE_ACTIVITY, AgentDecision, AgentNodeRequest
    from keel.contracts.gates import GateState
    from keel.contracts.guardrails import (
        GuardrailOutcome,
        GuardrailState,
        apply_guardrails,
        estimate_tokens,
    )
    from keel.contracts.ledger import (
        AgentCallFailed,
        AgentDecided,
        AgentRetried,
        DefaultApplied,
        Escalated,
        PolicyApplied,
        ProviderFallback,
        ValidationFailed,
    )
    from keel.contracts.names import model_queue

from keel.workflows.context import Checkpoint, WorkflowContext
from keel.workflows.gates import GateBook
from keel.workflows.ledger import Ledger

OutputCheck = Callable[[Any], list[str]]
"""A deterministic check of a schema-valid output; returns reasons to reject it."""

HEARTBEAT_TIMEOUT = timedelta(seconds=10)

PERMANENT_ERRORS = [
    "ProviderPermanentError",
    "ProviderConfigError",
    "ContractNotFoundError",
    "ContractFingerprintMismatch",
]


@dataclass
class AgentOutcome:
    """What an agent node settled on.

    ``output`` is ``None`` when the node escalated and the human rejected or never answered.
    """

    output: Any
    source: Literal["agent", "default", "human", "none", "denied"]
    attempts: int
    checkpoint: Checkpoint
    note: str


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
        contract: AgentContract,
        node_input: BaseModel,
        *,
        feedback: Sequence[str] = (),
        check: OutputCheck | None = None,
    ) -> AgentOutcome:
        """Run ``node`` under ``contract`` until an output passes, or the budget is spent."""
        checkpoint = self._context.checkpoint(node)
        payload = node_input.model_dump(mode="json")
        attempt_feedback = list(feedback)
        reasons: list[str] = []
        # The worker's model first, then the contract's fallbacks; a fallback sticks.
        models: list[str | None] = [None, *contract.fallback_models]
        attempt = 0
        while attempt < contract.max_attempts:
            attempt += 1
            workflow.set_current_details(
                f"Agent node **{node}** ({contract.key}), attempt {attempt} of "
                f"{contract.max_attempts}"
            )
            guarded = self._guard(node, contract, payload, attempt_feedback, attempt)
            if guarded.denied is not None:
                return AgentOutcome(None, "denied", attempt, checkpoint, guarded.message)
            try:
                decision = await self._call(
                    node, contract, guarded.payload, attempt_feedback, attempt, models[0]
                )
            except ActivityError as err:
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
                reasons = [reason]
                break
            verdict = _judge(contract, decision, check)
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
        contract: AgentContract,
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
        outcome = apply_guardrails(payload, contract.guardrails, state)
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

    async def _call(
        self,
        node: str,
        contract: AgentContract,
        payload: dict[str, Any],
        feedback: list[str],
        attempt: int,
        model: str | None,
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
            task_queue=model_queue(workflow.info().task_queue),
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
        self._ledger.record(
            AgentDecided(
                node=node,
                feedback=feedback,
                **decision.model_dump(),
            )
        )
        return decision

    def _record_call_failure(
        self, node: str, contract: AgentContract, attempt: int, err: ActivityError
    ) -> tuple[str, bool]:
        cause = err.cause
        message = str(cause) if cause else str(err)
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

    async def _exhausted(
        self,
        node: str,
        contract: AgentContract,
        reasons: list[str],
        checkpoint: Checkpoint,
        attempts: int,
        check: OutputCheck | None,
    ) -> AgentOutcome:
        policy = contract.on_exhausted
        if isinstance(policy, UseDefault):
            self._ledger.record(
                DefaultApplied(
                    node=node, contract=contract.key, output=policy.output, reason=policy.reason
                )
            )
            output = contract.output_model.model_validate(policy.output)
            return AgentOutcome(output, "default", attempts, checkpoint, policy.reason)
        spec = policy.gate
        self._ledger.record(
            Escalated(
                subject=f"node:{node}",
                reason="; ".join(reasons) or "retry budget spent",
                to=list(spec.reviewers),
            )
        )
        record = self._gates.open(
            spec,
            {"node": node, "contract": contract.key, "last_problems": reasons},
            # A person's answer must pass the same content check the agent's had to.
            check=(lambda mods: _human_problems(contract, mods, check)) if check else None,
        )
        await self._gates.wait(record)
        review = record.review
        if record.state is GateState.MODIFIED and review and review.modifications:
            output = contract.output_model.model_validate(
                {"confidence": 1.0, **review.modifications}
            )
            return AgentOutcome(output, "human", attempts, checkpoint, f"by {review.reviewer}")
        note = f"escalation gate {record.name} ended {record.state.value}"
        return AgentOutcome(None, "none", attempts, checkpoint, note)


def _human_problems(
    contract: AgentContract, modifications: dict[str, Any], check: OutputCheck
) -> list[str]:
    try:
        output = contract.output_model.model_validate({"confidence": 1.0, **modifications})
    except ValidationError:
        return []  # the gate's own schema check reports these
    return check(output)


Rejection = tuple[Literal["parse", "schema", "rule", "confidence"], list[str]]


def _judge(
    contract: AgentContract, decision: AgentDecision, check: OutputCheck | None
) -> BaseModel | Rejection:
    """The validated output of an accepted answer, or why the answer is rejected."""
    if decision.output is None:
        return "parse", [decision.parse_error or "the answer could not be parsed"]
    try:
        output = contract.output_model.model_validate(decision.output)
    except ValidationError as err:
        return "schema", [
            f"{'.'.join(str(p) for p in e['loc']) or 'output'}: {e['msg']}" for e in err.errors()
        ]
    if check is not None:
        rule_problems = check(output)
        if rule_problems:
            return "rule", rule_problems
    confidence = float(decision.output["confidence"])
    if confidence < contract.confidence_threshold:
        return "confidence", [
            f"confidence {confidence:.2f} is below the contract's threshold "
            f"{contract.confidence_threshold:.2f}: recheck the evidence"
        ]
    return output
