"""``keel trust [--contract C]``: how far reviewers trust each agent node, from the record.

Per contract and node, the decisions by confidence bucket and what became of them
(``keel.contracts.outcomes``): approved unchanged, modified, rejected, accepted by a rule,
accepted with no review, expired, overridden by a default, failed validation, pending. From
those, recommendations with their evidence count and the rule that made them:

- **a gate could become a rule**: at and above a bucket's lower bound, at least
  ``RULE_RATE`` of the reviewed answers were approved unchanged, with at least
  ``--min-evidence`` reviews (the lowest such bound is named);
- **keep the gate**: reviewers changed or rejected too many of the answers at the top
  (no minimum of evidence: keeping the gate changes nothing);
- **raise the confidence threshold**: in a bucket, at least ``RAISE_RATE`` of the reviewed
  answers were modified or rejected, with the evidence: the threshold should move to the
  bucket's upper bound (when that is above the contract's threshold);
- **lower the confidence threshold**: of the answers the threshold turned back whose
  accepted retry a person reviewed, at least ``LOWER_RATE`` came back the same answer (but
  for the confidence) and were approved unchanged;
- **not enough evidence** wherever a rule would apply but fewer reviews than
  ``--min-evidence`` back it.

Only a person's verdict is evidence: answers accepted by a rule or by validation alone say
nothing about whether a person would have agreed.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from temporalio.service import RPCError, RPCStatusCode

from keel.cli.connection import connected_settings, open_client
from keel.cli.dataset import (
    add_source_options,
    selected_ledgers,
    source_of,
    verified_decisions,
)
from keel.cli.ledgers import load_event_types
from keel.cli.output import FAILURE, OK, USAGE, CliError, wants_json
from keel.cli.render import escape
from keel.contracts.outcomes import OUTCOME_KINDS, REVIEWED_KINDS, DecisionOutcome, OutcomeKind
from keel.contracts.registry import REGISTRY
from keel.errors import KeelUserError
from keel.settings import KeelSettings

BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<0.5", 0.0, 0.5),
    ("0.5-0.7", 0.5, 0.7),
    ("0.7-0.8", 0.7, 0.8),
    ("0.8-0.9", 0.8, 0.9),
    (">=0.9", 0.9, 1.0),
)
"""Confidence buckets: label, lower bound (inclusive), upper bound (exclusive; the last
one includes 1.0)."""
UNKNOWN = "unknown"
"""The bucket of decisions that recorded no confidence (an answer that did not parse)."""
MIN_EVIDENCE = 20
"""Reviews needed before a recommendation is made."""
RULE_RATE = 0.98
"""Share of reviewed answers approved unchanged for a gate to become a rule."""
RAISE_RATE = 0.3
"""Share of reviewed answers modified or rejected in a bucket that moves the threshold."""
LOWER_RATE = 0.9
"""Share of answers the threshold turned back that came back the same and were approved
unchanged, for the threshold to be too strict."""

Recommendation = Literal[
    "gate-to-rule", "keep-gate", "raise-threshold", "lower-threshold", "not-enough-evidence"
]


def add_trust_parser(
    command: Callable[[str, str], argparse.ArgumentParser],
    app_option: Callable[..., None],
) -> None:
    """Register ``keel trust`` through ``command`` (main's subcommand factory)."""
    p = command(
        "trust", "how often reviewers approved, modified or rejected each agent node's answers"
    )
    app_option(p, help="an app whose contracts to read thresholds from (default: KEEL_APPS)")
    p.add_argument("--contract", metavar="NAME[@VERSION]", help="only this contract")
    p.add_argument(
        "--by",
        choices=("node", "contract"),
        default="node",
        help="one row per contract and node (default), or per contract (nodes named per "
        "record, like the ingestion's, add up)",
    )
    p.add_argument(
        "--min-evidence",
        type=int,
        default=MIN_EVIDENCE,
        metavar="N",
        help=f"reviews needed before recommending anything (default: {MIN_EVIDENCE})",
    )
    p.add_argument(
        "--query",
        help="visibility query selecting Temporal's executions (then the archive adds none "
        "unless --source archive)",
    )
    add_source_options(p)


def bucket_of(confidence: float | None) -> str:
    """The confidence bucket's label."""
    if confidence is None:
        return UNKNOWN
    for label, low, high in BUCKETS:
        if low <= confidence < high:
            return label
    return BUCKETS[-1][0] if confidence >= 1.0 else BUCKETS[0][0]


@dataclass
class Advice:
    """One recommendation, with the evidence behind it."""

    kind: Recommendation
    text: str
    evidence: int
    """How many reviewed decisions it rests on."""
    bucket: str | None = None
    threshold: float | None = None
    """The confidence bound it names (the rule's, or where the threshold should move)."""

    def record(self) -> dict[str, Any]:
        """As ``-o json`` prints it."""
        return {
            "kind": self.kind,
            "text": self.text,
            "evidence": self.evidence,
            "bucket": self.bucket,
            "threshold": self.threshold,
        }


@dataclass
class TrustRow:
    """The decisions of one contract (and node), by bucket and outcome."""

    contract: str
    node: str | None
    counts: dict[str, Counter[OutcomeKind]] = field(default_factory=dict)
    threshold: float | None = None
    """The contract's confidence threshold, when its app is loaded."""
    rechecked: int = 0
    """Answers the confidence threshold turned back whose accepted retry a person reviewed."""
    confirmed: list[float] = field(default_factory=list)
    """The confidences of those whose retry was the same answer, approved unchanged."""

    def add(self, outcome: DecisionOutcome) -> None:
        """Count one decision."""
        self.counts.setdefault(bucket_of(outcome.confidence), Counter())[outcome.kind] += 1

    def recheck(self, outcome: DecisionOutcome, confirmed: bool) -> None:
        """Count an answer the threshold turned back, and whether a person confirmed it."""
        self.rechecked += 1
        if confirmed and outcome.confidence is not None:
            self.confirmed.append(outcome.confidence)

    def at(self, label: str) -> Counter[OutcomeKind]:
        """The counts of one bucket."""
        return self.counts.get(label, Counter())

    @property
    def reviewed(self) -> int:
        """How many decisions a person approved, modified or rejected."""
        return sum(c[k] for c in self.counts.values() for k in REVIEWED_KINDS)

    def record(self, advice: list[Advice]) -> dict[str, Any]:
        """As ``-o json`` prints it."""
        labels = [label for label, _, _ in BUCKETS] + [UNKNOWN]
        return {
            "contract": self.contract,
            "node": self.node,
            "threshold": self.threshold,
            "reviewed": self.reviewed,
            "threshold_rechecked": self.rechecked,
            "threshold_confirmed": len(self.confirmed),
            "buckets": {
                label: {kind: self.at(label)[kind] for kind in OUTCOME_KINDS}
                for label in labels
                if label in self.counts
            },
            "recommendations": [a.record() for a in advice],
        }


def _reviewed(counts: Counter[OutcomeKind]) -> int:
    return sum(counts[k] for k in REVIEWED_KINDS)


def _pct(part: int, whole: int) -> str:
    return f"{round(100 * part / whole)}%" if whole else "0%"


def recommend(row: TrustRow, min_evidence: int = MIN_EVIDENCE) -> list[Advice]:
    """What the evidence of ``row`` supports (see the module's docstring for the rules)."""
    advice = _gate_to_rule(row, min_evidence) + _raise_threshold(row, min_evidence)
    advice += _lower_threshold(row, min_evidence)
    if not advice and row.reviewed < min_evidence:
        advice.append(
            Advice(
                "not-enough-evidence",
                f"not enough evidence: {row.reviewed} reviewed decisions (needs {min_evidence})",
                row.reviewed,
            )
        )
    return advice


def _gate_to_rule(row: TrustRow, min_evidence: int) -> list[Advice]:
    """The lowest bound at and above which reviewers (nearly) always approved unchanged,
    counting down from the top bucket while the rate holds."""
    found: Advice | None = None
    approved = reviewed = 0
    lowest = ""
    for label, low, _high in reversed(BUCKETS):
        counts = row.at(label)
        if _reviewed(counts) == 0:
            continue
        approved, reviewed = approved + counts["approved"], reviewed + _reviewed(counts)
        lowest = label if label == BUCKETS[-1][0] else f">={low}"
        if approved / reviewed < RULE_RATE:
            if found is not None:
                break
            # Keeping the gate changes nothing, so it needs no minimum of evidence.
            changed = reviewed - approved
            text = (
                f"at confidence {lowest}, reviewers changed {changed}/{reviewed} "
                f"({_pct(changed, reviewed)}): keep the gate (n={reviewed})"
            )
            return [Advice("keep-gate", text, reviewed, label, low)]
        if reviewed >= min_evidence:
            found = Advice(
                "gate-to-rule",
                f"at confidence {lowest}, {approved}/{reviewed} approved unchanged: a gate "
                f"could become a rule above {low} (n={reviewed})",
                reviewed,
                label,
                low,
            )
    if found is None and reviewed:
        text = (
            f"at confidence {lowest}, {approved}/{reviewed} approved unchanged: not enough "
            f"evidence to turn the gate into a rule (n={reviewed}, needs {min_evidence})"
        )
        return [Advice("not-enough-evidence", text, reviewed)]
    return [found] if found else []


def _raise_threshold(row: TrustRow, min_evidence: int) -> list[Advice]:
    """The highest bucket (below the top) with the evidence where reviewers changed too many
    answers; else the highest such bucket without it, as not enough evidence."""
    short: Advice | None = None
    for label, _low, high in reversed(BUCKETS[:-1]):
        counts = row.at(label)
        reviewed = _reviewed(counts)
        changed = counts["modified"] + counts["rejected"]
        if reviewed == 0 or changed / reviewed < RAISE_RATE:
            continue
        if row.threshold is not None and high <= row.threshold:
            continue
        what = (
            f"in bucket {label}, {changed}/{reviewed} modified or rejected "
            f"({_pct(changed, reviewed)})"
        )
        if reviewed >= min_evidence:
            text = f"{what}: raise the confidence threshold to {high} (n={reviewed})"
            return [Advice("raise-threshold", text, reviewed, label, high)]
        if short is None:
            text = (
                f"{what}: not enough evidence to move the threshold (n={reviewed}, needs "
                f"{min_evidence})"
            )
            short = Advice("not-enough-evidence", text, reviewed, label, high)
    return [short] if short else []


def _lower_threshold(row: TrustRow, min_evidence: int) -> list[Advice]:
    """Whether the threshold turned back answers that people then approved as they were."""
    n, same = row.rechecked, len(row.confirmed)
    if n == 0 or same / n < LOWER_RATE:
        return []
    what = (
        f"{same}/{n} answers the confidence threshold turned back came back the same but for "
        "their confidence and were approved unchanged"
    )
    if n < min_evidence:
        text = f"{what}: not enough evidence to lower the threshold (n={n}, needs {min_evidence})"
        return [Advice("not-enough-evidence", text, n)]
    lowest = min(low for label, low, _ in BUCKETS if label == bucket_of(min(row.confirmed)))
    text = (
        f"{what}: the threshold is stricter than the reviewers; lower it towards {lowest} (n={n})"
    )
    return [Advice("lower-threshold", text, n, bucket_of(min(row.confirmed)), lowest)]


def confidence_rechecks(outcomes: list[DecisionOutcome]) -> list[tuple[DecisionOutcome, bool]]:
    """The answers of one execution that the confidence threshold turned back and whose
    accepted retry a person reviewed, each with whether the retry was the same answer (but
    for its confidence) and was approved unchanged."""
    by_seq = {outcome.seq: outcome for outcome in outcomes}
    found = []
    for outcome in outcomes:
        later = by_seq.get(outcome.superseded_by or -1)
        if outcome.validation != "confidence" or later is None or not later.reviewed:
            continue
        same = _sans_confidence(outcome.output) == _sans_confidence(later.output)
        found.append((outcome, same and later.kind == "approved"))
    return found


def _sans_confidence(output: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: v for k, v in output.items() if k != "confidence"} if output else None


def _contract_matches(wanted: str | None, contract: str) -> bool:
    if not wanted:
        return True
    return contract == wanted or contract.partition("@")[0] == wanted


def _threshold(contract: str) -> float | None:
    try:
        return float(REGISTRY.get(contract).confidence_threshold)
    except KeelUserError:
        return None


def build_rows(
    executions: Iterable[list[DecisionOutcome]], *, contract: str | None = None, by: str = "node"
) -> list[TrustRow]:
    """The report's rows from each execution's outcomes, in contract then node order."""
    rows: dict[tuple[str, str | None], TrustRow] = {}

    def row_of(outcome: DecisionOutcome) -> TrustRow:
        key = (outcome.contract, outcome.node if by == "node" else None)
        if key not in rows:
            rows[key] = TrustRow(key[0], key[1], threshold=_threshold(key[0]))
        return rows[key]

    for outcomes in executions:
        chosen = [o for o in outcomes if _contract_matches(contract, o.contract)]
        for outcome in chosen:
            row_of(outcome).add(outcome)
        for outcome, confirmed in confidence_rechecks(chosen):
            row_of(outcome).recheck(outcome, confirmed)
    return [rows[key] for key in sorted(rows, key=lambda k: (k[0], k[1] or ""))]


COLUMNS: tuple[tuple[OutcomeKind, str], ...] = (
    ("approved", "approved"),
    ("modified", "modified"),
    ("rejected", "rejected"),
    ("accepted_by_rule", "by rule"),
    ("accepted", "accepted"),
    ("expired", "expired"),
    ("default_applied", "default"),
    ("failed_validation", "failed"),
    ("pending", "pending"),
)


def row_text(row: TrustRow, advice: list[Advice]) -> list[str]:
    """A row as the text report prints it."""
    title = escape(row.contract) + (f" / {escape(row.node)}" if row.node else "")
    if row.threshold is not None:
        title += f" (threshold {row.threshold:.2f})"
    widths = [max(len(name), 4) for _, name in COLUMNS]
    lines = [
        title,
        "  "
        + "confidence".ljust(11)
        + " ".join(n.rjust(w) for (_, n), w in zip(COLUMNS, widths, strict=True)),
    ]
    for label in [label for label, _, _ in BUCKETS] + [UNKNOWN]:
        if label not in row.counts:
            continue
        counts = row.at(label)
        cells = " ".join(str(counts[k]).rjust(w) for (k, _), w in zip(COLUMNS, widths, strict=True))
        lines.append("  " + label.ljust(11) + cells)
    lines += [f"  - {a.text}" for a in advice]
    return lines


async def cmd_trust(settings: KeelSettings, args: Any) -> int:
    """Print the trust report (or ``-o json``); reads Temporal only when ``--source`` says."""
    if args.min_evidence < 1:
        raise CliError("--min-evidence must be at least 1", USAGE)
    load_event_types(args)  # the contracts' thresholds
    client = None
    source = source_of(args)
    if source != "archive":
        client = await open_client(settings, args)
        settings = connected_settings(settings, client)
    skipped: Counter[str] = Counter()
    outcomes: list[list[DecisionOutcome]] = []
    executions = 0
    selection = selected_ledgers(
        client, settings, source=source, query=args.query, workflow_type=args.workflow_type
    )
    try:
        async for execution in verified_decisions(selection, settings, skipped):
            executions += 1
            outcomes.append(execution.outcomes)
    except RPCError as exc:  # a visibility query Temporal refused, a server that went away
        code = USAGE if exc.status is RPCStatusCode.INVALID_ARGUMENT else FAILURE
        raise CliError(f"Temporal: {escape(exc.message)}", code) from exc
    rows = build_rows(outcomes, contract=args.contract, by=args.by)
    advice = [recommend(row, args.min_evidence) for row in rows]
    if wants_json(args):
        record = {
            "executions": executions,
            "decisions": sum(sum(sum(c.values()) for c in r.counts.values()) for r in rows),
            "min_evidence": args.min_evidence,
            "skipped": dict(sorted(skipped.items())),
            "rows": [row.record(a) for row, a in zip(rows, advice, strict=True)],
        }
        print(json.dumps(record))
        return OK
    lines = [f"trust report: {executions} executions, min evidence {args.min_evidence}"]
    if not rows:
        lines.append(
            "no agent decisions"
            + (f" of contract {escape(args.contract)}" if args.contract else "")
        )
    for row, row_advice in zip(rows, advice, strict=True):
        lines += ["", *row_text(row, row_advice)]
    lines += [f"skipped {n}: {reason}" for reason, n in sorted(skipped.items())]
    print("\n".join(lines))
    return OK
