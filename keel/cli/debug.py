"""``keel debug ID NODE``: re-run one recorded agent-node attempt, counterfactually.

It re-renders the attempt's prompt from its recorded input and feedback (under the
recorded contract version, or another with ``--contract``), calls a model (the recorded one,
or another with ``--model``) through the agent-node activity's own code (run in this
process, outside any worker: no workflow, no Temporal activity, no effects), judges the
answer with the workflow's judgement (``keel.contracts.judging``) and shows the difference
from what was recorded. It only reads the execution: its history and ledger stay as they
were.

The input comes from Temporal's history when it still has the run (the exact request the
activity received), else from the ledger (``AgentDecided.input``: PII-redacted, so the
prompt rendered from it can differ from the one the model saw; the prompt hashes say).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from keel.activities.providers import ModelProvider, build_provider, close_provider
from keel.cli.debug_report import NodeInput, asked, judged, report_text
from keel.cli.ledgers import execution_runs, load_event_types
from keel.cli.node_attempts import RecordedAttempt, pick_attempt
from keel.cli.node_history import scheduled_request
from keel.cli.output import FAILURE, OK, USAGE, CliError, emit, report
from keel.cli.render import escape
from keel.contracts import REGISTRY, AgentContract, AgentDecision, AgentNodeRequest
from keel.contracts.agent_node import AGENT_NODE_ACTIVITY
from keel.errors import KeelUserError
from keel.settings import KeelSettings


def add_debug_parser(
    command: Callable[[str, str], argparse.ArgumentParser],
) -> None:
    """``keel debug ID NODE [--run-index K] [--attempt N] [--model M] [--contract C]``."""
    p = command(
        "debug",
        "re-run one agent-node attempt from its recorded input (another model or contract "
        "version if asked) and diff it against the recorded decision; writes nothing",
    )
    p.add_argument(
        "--app",
        action="append",
        metavar="MODULE[:ATTR]",
        help="an app whose contracts to load (repeatable; default: KEEL_APPS, else every "
        "installed app)",
    )
    p.add_argument("workflow_id")
    p.add_argument("node", help="the agent node's name, as the ledger records it")
    p.add_argument(
        "--attempt", type=_positive, default=1, metavar="N", help="the attempt (default: 1)"
    )
    p.add_argument(
        "--run-index",
        type=_positive,
        metavar="K",
        help="which run of the node, when it ran more than once (1 = the first)",
    )
    p.add_argument(
        "--model",
        metavar="SPEC",
        help="offline | openai:<model> | anthropic:<model> (default: the recorded model)",
    )
    p.add_argument(
        "--contract",
        metavar="NAME@VERSION",
        help="render and judge under this registered contract version (default: the recorded)",
    )


async def cmd_debug(client: Client, settings: KeelSettings, args: Any) -> int:
    """Re-run the attempt, print prompt, answer, verdict and diff; exit 0 when it ran, 1
    when it could not (not found, no input, a failed model call)."""
    contract_key = args.contract
    if contract_key is not None and "@" not in contract_key:
        raise CliError(f"--contract takes NAME@VERSION, not {escape(contract_key)!r}", USAGE)
    load_event_types(args)
    runs = await execution_runs(client, settings, args.workflow_id)
    recorded, node_runs = pick_attempt(
        runs, args.workflow_id, args.node, node_run=args.run_index, attempt=args.attempt
    )
    node_input = await _node_input(client, args.workflow_id, recorded)
    decided = recorded.decided
    contract = _contract(contract_key or decided.contract, decided.contract)
    if contract_key is not None:
        _check_input(contract, node_input)
    prompt = contract.render_prompt(node_input.payload, node_input.feedback)
    spec = args.model or _recorded_spec(decided.provider, decided.model)
    provider = _provider(settings, spec)
    try:
        decision, failure = await _call(provider, contract, node_input, recorded, args)
    finally:
        await close_provider(provider)
    record = asked(recorded, node_runs, node_input, contract, prompt, spec)
    record["workflow_id"] = args.workflow_id
    if failure is not None:
        record["call_failure"] = failure
        emit(args, report_text(record), record)
        message = f"the model call failed ({failure['error_type']}): {failure['message']}"
        return report(args, message, FAILURE)
    assert decision is not None
    record.update(judged(contract, decision, recorded))
    emit(args, report_text(record), record)
    return OK


async def _node_input(client: Client, workflow_id: str, recorded: RecordedAttempt) -> NodeInput:
    """The history's exact request when Temporal still has it, else the ledger's copy."""
    lookup = await scheduled_request(client, workflow_id, recorded)
    if lookup.request is not None:
        return NodeInput(
            lookup.request.input,
            list(lookup.request.feedback),
            "history",
            "Temporal's history: the request the agent-node activity received",
        )
    if recorded.ledger_input is not None:
        return NodeInput(
            recorded.ledger_input,
            list(recorded.decided.feedback),
            "ledger",
            f"the ledger's AgentDecided.input, PII-redacted (history: {lookup.unavailable})",
        )
    raise CliError(
        f"cannot re-render {escape(recorded.decided.node)!r} attempt {recorded.decided.attempt}: "
        "the run predates the recording of node inputs in the ledger (AgentDecided.input), "
        f"and {lookup.unavailable}",
        FAILURE,
    )


def _contract(key: str, recorded: str) -> AgentContract[Any, Any]:
    try:
        return REGISTRY.get(key)
    except KeelUserError as exc:
        which = "the recorded contract" if key == recorded else "--contract"
        raise CliError(
            f"{which} {escape(key)} is not registered in this process: load the app that "
            f"publishes it with --app MODULE (or KEEL_APPS); {escape(str(exc))}",
            FAILURE,
        ) from exc


def _check_input(contract: AgentContract[Any, Any], node_input: NodeInput) -> None:
    """A contract version chosen with ``--contract`` must accept the recorded input."""
    try:
        contract.input_model.model_validate(node_input.payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise CliError(
            f"{contract.key}'s input model does not accept the recorded input "
            f"(from the {node_input.source}): {escape(problems)}",
            FAILURE,
        ) from exc


def _recorded_spec(provider: str, model: str) -> str:
    """The ``KEEL_MODEL`` spec of the recorded provider and model."""
    if provider == "offline":
        return "offline"
    if provider in ("openai", "anthropic"):
        return f"{provider}:{model}"
    raise CliError(
        f"the recorded provider {escape(provider)!r} is not one this command can build: "
        "pass --model offline|openai:<model>|anthropic:<model>",
        USAGE,
    )


def _provider(settings: KeelSettings, spec: str) -> ModelProvider:
    """The provider for ``spec``, built as the worker builds it (keys, base URLs, faults)."""
    try:
        return build_provider(settings.model_copy(update={"model": spec}))
    except KeelUserError as exc:
        raise CliError(escape(str(exc)), USAGE) from exc


async def _call(
    provider: ModelProvider,
    contract: AgentContract[Any, Any],
    node_input: NodeInput,
    recorded: RecordedAttempt,
    args: Any,
) -> tuple[AgentDecision | None, dict[str, Any] | None]:
    """One call through the agent-node activity's code, run in this process (the SDK's
    ``ActivityEnvironment``: no worker, no server); the decision, or the failure."""
    from temporalio.testing import ActivityEnvironment  # only here: the CLI starts faster

    from keel.activities.agent_node import AgentNodeActivities

    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(
        environment.info,
        activity_type=AGENT_NODE_ACTIVITY,
        workflow_id=args.workflow_id,
        workflow_run_id=recorded.run_id,
        attempt=1,
    )
    activities = AgentNodeActivities(provider, record_prompts=True, registry=REGISTRY)
    request = AgentNodeRequest(
        contract=contract.key,
        contract_fingerprint=contract.fingerprint,
        node=recorded.decided.node,
        input=node_input.payload,
        feedback=node_input.feedback,
        attempt=recorded.decided.attempt,
    )
    try:
        return await environment.run(activities.run_agent_node, request), None
    except ApplicationError as err:
        return None, {"error_type": err.type or "Error", "message": err.message}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value
