"""How well, and how fast, do the guardrails judge a model call?

Usage: ``.venv/bin/python benchmarks/guardrail_eval.py [--repeat N]``

On the evaluation sets in ``tests/guardrail_evals`` (attacks, benign look-alikes, PII
positives and negatives) it reports:

* the prompt-injection check's **detection rate** per attack category (and on the
  documented misses, which it does not catch) and its
  **false-positive rate** per benign category (a sample counts once, however many patterns
  it matched);
* the PII scrubber's **recall** (expected values found) and **precision** (values found
  that were expected) per kind, negatives included;
* the **cost per call** of ``apply_guardrails`` (the whole chain a contract runs in workflow
  code before every model call: injection check on the untrusted fields, PII scrubbing,
  token budget) on realistic payloads: the median and p99 over ``--repeat`` calls, in
  microseconds of one core.

No server, no network. The report goes to stdout and to
``benchmarks/results/guardrail_eval.md``.
"""

# ruff: noqa: E402  (imports follow the sys.path set-up below)
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Runnable from a checkout without installing Keel.
sys.path[:0] = [str(HERE.parent), str(HERE)]

from measure import run_and_exit

from keel.contracts.guardrails import (
    GuardrailConfig,
    GuardrailState,
    PromptInjectionCheck,
    apply_guardrails,
    scrub_text,
)
from keel.contracts.guardrails._injection import _cached_hits
from keel.contracts.guardrails._pii import _phone_e164
from tests.guardrail_evals import (
    ATTACKS,
    BENIGN,
    KNOWN_MISSES,
    PII_NEGATIVE,
    PII_POSITIVE,
    Sample,
)

RESULTS = HERE / "results" / "guardrail_eval.md"
SAMPLES = HERE.parent / "keel" / "scenarios"
STATE = GuardrailState()


def judged(sample: Sample) -> bool:
    """Whether the injection check denies the sample (its fields are the untrusted ones)."""
    return PromptInjectionCheck(list(sample.fields))(sample.fields, STATE).action == "deny"


def rates(samples: list[Sample], flagged_is_good: bool) -> list[tuple[str, int, int]]:
    by: dict[str, list[bool]] = defaultdict(list)
    for sample in samples:
        by[sample.category].append(judged(sample))
    rows = [(cat, sum(v), len(v)) for cat, v in sorted(by.items())]
    rows.append(("all", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    return rows


def pii_scores() -> list[tuple[str, int, int, int]]:
    """Per kind: expected, found-and-expected, found."""
    expected: dict[str, int] = defaultdict(int)
    hit: dict[str, int] = defaultdict(int)
    found_n: dict[str, int] = defaultdict(int)
    for sample in PII_POSITIVE + PII_NEGATIVE:
        _, found = scrub_text(sample.text)
        wanted = list(sample.values)
        for kind, _value in wanted:
            expected[kind] += 1
        for item in found:
            found_n[item[0]] += 1
            if item in wanted:
                hit[item[0]] += 1
                wanted.remove(item)
    kinds = sorted(set(expected) | set(found_n))
    rows = [(k, expected[k], hit[k], found_n[k]) for k in kinds]
    rows.append(("all", sum(expected.values()), sum(hit.values()), sum(found_n.values())))
    return rows


def payloads() -> dict[str, tuple[dict[str, Any], GuardrailConfig]]:
    """Realistic inputs, each with the guardrails its contract declares."""
    support = json.loads((SAMPLES / "support_email/samples/support-refund.json").read_text())
    contract = json.loads((SAMPLES / "contract_review/samples/contract-high-risk.json").read_text())
    page = json.loads((SAMPLES / "incident/samples/incident-page.json").read_text())
    findings = [
        {
            "round": 1,
            "ref": f"t{i}",
            "tool": "deploy_history",
            "output": {"summary": f"deploy 1.4{i}.0 by alex: fix checkout retries", "n": i},
        }
        for i in range(6)
    ]
    attack = next(s for s in ATTACKS if s.id == "issue-base64")
    return {
        "support email (triage: subject, body)": (
            {"subject": support["subject"], "body": support["body"]},
            GuardrailConfig(untrusted_fields=("subject", "body")),
        ),
        "vendor contract (risk classifier: 4 fields)": (
            {k: contract[k] for k in ("vendor", "title", "jurisdiction", "clauses")},
            GuardrailConfig(untrusted_fields=("vendor", "title", "jurisdiction", "clauses")),
        ),
        "incident round (planner: page + 6 findings)": (
            {"incident": page, "findings": findings},
            GuardrailConfig(token_budget=200_000, untrusted_fields=("incident", "findings")),
        ),
        "base64 attack (denied)": (
            attack.fields,
            GuardrailConfig(untrusted_fields=("subject", "body")),
        ),
        "4 KB customer email": (
            {"subject": "Refund", "body": (support["body"] + " ") * (4096 // len(support["body"]))},
            GuardrailConfig(untrusted_fields=("subject", "body")),
        ),
    }


def timing(repeat: int) -> list[tuple[str, int, float, float]]:
    rows = []
    for name, (payload, config) in payloads().items():
        size = len(json.dumps(payload))
        apply_guardrails(payload, config, STATE)  # warm caches (phonenumbers metadata)
        samples = []
        for _ in range(repeat):
            _cached_hits.cache_clear()  # every call as if its strings were new
            _phone_e164.cache_clear()
            started = time.process_time_ns()
            apply_guardrails(payload, config, STATE)
            samples.append((time.process_time_ns() - started) / 1000)
        samples.sort()
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        rows.append((name, size, statistics.median(samples), p99))
    return rows


def report(repeat: int) -> str:
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    lines = [
        "# Guardrail evaluation",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine}",
        f"- sets: {len(ATTACKS)} attacks, {len(BENIGN)} benign, {len(PII_POSITIVE)} PII "
        f"positives, {len(PII_NEGATIVE)} PII negatives (tests/guardrail_evals)",
        f"- timing: {repeat} calls per payload, CPU time of one process",
        "",
        "## Prompt injection: detection per attack category",
        "",
        "| category | detected | of | rate |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {c} | {d} | {n} | {d / n:.0%} |" for c, d, n in rates(ATTACKS, True)]
    missed = sum(judged(s) for s in KNOWN_MISSES)
    lines += [
        f"| documented misses (KNOWN_MISSES: new paraphrases, unlisted languages, hex, "
        f"base32) | {missed} | {len(KNOWN_MISSES)} | {missed / len(KNOWN_MISSES):.0%} |"
    ]
    lines += [
        "",
        "## Prompt injection: false positives per benign category",
        "",
        "| category | flagged | of | rate |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {c} | {d} | {n} | {d / n:.0%} |" for c, d, n in rates(BENIGN, False)]
    lines += [
        "",
        "## PII scrubber (positives and negatives together)",
        "",
        "| kind | expected | found (expected) | found (all) | recall | precision |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, expected, hit, found in pii_scores():
        recall = f"{hit / expected:.0%}" if expected else "-"
        precision = f"{hit / found:.0%}" if found else "-"
        lines.append(f"| {kind} | {expected} | {hit} | {found} | {recall} | {precision} |")
    lines += [
        "",
        "## Cost per call of `apply_guardrails` (workflow code, before every model call)",
        "",
        "| payload | JSON bytes | median µs | p99 µs |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {n} | {b:,} | {m:,.0f} | {p:,.0f} |" for n, b, m, p in timing(repeat)]
    lines += [
        "",
        "Rates are on our own sets, written alongside the patterns: they say which disguises",
        "the check handles, not how it fares against an adversary who writes a new paraphrase",
        "(the documented misses row, and the README's guardrails section).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    text = report(args.repeat)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"(written to {RESULTS})")


if __name__ == "__main__":
    run_and_exit(main)
