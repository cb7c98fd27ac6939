"""What ``keel debug`` shows: the attempt asked, the answer, the workflow's verdict on it and
the diff from the recorded decision, as one record (``-o json``) or as text for a terminal
(every line escaped: prompts and answers hold what a model or a sender wrote)."""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from keel.cli.node_attempts import RecordedAttempt, RecordedVerdict
from keel.cli.render import escape
from keel.contracts import AgentContract, AgentDecision
from keel.contracts.judging import judge_answer

RULES_NOT_RUN = (
    "the workflow's own content check (its rules over the run's state) is not re-run; "
    "parse, schema and confidence are judged as the workflow judges them"
)


@dataclass(frozen=True)
class NodeInput:
    """What the attempt is re-rendered from, and where it was read."""

    payload: dict[str, Any]
    feedback: list[str]
    source: str
    """``history`` (the scheduled request) or ``ledger`` (``AgentDecided.input``)."""
    note: str


def asked(
    recorded: RecordedAttempt,
    node_runs: int,
    node_input: NodeInput,
    contract: AgentContract[Any, Any],
    prompt: str,
    spec: str,
) -> dict[str, Any]:
    """What was asked: the attempt, its input and source, contract, model and prompt."""
    decided = recorded.decided
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    return {
        "node": decided.node,
        "node_run": recorded.node_run,
        "node_runs": node_runs,
        "run_id": recorded.run_id,
        "attempt": decided.attempt,
        "input_source": node_input.source,
        "input_note": node_input.note,
        "input": node_input.payload,
        "feedback": node_input.feedback,
        "contract": {
            "recorded": decided.contract,
            "used": contract.key,
            "recorded_fingerprint": decided.contract_fingerprint,
            "fingerprint": contract.fingerprint,
        },
        "model": {"recorded": f"{decided.provider}:{decided.model}", "used": spec},
        "prompt": prompt,
        "prompt_sha256": digest,
        "recorded_prompt_sha256": decided.prompt_sha256,
        "prompt_matches": digest == decided.prompt_sha256,
        "prompt_note": _prompt_note(digest, recorded, node_input, contract),
    }


def _prompt_note(
    digest: str,
    recorded: RecordedAttempt,
    node_input: NodeInput,
    contract: AgentContract[Any, Any],
) -> str:
    """Why the re-rendered prompt's hash differs from the recorded one (or that it does not)."""
    decided = recorded.decided
    if digest == decided.prompt_sha256:
        return "the re-rendered prompt is the one the model was sent"
    if contract.key != decided.contract:
        return f"{contract.key} renders another prompt than {decided.contract}"
    if contract.fingerprint != decided.contract_fingerprint:
        return (
            f"this process's {contract.key} (fingerprint {contract.fingerprint[:12]}) is not "
            f"the code the run used ({decided.contract_fingerprint[:12]})"
        )
    if node_input.source == "ledger":
        return (
            "the ledger's copy of the input is PII-redacted: the prompt differs from the "
            "model's where redaction markers stand for the values it saw"
        )
    return "the prompt rendering differs from the worker's (another Keel version?)"


def judged(
    contract: AgentContract[Any, Any], decision: AgentDecision, recorded: RecordedAttempt
) -> dict[str, Any]:
    """The answer, the workflow's verdict on it, and the diff from the recorded decision."""
    verdict = judge_answer(contract, decision, None)
    now = (
        RecordedVerdict(accepted=True)
        if isinstance(verdict, BaseModel)
        else RecordedVerdict(accepted=False, kind=verdict[0], reasons=tuple(verdict[1]))
    )
    before = _pretty(recorded.decided.output)
    after = _pretty(decision.output)
    diff = "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile="recorded",
            tofile="now",
        )
    )
    return {
        "answer": {
            "provider": decision.provider,
            "model": decision.model,
            "raw_response": decision.raw_response,
            "output": decision.output,
            "parse_error": decision.parse_error,
            "input_tokens": decision.input_tokens,
            "output_tokens": decision.output_tokens,
        },
        "verdict": _verdict_record(now),
        "recorded_verdict": _verdict_record(recorded.verdict),
        "rules": RULES_NOT_RUN,
        "confidence": {"recorded": recorded.decided.confidence, "now": decision.confidence},
        "same_output": before == after,
        "diff": diff,
    }


def _verdict_record(verdict: RecordedVerdict) -> dict[str, Any]:
    return {
        "accepted": verdict.accepted,
        "kind": verdict.kind,
        "reasons": list(verdict.reasons),
        "summary": verdict.describe(),
    }


def _pretty(output: dict[str, Any] | None) -> str:
    """An output as canonical JSON (sorted keys), one member a line, for a readable diff."""
    if output is None:
        return "(no parsed output)\n"
    return json.dumps(output, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def report_text(record: dict[str, Any]) -> str:
    """The report for a terminal, one line at a time."""
    contract, model = record["contract"], record["model"]
    lines = [
        f"keel debug {record['workflow_id']} {record['node']}: node run {record['node_run']} "
        f"of {record['node_runs']}, attempt {record['attempt']} (run {record['run_id']})",
        f"input     from {record['input_note']}",
        f"contract  {contract['used']} (recorded {contract['recorded']})",
        f"model     {model['used']} (recorded {model['recorded']})",
        f"prompt    sha256 {record['prompt_sha256'][:16]}, recorded "
        f"{record['recorded_prompt_sha256'][:16]}: "
        + ("same" if record["prompt_matches"] else "DIFFERENT")
        + f" ({record['prompt_note']})",
        "",
        "--- prompt",
        *_block(record["prompt"]),
    ]
    failure = record.get("call_failure")
    if failure is not None:
        lines += ["", f"--- the model call failed ({failure['error_type']}): {failure['message']}"]
        return _escaped(lines)
    answer, confidence = record["answer"], record["confidence"]
    lines += [
        "",
        f"--- raw answer ({answer['provider']}:{answer['model']})",
        *_block(answer["raw_response"]),
        "",
        "--- verdict",
        f"recorded    {record['recorded_verdict']['summary']}",
        f"now         {record['verdict']['summary']}",
        f"confidence  {_number(confidence['recorded'])} -> {_number(confidence['now'])}",
        f"rules       {record['rules']}",
        "",
        "--- diff of the outputs (recorded -> now)",
        *(_block(record["diff"].rstrip("\n")) if record["diff"] else ["(no difference)"]),
    ]
    return _escaped(lines)


def _block(text: str) -> list[str]:
    """A multi-line text as its lines (each escaped later, as every line is)."""
    return text.split("\n")


def _escaped(lines: list[str]) -> str:
    """The lines joined, each escaped: no control character reaches the terminal."""
    return "\n".join(escape(line) for line in lines)


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}"
