"""``keel export --dataset chat|preference``: reviewer verdicts as training and evaluation
data (``docs/datasets.md``).

Each selected execution's ledger is verified, then every ``AgentDecided`` is paired with
what became of it (``keel.contracts.outcomes``). A prompt is never read from the ledger (it
holds none): it is re-rendered from the contract version the decision names and the node
input the ledger recorded, so the apps that publish the contracts must be loaded (``--app``,
``KEEL_APPS``). Every text written (prompts, answers, comments) goes through the PII
guardrail's redaction first. A decision that cannot become an example is skipped with a
counted reason, never silently: the summary on stderr (or ``-o json``) says why.

Where ledgers come from is one function, ``selected_ledgers``: Temporal's executions (a
visibility query) and the archive's (executions Temporal no longer holds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from temporalio.client import Client
from temporalio.service import RPCError

from keel.activities.sqlstore import StoreUnavailableError
from keel.archive import ArchiveStore
from keel.cli.ledgers import RunLedger, execution_runs, load_event_types
from keel.cli.output import OK, USAGE, CliError, output_file, wants_json
from keel.cli.render import escape
from keel.contracts.agent import AgentContract, canonical_json
from keel.contracts.guardrails import PII_KINDS, pii_marker, redact_pii
from keel.contracts.integrity import verify_ledger
from keel.contracts.ledger import parse_ledger
from keel.contracts.outcomes import DecisionOutcome, decision_outcomes
from keel.contracts.registry import REGISTRY, ContractRegistry
from keel.contracts.tools import TOOL_TASK_WORKFLOW
from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.workers.keys import trusted_keyring

DatasetFormat = Literal["chat", "preference"]
FORMATS: tuple[DatasetFormat, ...] = ("chat", "preference")
Source = Literal["temporal", "archive", "both"]
SOURCES: tuple[Source, ...] = ("temporal", "archive", "both")
POSITIVE_KINDS = frozenset({"accepted", "accepted_by_rule", "approved", "modified"})
"""Outcomes whose answer (the person's version, for ``modified``) is a good one."""


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """``keel export``'s dataset options (``--dataset``, ``--metadata``) and the selection
    options it shares with ``keel trust``."""
    parser.add_argument(
        "--dataset",
        choices=FORMATS,
        help="write training data instead of ledgers: chat fine-tuning JSONL, or preference "
        "pairs (docs/datasets.md)",
    )
    parser.add_argument(
        "--metadata",
        metavar="FILE",
        help="with --dataset: write each example's provenance (execution, decision, outcome) "
        "to FILE, one line per example in the same order (fine-tuning files take no extra keys)",
    )
    add_source_options(parser)


def add_source_options(parser: argparse.ArgumentParser, *, note: str = "") -> None:
    """Where executions come from: ``--source`` and ``--workflow-type`` (unset: None, so a
    command can tell they were not given; ``source_of`` reads the default)."""
    parser.add_argument(
        "--source",
        choices=SOURCES,
        help="read executions from Temporal, the ledger archive, or both: Temporal's, then "
        f"the archived ones Temporal no longer holds (default: both){note}",
    )
    parser.add_argument(
        "--workflow-type", metavar="TYPE", help=f"only executions of this workflow type{note}"
    )


@dataclass
class Selected:
    """One selected execution: its runs, or why it could not be read."""

    workflow_id: str
    origin: Literal["temporal", "archive"]
    runs: list[RunLedger] = field(default_factory=list)
    problem: str | None = None


def source_of(args: Any) -> Source:
    """``--source``, ``both`` when not given."""
    source: Source = getattr(args, "source", None) or "both"
    return source


def temporal_query(query: str | None, workflow_type: str | None) -> str:
    """The visibility query for Temporal's side of the selection."""
    chosen = f"WorkflowType = '{workflow_type.replace(chr(39), '')}'" if workflow_type else None
    if query and chosen:
        return f"({query}) AND {chosen}"
    return query or chosen or f"WorkflowType != '{TOOL_TASK_WORKFLOW}'"


async def selected_ledgers(
    client: Client | None,
    settings: KeelSettings,
    *,
    source: Source,
    query: str | None = None,
    workflow_type: str | None = None,
) -> AsyncIterator[Selected]:
    """Every selected execution's stored runs: Temporal's (by ``query``, each workflow id
    once, every run of its chain) and then the archive's that Temporal did not list. A
    visibility query selects among Temporal's executions only, so with ``query`` the archive
    adds nothing unless ``source`` is ``archive``."""
    seen: set[str] = set()
    if source in ("temporal", "both"):
        if client is None:
            raise CliError("reading executions from Temporal needs a reachable server", USAGE)
        async for execution in client.list_workflows(temporal_query(query, workflow_type)):
            if execution.id in seen:
                continue
            seen.add(execution.id)
            try:
                runs = await execution_runs(client, settings, execution.id)
            except (CliError, RPCError) as exc:
                yield Selected(execution.id, "temporal", problem=exc.message)
                continue
            yield Selected(execution.id, "temporal", runs)
    if source == "archive" or (source == "both" and not query):
        async for selected in _archived(settings, workflow_type, seen):
            yield selected


async def _archived(
    settings: KeelSettings, workflow_type: str | None, seen: set[str]
) -> AsyncIterator[Selected]:
    """The archive's executions not in ``seen``."""
    try:
        async with ArchiveStore.open(settings) as archive:
            for workflow_id in await archive.executions(workflow_type=workflow_type):
                if workflow_id in seen:
                    continue
                seen.add(workflow_id)
                runs = [RunLedger.from_archive(run) for run in await archive.runs(workflow_id)]
                yield Selected(workflow_id, "archive", runs)
    except StoreUnavailableError as exc:
        raise CliError(f"the ledger archive is unreachable: {escape(str(exc))}") from exc


@dataclass
class ExecutionDecisions:
    """One execution's decision outcomes, after its ledger verified."""

    workflow_id: str
    workflow_type: str
    outcomes: list[DecisionOutcome]


async def verified_decisions(
    selection: AsyncIterator[Selected], settings: KeelSettings, skipped: Counter[str]
) -> AsyncIterator[ExecutionDecisions]:
    """The decision outcomes of each selected execution whose ledger parses and verifies
    (hash chain, and signatures against the trusted keys when there are any); the others
    are counted in ``skipped`` by reason, with a note on stderr."""
    keyring = trusted_keyring(settings) or None
    async for selected in selection:
        if selected.problem is not None or not selected.runs:
            _note(selected.workflow_id, selected.problem or "no runs")
            skipped["execution without a readable ledger"] += 1
            continue
        raw = [event for run in selected.runs for event in run.events]
        report = verify_ledger(raw, keyring=keyring, closed=selected.runs[-1].ended_by_keel)
        if not report.ok:
            _note(
                selected.workflow_id, f"ledger broken at event {report.broken_at}: {report.reason}"
            )
            skipped["execution whose ledger does not verify"] += 1
            continue
        try:
            events = parse_ledger(raw)
        except ValueError:
            _note(selected.workflow_id, "an event does not parse")
            skipped["execution whose ledger does not parse"] += 1
            continue
        yield ExecutionDecisions(
            selected.workflow_id, selected.runs[-1].workflow_type, decision_outcomes(events)
        )


def _note(workflow_id: str, why: str) -> None:
    print(f"keel: skipped {escape(workflow_id)}: {escape(why)}", file=sys.stderr)


@dataclass
class Prompt:
    """A decision's prompt, re-rendered from its contract version and recorded input."""

    system: str
    user: str
    matches_record: bool
    """Whether it hashes to the prompt hash the ledger recorded (it does not when the
    model saw PII that the recorded input holds as markers)."""


def render(outcome: DecisionOutcome, registry: ContractRegistry = REGISTRY) -> Prompt | str:
    """The decision's prompt as the model was sent it (its input holding PII markers; the
    feedback as recorded, not yet redacted), or why it cannot be re-rendered."""
    try:
        contract: AgentContract[Any, Any] = registry.get(outcome.contract)
    except KeelUserError:
        return "contract version not loaded (load its app: --app or KEEL_APPS)"
    if contract.fingerprint != outcome.contract_fingerprint:
        return "contract code differs from the version recorded (fingerprint)"
    if outcome.input is None:
        return "no recorded input (the run predates input recording)"
    try:
        user = contract.render_prompt(outcome.input, outcome.feedback)
    except (KeyError, ValueError):
        return "the recorded input does not fit the contract's prompt"
    matches = hashlib.sha256(user.encode()).hexdigest() == outcome.prompt_sha256
    return Prompt(contract.system_prompt, user, matches)


_MARKER = re.compile(r"\[(" + "|".join(PII_KINDS) + r") redacted #(\d+)\]")
_HELD = re.compile("\x00([a-z]+)\x00")


class ExampleRedactor:
    """Redacts the texts of one example in turn, so that its markers never name two values
    with one number: PII first found in a later text (a reviewer's comment in the feedback,
    a value the model made up) is numbered after the markers the example already holds (the
    recorded input's). A value in two texts may get two numbers; two values never share one.
    """

    def __init__(self) -> None:
        self.used: dict[str, int] = {}

    def __call__(self, text: str) -> str:
        """``text`` with its PII replaced by markers numbered after those used so far."""
        text = text.replace("\x00", "\ufffd")  # the placeholders' delimiter is Keel's
        held = _MARKER.findall(text)
        base = dict(self.used)
        for kind, number in held:
            base[kind] = max(base.get(kind, 0), int(number))
        kept: list[str] = []

        def hold(match: re.Match[str]) -> str:
            kept.append(match[0])
            return f"\x00{_letters(len(kept) - 1)}\x00"

        scrubbed = str(redact_pii(_MARKER.sub(hold, text)))
        shifted = _MARKER.sub(lambda m: pii_marker(m[1], int(m[2]) + base.get(m[1], 0)), scrubbed)
        result = _HELD.sub(lambda m: kept[_index(m[1])], shifted)
        for kind, number in _MARKER.findall(result):
            self.used[kind] = max(self.used.get(kind, 0), int(number))
        return result


def _letters(index: int) -> str:
    """``index`` in letters (a, b, ..., ba): a placeholder the PII patterns never match."""
    text = ""
    while True:
        index, digit = divmod(index, 26)
        text = chr(ord("a") + digit) + text
        if index == 0:
            return text


def _index(letters: str) -> int:
    index = 0
    for char in letters:
        index = index * 26 + ord(char) - ord("a")
    return index


def answer_json(output: dict[str, Any] | None, raw: str = "") -> str:
    """An answer as the assistant's message: its JSON (canonical); the raw text when it did
    not parse."""
    return canonical_json(output) if output is not None else raw


def positive_answer(outcome: DecisionOutcome) -> dict[str, Any] | None:
    """The answer an outcome vouches for: the person's version when there is one, the
    agent's when it was accepted or approved; None for the others."""
    if outcome.person_output is not None:
        return outcome.person_output
    if outcome.kind in POSITIVE_KINDS and outcome.output is not None:
        return outcome.output
    return None


def chat_example(outcome: DecisionOutcome, prompt: Prompt) -> dict[str, Any] | str:
    """An OpenAI chat fine-tuning line (``messages`` only), or why the outcome gives none."""
    answer = positive_answer(outcome)
    if answer is None:
        return f"{outcome.kind}: no answer to train towards (see the preference format)"
    redact = ExampleRedactor()
    return {
        "messages": [
            {"role": "system", "content": redact(prompt.system)},
            {"role": "user", "content": redact(prompt.user)},
            {"role": "assistant", "content": redact(answer_json(answer))},
        ]
    }


def preference_example(
    outcome: DecisionOutcome, prompt: Prompt, by_seq: dict[int, DecisionOutcome]
) -> dict[str, Any] | str:
    """An OpenAI preference (DPO) line, or why the outcome gives none: a person's version
    over the agent's answer; the answer that replaced a rejected or failed one over it."""
    rejected = answer_json(outcome.output, outcome.raw_response)
    if outcome.person_output is not None:
        preferred = outcome.person_output
    elif outcome.superseded_by is not None and outcome.superseded_by in by_seq:
        later = positive_answer(by_seq[outcome.superseded_by])
        if later is None:
            return f"{outcome.kind}: the answer that replaced it was not accepted either"
        preferred = later
    else:
        return f"{outcome.kind}: no better answer to prefer"
    chosen = answer_json(preferred)
    if chosen == rejected:
        return f"{outcome.kind}: the preferred answer is the same text"
    redact = ExampleRedactor()
    return {
        "input": {
            "messages": [
                {"role": "system", "content": redact(prompt.system)},
                {"role": "user", "content": redact(prompt.user)},
            ]
        },
        "preferred_output": [{"role": "assistant", "content": redact(chosen)}],
        "non_preferred_output": [{"role": "assistant", "content": redact(rejected)}],
    }


def provenance(workflow_id: str, outcome: DecisionOutcome, prompt: Prompt) -> dict[str, Any]:
    """What an example's metadata line says of where it came from (PII redacted)."""
    return {
        "workflow_id": workflow_id,
        "seq": outcome.seq,
        "node": outcome.node,
        "contract": outcome.contract,
        "attempt": outcome.attempt,
        "provider": outcome.provider,
        "model": outcome.model,
        "confidence": outcome.confidence,
        "outcome": outcome.kind,
        "validation": outcome.validation,
        "reasons": redact_pii(outcome.reasons),
        "comment": redact_pii(outcome.comment),
        "gates": [{"gate": g.gate, "state": g.state} for g in outcome.gates],
        "superseded_by": outcome.superseded_by,
        "prompt_matches_record": prompt.matches_record,
    }


@dataclass
class DatasetSummary:
    """What an export wrote and what it skipped, by reason."""

    examples: int = 0
    executions: int = 0
    decisions: int = 0
    prompts_differing: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def record(self) -> dict[str, Any]:
        """The summary as ``-o json`` prints it."""
        return {
            "examples": self.examples,
            "executions": self.executions,
            "decisions": self.decisions,
            "prompts_differing_from_record": self.prompts_differing,
            "skipped": dict(sorted(self.skipped.items())),
        }

    def text(self, kind: str) -> str:
        """The summary as text."""
        lines = [
            f"wrote {self.examples} {kind} examples from {self.decisions} decisions of "
            f"{self.executions} executions"
        ]
        if self.prompts_differing:
            lines.append(
                f"  {self.prompts_differing} re-rendered prompts differ from the recorded hash "
                "(their input holds PII markers where the model saw the value)"
            )
        lines += [f"  skipped {n}: {reason}" for reason, n in sorted(self.skipped.items())]
        return "\n".join(lines)


def examples_of(
    execution: ExecutionDecisions,
    kind: DatasetFormat,
    summary: DatasetSummary,
    registry: ContractRegistry = REGISTRY,
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Each example of one execution with its metadata; skips counted in ``summary``."""
    by_seq = {outcome.seq: outcome for outcome in execution.outcomes}
    for outcome in execution.outcomes:
        summary.decisions += 1
        prompt = render(outcome, registry)
        if isinstance(prompt, str):
            summary.skipped[prompt] += 1
            continue
        if kind == "chat":
            example = chat_example(outcome, prompt)
        else:
            example = preference_example(outcome, prompt, by_seq)
        if isinstance(example, str):
            summary.skipped[example] += 1
            continue
        summary.examples += 1
        summary.prompts_differing += not prompt.matches_record
        yield example, provenance(execution.workflow_id, outcome, prompt)


async def write_dataset(
    selection: AsyncIterator[Selected],
    settings: KeelSettings,
    kind: DatasetFormat,
    out: IO[str],
    metadata: IO[str] | None = None,
    *,
    registry: ContractRegistry = REGISTRY,
) -> DatasetSummary:
    """Write the examples of every selected execution to ``out`` (one JSON object a line)
    and, when given, their provenance to ``metadata`` (line for line)."""
    summary = DatasetSummary()
    async for execution in verified_decisions(selection, settings, summary.skipped):
        summary.executions += 1
        for example, provenance_line in examples_of(execution, kind, summary, registry):
            out.write(json.dumps(example, ensure_ascii=False) + "\n")
            if metadata is not None:
                metadata.write(json.dumps(provenance_line, ensure_ascii=False) + "\n")
    return summary


async def export_dataset(client: Client | None, settings: KeelSettings, args: Any) -> int:
    """``keel export --dataset``: write the examples (``--out`` or stdout), their metadata
    (``--metadata``), and the summary on stderr."""
    load_event_types(args)  # the apps' contracts, to re-render prompts
    selection = selected_ledgers(
        client, settings, source=source_of(args), query=args.query, workflow_type=args.workflow_type
    )
    with output_file(args.out) as out, ExitStack() as closing:
        meta = closing.enter_context(output_file(args.metadata)) if args.metadata else None
        summary = await write_dataset(selection, settings, args.dataset, out, meta)
    text = json.dumps(summary.record()) if wants_json(args) else summary.text(args.dataset)
    print(text, file=sys.stderr)
    return OK
