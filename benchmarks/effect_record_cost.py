"""What does the side-effect record cost per effect, with SQLite and with PostgreSQL?

Usage: ``.venv/bin/python benchmarks/effect_record_cost.py [--effects N] [--concurrency C]``

For each backend (``SqliteEffectRecord`` on a file in a temporary directory and
``PostgresEffectRecord`` on ``--postgres-url``), it times ``perform_once`` with an instant
``act`` (it returns a provider id and a small result at once, like a provider that
deduplicates on the key) against calling that ``act`` directly (the bare baseline: what a
tool without the record does):

* **first**: N distinct, new keys, one after another: lock, intent row, act, performed row;
* **replay**: the same N keys again: lock and read of the recorded result, no act;
* the same two with C concurrent callers (default 8) sharing the N keys out, as C activities
  of one worker would.

The request is a ``send_email``-sized JSON object. The scenarios run in blocks that
alternate the backends (A B B A ...); each figure is the median over the blocks (mean per
block) or, for p50/p99, over every call. PostgreSQL keys are unique to the run and its rows
are deleted at the end; the SQLite file is removed. The report goes to stdout and to
``benchmarks/results/effect_record_cost.md``.
"""

# ruff: noqa: E402  (imports follow the sys.path set-up below)
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Runnable from a checkout without installing Keel.
sys.path[:0] = [str(HERE.parent), str(HERE)]

import psycopg
from measure import percentile, process_cpu, run_and_exit

from keel.activities.effects import (
    EFFECTS_TABLE,
    EffectRecord,
    PostgresEffectRecord,
    SqliteEffectRecord,
)

RESULTS = HERE / "results" / "effect_record_cost.md"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
TOOL = "send_email"
REQUEST: dict[str, Any] = {
    "to": "tom.okafor@example.com",
    "subject": "Re: your order AB-104871",
    "body": (
        "Hello,\n\nYour order AB-104871 is currently in_transit. You will get an email with "
        "tracking details as soon as it moves.\n\nKind regards,\nCustomer Support"
    ),
    "in_reply_to": "<x9-status-104871@mail.example.com>",
}
SCENARIOS = ("first", "replay")


class InstantProvider:
    """The act: returns at once and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def act(self, key: str) -> tuple[str, dict[str, Any]]:
        self.calls += 1
        return f"<{key}@provider.example>", {"accepted": True, "smtp_response": "250 OK"}


@dataclass
class Figures:
    """One scenario of one backend: the record's calls and the direct calls."""

    record_blocks: list[float] = field(default_factory=list)
    """Mean ms per effect of each block (sequential) or wall / N (concurrent)."""
    direct_blocks: list[float] = field(default_factory=list)
    record_latencies: list[float] = field(default_factory=list)
    direct_latencies: list[float] = field(default_factory=list)
    cpu_blocks: list[float] = field(default_factory=list)
    """CPU ms of this process per effect through the record, each block."""


@dataclass
class Backend:
    label: str
    record: EffectRecord
    provider: InstantProvider = field(default_factory=InstantProvider)
    """The act behind the record (its calls are counted)."""
    bare: InstantProvider = field(default_factory=InstantProvider)
    """The same act, called directly."""
    figures: dict[tuple[str, bool], Figures] = field(default_factory=dict)
    """By (scenario, concurrent)."""
    acted: int = 0
    """Effects the record should have acted on (first calls)."""

    def of(self, scenario: str, concurrent: bool) -> Figures:
        return self.figures.setdefault((scenario, concurrent), Figures())


async def timed(call: Callable[[], Awaitable[Any]], latencies: list[float]) -> Any:
    started = time.perf_counter()
    result = await call()
    latencies.append((time.perf_counter() - started) * 1000)
    return result


async def callers(
    keys: list[str], concurrency: int, call: Callable[[str], Awaitable[None]]
) -> float:
    """``call`` for every key by ``concurrency`` callers (each takes its share in turn);
    the wall time in ms."""

    async def caller(share: list[str]) -> None:
        for key in share:
            await call(key)

    started = time.perf_counter()
    await asyncio.gather(*(caller(keys[i::concurrency]) for i in range(concurrency)))
    return (time.perf_counter() - started) * 1000


async def run_block(backend: Backend, keys: list[str], concurrency: int, concurrent: bool) -> None:
    """Direct calls, then first and replay through the record, for ``keys``."""
    record, provider = backend.record, backend.provider
    n = len(keys)
    for scenario in SCENARIOS:
        figures = backend.of(scenario, concurrent)
        direct: list[float] = []
        recorded: list[float] = []

        async def through_direct(key: str, lat: list[float] = direct) -> None:
            await timed(lambda: backend.bare.act(key), lat)

        async def through_record(key: str, lat: list[float] = recorded, s: str = scenario) -> None:
            receipt, _ = await timed(
                lambda: record.perform_once(key, TOOL, REQUEST, provider.act), lat
            )
            if receipt.replayed != (s == "replay"):
                raise RuntimeError(f"{backend.label}: {s} of {key} gave {receipt}")

        gc.collect()
        wall_direct = await callers(keys, concurrency if concurrent else 1, through_direct)
        cpu = process_cpu()
        wall_record = await callers(keys, concurrency if concurrent else 1, through_record)
        figures.cpu_blocks.append((process_cpu() - cpu) * 1000 / n)
        if concurrent:
            figures.direct_blocks.append(wall_direct / n)
            figures.record_blocks.append(wall_record / n)
        else:
            figures.direct_blocks.append(statistics.fmean(direct))
            figures.record_blocks.append(statistics.fmean(recorded))
        figures.direct_latencies += direct
        figures.record_latencies += recorded
    backend.acted += n


async def session_block(backend: Backend, n: int) -> None:
    """Open and close ``n`` sessions of the store, no query: the connection cost alone."""
    store = backend.record.store
    latencies: list[float] = []

    async def session() -> None:
        async with store.session():
            pass

    gc.collect()
    for _ in range(n):
        await timed(session, latencies)
    figures = backend.of("session", False)
    figures.record_blocks.append(statistics.fmean(latencies))
    figures.record_latencies += latencies


def alternate(backends: list[Backend], blocks: int) -> list[Backend]:
    """A B B A ...: each backend goes first in half of the blocks."""
    order: list[Backend] = []
    for block in range(blocks):
        order += backends if block % 2 == 0 else backends[::-1]
    return order


async def measure(backends: list[Backend], run: str, args: argparse.Namespace) -> None:
    per_block = max(1, args.effects // args.blocks)
    for backend in backends:  # warm-up: the schema, connections, code paths
        keys = [f"{run}/warmup/{i}" for i in range(args.warmup)]
        if keys:
            await run_block(backend, keys, args.concurrency, concurrent=False)
        backend.figures.clear()
    for concurrent in (False, True):
        for block, backend in enumerate(alternate(backends, args.blocks)):
            mode = "conc" if concurrent else "seq"
            keys = [f"{run}/{mode}/{block}/{i}" for i in range(per_block)]
            await run_block(backend, keys, args.concurrency, concurrent)
            if not concurrent:
                await session_block(backend, per_block)
    for backend in backends:
        if backend.provider.calls != backend.acted:
            raise RuntimeError(
                f"{backend.label}: acted {backend.provider.calls} times for {backend.acted} "
                "first calls"
            )


def table(backends: list[Backend], args: argparse.Namespace) -> str:
    med = statistics.median
    per_block = max(1, args.effects // args.blocks)
    total = per_block * args.blocks
    lines = [
        "| backend | scenario | direct act (ms/effect) | perform_once (ms/effect) "
        "| record overhead (ms/effect) | perform_once p50 (ms) | perform_once p99 (ms) "
        "| CPU of this process (ms/effect) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrent in (False, True):
        for backend in backends:
            for scenario in SCENARIOS:
                f = backend.of(scenario, concurrent)
                how = (
                    f"{scenario}, {args.concurrency} concurrent callers (wall / N)"
                    if concurrent
                    else f"{scenario}, sequential (mean)"
                )
                direct, recorded = med(f.direct_blocks), med(f.record_blocks)
                lines.append(
                    f"| {backend.label} | {how} | {direct:.4f} | {recorded:.3f} "
                    f"| {recorded - direct:.3f} | {percentile(f.record_latencies, 50):.3f} "
                    f"| {percentile(f.record_latencies, 99):.3f} | {med(f.cpu_blocks):.3f} |"
                )
    lines += [
        "",
        "| backend | open + close one store session, no query (ms, mean) | p50 (ms) "
        "| share of a sequential first / replay |",
        "|---|---:|---:|---:|",
    ]
    for backend in backends:
        f = backend.of("session", False)
        cost = med(f.record_blocks)
        first = med(backend.of("first", False).record_blocks)
        replay = med(backend.of("replay", False).record_blocks)
        lines.append(
            f"| {backend.label} | {cost:.3f} | {percentile(f.record_latencies, 50):.3f} "
            f"| {cost / first:.0%} / {cost / replay:.0%} |"
        )
    lines += [
        "",
        f"Each row: {total} keys in {args.blocks} blocks of {per_block}, median of the blocks; "
        "p50/p99 over all calls (with concurrent callers, the latency of one call, waits "
        "included).",
    ]
    return "\n".join(lines)


def blocks_detail(backends: list[Backend]) -> str:
    def fmt(values: list[float]) -> str:
        return ", ".join(f"{v:.3f}" for v in values)

    lines = ["Per-block values of perform_once (ms/effect, in run order):", ""]
    for concurrent in (False, True):
        for backend in backends:
            for scenario in SCENARIOS:
                mode = "concurrent" if concurrent else "sequential"
                values = fmt(backend.of(scenario, concurrent).record_blocks)
                lines.append(f"- {backend.label}, {scenario}, {mode}: {values}")
    return "\n".join(lines)


NOTE = (
    "direct act = `await act(key)`, the instant provider call alone (what a tool without the "
    "record does). perform_once = `EffectRecord.perform_once(key, tool, request, act)`: "
    "the key's lock held for the whole call (SQLite: `flock` on one of 256 lock files; "
    "PostgreSQL: a session advisory lock), then in a transaction the lookup of the key and, "
    "for a first call, the intent row; the act; and for a first call a second transaction "
    "marking the row performed. A replay takes the lock and reads the recorded result, "
    "without acting. Every call opens its own connection (the store keeps no pool), and "
    "every commit is durable (SQLite in WAL mode with its default `synchronous=FULL`, "
    "PostgreSQL with `synchronous_commit` as configured)."
)


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def report(
    backends: list[Backend],
    skipped: str | None,
    args: argparse.Namespace,
    seconds: float,
    start_load: str,
) -> str:
    machine = (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"SQLite {sqlite_version()}, psycopg {version('psycopg')}"
    )
    arguments = (
        f"--effects {args.effects} --concurrency {args.concurrency} --blocks {args.blocks} "
        f"--warmup {args.warmup}"
    )
    lines = [
        "# Side-effect record cost: perform_once vs calling the act directly",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine}",
        f"- arguments: `{arguments}`",
        f"- run time: {seconds:.0f} s",
        f"- load average (1/5/15 min) at start: {start_load}, at end: {load()}",
    ]
    if skipped:
        lines.append(f"- PostgreSQL skipped: {skipped}")
    lines += ["", table(backends, args), "", NOTE, "", blocks_detail(backends), ""]
    return "\n".join(lines)


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


async def postgres_server(url: str) -> str:
    """The server's version and commit settings (raises if it cannot be reached)."""
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:
        cursor = await conn.execute(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit')"
        )
        row = await cursor.fetchone()
    assert row is not None
    return f"PostgreSQL {row[0]}, synchronous_commit={row[1]}"


async def delete_rows(url: str, run: str) -> int:
    """Delete this run's rows (their keys all start with ``run``)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            f"DELETE FROM {EFFECTS_TABLE} WHERE idempotency_key LIKE %s", (f"{run}/%",)
        )
        return cursor.rowcount


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    start_load = load()
    run = f"bench-effects/{uuid.uuid4().hex}"
    directory = Path(tempfile.mkdtemp(prefix="keel-bench-effects-"))
    backends = [Backend("SQLite", SqliteEffectRecord(directory / "effects.sqlite3"))]
    skipped: str | None = None
    if args.postgres_url:
        try:
            server = await postgres_server(args.postgres_url)
            backends.append(Backend("PostgreSQL", PostgresEffectRecord(args.postgres_url)))
        except psycopg.Error as err:
            skipped = f"cannot connect ({type(err).__name__}: {str(err).strip()[:200]})"
    else:
        skipped = "--postgres-url is empty"
    try:
        await measure(backends, run, args)
    finally:
        for backend in backends:
            await backend.record.aclose()
        if any(b.label == "PostgreSQL" for b in backends):
            deleted = await delete_rows(args.postgres_url, run)
            print(f"(deleted {deleted} PostgreSQL rows of this run)")
        shutil.rmtree(directory, ignore_errors=True)
    text = report(backends, skipped, args, time.perf_counter() - started, start_load)
    if not skipped:
        text = text.replace("- arguments:", f"- PostgreSQL: {server}\n- arguments:", 1)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"(written to {RESULTS})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--effects", type=int, default=500, help="distinct keys per scenario")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent callers")
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks per backend")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up keys per backend")
    url = os.environ.get("KEEL_DATABASE_URL") or ""
    parser.add_argument(
        "--postgres-url",
        default=url if url.startswith(("postgresql://", "postgres://")) else DEFAULT_POSTGRES,
        help="PostgreSQL for the second backend (default: KEEL_DATABASE_URL if it is one, "
        f"else {DEFAULT_POSTGRES}); empty skips PostgreSQL",
    )
    args = parser.parse_args(argv)
    if min(args.effects, args.concurrency, args.blocks) < 1 or args.warmup < 0:
        parser.error("counts must be positive")
    return args


if __name__ == "__main__":
    run_and_exit(lambda: asyncio.run(main(parse_args())))
