"""How does a Keel plan of N independent tasks scale, against N bare Temporal child workflows?

Usage: ``.venv/bin/python benchmarks/plan_fanout.py [--sizes 10,100,1000] [--repeats 3]``

On one local dev server and one worker (same settings, pydantic data converter, one task
queue), for each N it runs two parent workflows (see ``plan_bench_workflows.py``):

* ``BenchKeelPlan``: a ``KeelWorkflow`` that builds a plan of N independent ``bench_noop``
  tasks, validates it with ``validate_plan`` and runs it with ``PlanExecutor.run_plan`` under
  a policy allowing N tasks and a fan-out of N; each task is a real ``KeelToolTask`` child;
* ``BenchBareChildren``: ``asyncio.gather`` of N ``workflow.execute_child_workflow`` of
  ``BenchBareChild``, which runs the same instant activity once.

It measures the wall time from start to result of each parent, alternating the variants
(A B A B ...) and taking the median over the repeats, and reports ms per child, the ratio
Keel / bare and how ms per child grows with N; from each parent's history, its length and
size and its workflow tasks (wake-ups); the CPU of the worker process and of the dev server
per run; and the CPU of the parent's and children's workflow code, measured by wrapping
Keel's sandboxed runner. N=1000 takes about 40 to 60 s per parent on a 2-core machine; the
default run about 5 to 6 minutes.

After the dev server is shut down it also measures workflow code alone, outside Temporal:
``validate_plan``, the ready-scan of ``run_plan``'s scheduling loop, and the real
``PlanExecutor.run_plan`` with its children faked (``workflow`` calls patched), to show how
its cost per task grows with N. The report goes to stdout and to
``benchmarks/results/plan_fanout.md``.
"""

# ruff: noqa: E402  (imports follow the sys.path set-up below)
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import gc
import itertools
import os
import platform
import statistics
import sys
import time
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any
from unittest import mock

HERE = Path(__file__).resolve().parent
# Runnable from a checkout without installing Keel; the sandbox imports plan_bench_workflows.
sys.path[:0] = [str(HERE.parent), str(HERE)]

import plan_bench_workflows
from measure import process_cpu, run_and_exit, server_cpu, server_pid
from plan_bench_workflows import (
    BARE_CHILD_WORKFLOW,
    BARE_PARENT_WORKFLOW,
    BENCH_TOOL,
    KEEL_PLAN_WORKFLOW,
    BenchBareChild,
    BenchBareChildren,
    BenchKeelPlan,
    FanoutInput,
    FanoutResult,
    bench_plan,
    bench_policy,
)
from pydantic import BaseModel, Field
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    Worker,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)

from keel.contracts.plans import PlannedTask, PlannerOutput, validate_plan
from keel.contracts.signing import Keyring, SigningKey, WorkerKeys
from keel.contracts.tools import (
    CATALOG,
    TOOL_TASK_WORKFLOW,
    ToolCall,
    ToolResult,
    ToolSpec,
    tool_activity_name,
)
from keel.workers.devstack import DEV_SERVER_STARTUP
from keel.workers.runtime import engine_activities, workflow_runner
from keel.workflows.gates import GateBook
from keel.workflows.ledger import Ledger
from keel.workflows.plan_executor import PlanExecutor
from keel.workflows.tool_task import ToolTaskWorkflow

BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "plan_fanout.md"
BENCH_MODULE = plan_bench_workflows.__name__
MAX_PLAN_TASKS = 1_000
"""``PlannerOutput.tasks`` allows at most this many tasks."""


class BenchNoopInput(BaseModel):
    n: int = Field(ge=0)


class BenchNoopOutput(BaseModel):
    n: int


BENCH_NOOP = CATALOG.register(
    ToolSpec(
        name=BENCH_TOOL,
        description="Benchmark tool: no side effects, returns its input at once.",
        input_model=BenchNoopInput,
        output_model=BenchNoopOutput,
    )
)


@activity.defn(name=tool_activity_name(BENCH_TOOL))
async def bench_noop(call: ToolCall) -> ToolResult:
    """Returns at once; the activity of both variants' children."""
    args = BenchNoopInput.model_validate(call.input)
    return ToolResult(tool=call.tool, output=BenchNoopOutput(n=args.n).model_dump())


@dataclass
class Cpu:
    """CPU time (thread time) the worker spent on workflows of one type, or one workflow."""

    instances: int = 0
    create_ms: float = 0.0
    """Creating sandboxed instances (the sandbox re-imports modules not passed through)."""
    activations: int = 0
    activate_ms: float = 0.0
    max_activate_ms: float = 0.0


class _TimedInstance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance, cpus: list[Cpu]) -> None:
        self._inner = inner
        self._cpus = cpus

    def activate(self, act: Any) -> Any:
        started = time.thread_time()
        try:
            return self._inner.activate(act)
        finally:
            spent = (time.thread_time() - started) * 1000
            for cpu in self._cpus:
                cpu.activations += 1
                cpu.activate_ms += spent
                cpu.max_activate_ms = max(cpu.max_activate_ms, spent)

    def get_serialization_context(self, command_info: Any) -> Any:
        return self._inner.get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        return self._inner.get_external_store_context(command_info)

    def get_info(self) -> Any:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()


class TimingRunner(WorkflowRunner):
    """Keel's sandboxed runner (``workflow_runner``), plus CPU accounting per workflow type
    and per parent.

    ``time.thread_time`` counts only the CPU of the thread running the activation, not its
    waits for the GIL, so it is the workflow code's own cost (with the SDK's and sandbox's)."""

    def __init__(self, parents: set[str]) -> None:
        keel = workflow_runner()
        # The bench workflows' module is passed through too, as Keel passes ``keel`` through:
        # otherwise every bare child would pay a sandbox re-import of it that Keel's children
        # do not (about 4 ms of CPU each).
        self._inner = dataclasses.replace(
            keel, restrictions=keel.restrictions.with_passthrough_modules(BENCH_MODULE)
        )
        self._parents = parents
        self.by_type: dict[str, Cpu] = {}
        self.by_workflow_id: dict[str, Cpu] = {}
        self.server: int | None = None
        """The dev server's pid, for its CPU time."""

    def prepare_workflow(self, defn: Any) -> None:
        self._inner.prepare_workflow(defn)

    def set_worker_level_failure_exception_types(self, types: Any) -> None:
        self._inner.set_worker_level_failure_exception_types(types)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        cpus = [self.by_type.setdefault(det.info.workflow_type, Cpu())]
        if det.info.workflow_type in self._parents:
            cpus.append(self.by_workflow_id.setdefault(det.info.workflow_id, Cpu()))
        started = time.thread_time()
        instance = self._inner.create_instance(det)
        spent = (time.thread_time() - started) * 1000
        for cpu in cpus:
            cpu.instances += 1
            cpu.create_ms += spent
        return _TimedInstance(instance, cpus)


@dataclass
class Run:
    wall_ms: float
    events: int
    """Events in the parent's history."""
    history_bytes: int
    workflow_tasks: int
    """Completed workflow tasks of the parent: its wake-ups."""
    parent_cpu_ms: float
    """CPU of the parent's activations (and instance creation)."""
    parent_instances: int
    """Sandboxed instances created for the parent: more than 1 means it was replayed."""
    parent_max_activation_ms: float
    child_cpu_ms: float
    """Mean CPU per child: sandbox instance creation plus its activations."""
    child_create_ms: float
    """Mean CPU per child of creating its sandboxed instance."""
    child_events: int
    process_cpu_ms: float
    """CPU of this process (worker: workflows and activities; client) during the run."""
    server_cpu_ms: float
    """CPU of the dev server during the run (NaN when unknown)."""


@dataclass
class Variant:
    label: str
    workflow: str
    runs: dict[int, list[Run]] = field(default_factory=dict)

    def median(self, n: int, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs[n]))


def workflow_tasks(events: list[Any]) -> int:
    """Completed workflow tasks in a history."""
    return sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in events)


async def one(client: Client, queue: str, timing: TimingRunner, variant: Variant, n: int) -> Run:
    """Run one parent with ``n`` children to its result; then read its history."""
    workflow_id = f"bench-fanout-{variant.workflow}-{n}-{uuid.uuid4().hex[:8]}"
    child_type = (
        TOOL_TASK_WORKFLOW if variant.workflow == KEEL_PLAN_WORKFLOW else BARE_CHILD_WORKFLOW
    )
    children_before = dataclasses.replace(timing.by_type.get(child_type, Cpu()))
    gc.collect()
    cpu_before, server_before = process_cpu(), server_cpu(timing.server)
    started = time.perf_counter()
    result = await client.execute_workflow(
        variant.workflow,
        FanoutInput(tasks=n),
        id=workflow_id,
        task_queue=queue,
        result_type=FanoutResult,
    )
    wall = (time.perf_counter() - started) * 1000
    cpu, server = process_cpu() - cpu_before, server_cpu(timing.server) - server_before
    if result.children != n or result.outcome != "completed":
        raise RuntimeError(f"{variant.label} at N={n} returned {result}")
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    events = list(history.events)
    parent = timing.by_workflow_id.pop(workflow_id)
    children = timing.by_type[child_type]
    child_create = children.create_ms - children_before.create_ms
    child_activate = children.activate_ms - children_before.activate_ms
    child_id = (
        PlanExecutor.child_id(workflow_id, 1, "t-0000")
        if variant.workflow == KEEL_PLAN_WORKFLOW
        else f"{workflow_id}/c0"
    )
    child = await client.get_workflow_handle(child_id).fetch_history()
    return Run(
        wall_ms=wall,
        events=len(events),
        history_bytes=sum(e.ByteSize() for e in events),
        workflow_tasks=workflow_tasks(events),
        parent_cpu_ms=parent.create_ms + parent.activate_ms,
        parent_instances=parent.instances,
        parent_max_activation_ms=parent.max_activate_ms,
        child_cpu_ms=(child_create + child_activate) / n,
        child_create_ms=child_create / n,
        child_events=len(child.events),
        process_cpu_ms=cpu * 1000,
        server_cpu_ms=server * 1000,
    )


async def measure(
    client: Client, queue: str, timing: TimingRunner, args: argparse.Namespace
) -> tuple[Variant, Variant]:
    keel = Variant("Keel plan", KEEL_PLAN_WORKFLOW)
    bare = Variant("bare children", BARE_PARENT_WORKFLOW)
    for variant in (keel, bare):  # warm-up: sandbox, caches, connections
        await one(client, queue, timing, variant, min(args.sizes))
    for n in args.sizes:
        for variant in (keel, bare):
            variant.runs[n] = []
        for repeat in range(args.repeats):
            for variant in (keel, bare):  # A B A B ...
                run = await one(client, queue, timing, variant, n)
                variant.runs[n].append(run)
                print(
                    f"  N={n} #{repeat + 1} {variant.label}: {run.wall_ms:.0f} ms, "
                    f"{run.events} events, {run.workflow_tasks} workflow tasks",
                    file=sys.stderr,
                    flush=True,
                )
    return keel, bare


def time_call(fn: Any, *, budget_s: float = 0.5, min_reps: int = 3) -> float:
    """Median ms of ``fn()`` over repetitions within ``budget_s`` (at least ``min_reps``)."""
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < deadline and len(times) < 200):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def ready_scan(pending: dict[str, PlannedTask], results: dict[str, Any]) -> list[PlannedTask]:
    """``run_plan``'s ready-scan (keel/workflows/plan_executor.py), verbatim but for names."""
    return [t for t in pending.values() if set(t.depends_on) <= set(results)]


def two_level_plan(n: int) -> PlannerOutput:
    """``n // 2`` independent tasks, then ``n - n // 2`` tasks each depending on one of them."""
    first = n // 2
    tasks = [PlannedTask(ref=f"a-{i:04d}", tool=BENCH_TOOL, input={"n": i}) for i in range(first)]
    tasks += [
        PlannedTask(
            ref=f"b-{i:04d}", tool=BENCH_TOOL, input={"n": i}, depends_on=[f"a-{i % first:04d}"]
        )
        for i in range(n - first)
    ]
    return PlannerOutput(done=True, summary="two levels", tasks=tasks, confidence=1.0)


async def _drive_run_plan(plan: PlannerOutput, one_per_wakeup: bool) -> tuple[int, float]:
    """Run the real ``PlanExecutor.run_plan`` outside Temporal, with its children faked by
    futures that this driver resolves: one per wake-up of ``run_plan``, or all pending at
    once. Returns the wake-ups and the CPU (ms) of the whole run (single thread)."""
    children: list[asyncio.Future[ToolResult]] = []
    wakeups = 0
    real_wait = workflow.wait

    async def child(*_args: Any, **kwargs: Any) -> ToolResult:
        future: asyncio.Future[ToolResult] = asyncio.get_running_loop().create_future()
        children.append(future)
        return await future

    async def counted_wait(*args: Any, **kwargs: Any) -> Any:
        nonlocal wakeups
        wakeups += 1
        return await real_wait(*args, **kwargs)

    async def counted_wait_condition(condition: Callable[[], bool], **_kwargs: Any) -> None:
        # What the workflow event loop does: re-check the condition as the loop turns.
        nonlocal wakeups
        wakeups += 1
        while not condition():
            await asyncio.sleep(0)

    ledger = Ledger()
    policy = bench_policy(len(plan.tasks))
    executor = PlanExecutor(ledger, GateBook(ledger), CATALOG, policy)
    info = types.SimpleNamespace(workflow_id="bench-parent")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with (
        mock.patch.object(workflow, "info", lambda: info),
        mock.patch.object(workflow, "now", lambda: now),
        mock.patch.object(workflow, "execute_child_workflow", child),
        mock.patch.object(workflow, "wait", counted_wait),
        mock.patch.object(workflow, "wait_condition", counted_wait_condition),
        # No seals here: sealing a task is a local activity, measured in the end-to-end run.
        mock.patch.object(workflow, "patched", lambda _patch_id: False),
    ):
        started = time.thread_time()
        task = asyncio.create_task(executor.run_plan(1, plan))
        done = 0
        while not task.done():
            if done == len(children):  # let run_plan start more children, or finish
                await asyncio.sleep(0)
                continue
            before = wakeups
            batch = children[done : done + 1] if one_per_wakeup else children[done:]
            for future in batch:
                future.set_result(ToolResult(tool=BENCH_TOOL, output={"n": done}))
                done += 1
            while wakeups == before and not task.done():  # until run_plan waits again
                await asyncio.sleep(0)
        run = task.result()
        cpu = (time.thread_time() - started) * 1000
    if len(run.results) != len(plan.tasks):
        raise RuntimeError(f"run_plan finished {len(run.results)} of {len(plan.tasks)} tasks")
    return wakeups, cpu


async def micro_one(n: int) -> dict[str, float]:
    """Workflow-code costs at ``n`` measured alone, outside Temporal."""
    plan, policy = bench_plan(n), bench_policy(n)
    refs = [t.ref for t in plan.tasks]
    # Half the tasks done, the other half pending: the ready-scan on one wake-up during
    # the second level of a two-level plan.
    half = max(1, n // 2)
    waiting = {
        f"w-{i:04d}": PlannedTask(
            ref=f"w-{i:04d}", tool=BENCH_TOOL, input={"n": i}, depends_on=[refs[0]]
        )
        for i in range(n - half)
    }
    done = dict.fromkeys(refs[:half])
    costs = {
        "validate": time_call(lambda: validate_plan(plan, CATALOG, policy)),
        "dup_check": time_call(lambda: sorted({r for r in refs if refs.count(r) > 1})),
        "ready_scan": time_call(lambda: ready_scan(waiting, done)),
    }
    shapes = {"flat": plan, "levels": two_level_plan(n) if n >= 2 else plan}
    for shape, one_each in (("flat", True), ("flat", False), ("levels", True)):
        key = f"{shape}_{'each' if one_each else 'all'}"
        runs = [await _drive_run_plan(shapes[shape], one_each) for _ in range(3)]
        costs[f"{key}_wakeups"] = runs[0][0]
        costs[f"{key}_ms"] = statistics.median(cpu for _, cpu in runs)
    return costs


def growth(values: dict[int, float], sizes: list[int]) -> str:
    """``a -> b (xf)`` steps of a per-child value across consecutive N."""
    steps = [f"x{values[b] / values[a]:.2f} ({a}->{b})" for a, b in itertools.pairwise(sizes)]
    return ", ".join(steps) or "-"


def table(keel: Variant, bare: Variant, sizes: list[int], repeats: int) -> str:
    lines = [
        "| N | Keel plan (ms) | bare children (ms) | Keel ms/child | bare ms/child | "
        "ratio Keel/bare | Keel parent events | bare parent events | "
        "Keel parent history (KiB) | bare parent history (KiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        k, b = keel.median(n, "wall_ms"), bare.median(n, "wall_ms")
        lines.append(
            f"| {n} | {k:.0f} | {b:.0f} | {k / n:.2f} | {b / n:.2f} | {k / b:.3f} | "
            f"{keel.median(n, 'events'):.0f} | {bare.median(n, 'events'):.0f} | "
            f"{keel.median(n, 'history_bytes') / 1024:.1f} | "
            f"{bare.median(n, 'history_bytes') / 1024:.1f} |"
        )
    lines += [
        "",
        f"Wall time from start to result, median of {repeats} runs per N and variant; parent "
        "history from `fetch_history` after the run (median).",
        "",
        "CPU per run (medians of the same runs), per child:",
        "",
        "| N | worker+client process, Keel (ms/child) | worker+client process, bare (ms/child) "
        "| dev server, Keel (ms/child) | dev server, bare (ms/child) | child workflow code, "
        "Keel (ms/child) | child workflow code, bare (ms/child) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        lines.append(
            f"| {n} | {keel.median(n, 'process_cpu_ms') / n:.2f} | "
            f"{bare.median(n, 'process_cpu_ms') / n:.2f} | "
            f"{keel.median(n, 'server_cpu_ms') / n:.2f} | "
            f"{bare.median(n, 'server_cpu_ms') / n:.2f} | "
            f"{keel.median(n, 'child_cpu_ms'):.2f} | {bare.median(n, 'child_cpu_ms'):.2f} |"
        )
    lines += [
        "",
        "The parent workflow (medians):",
        "",
        "| N | wake-ups, Keel | wake-ups, bare | parent CPU, Keel (ms) | parent CPU, bare (ms) "
        "| Keel - bare per child (ms) | longest activation, Keel (ms) | longest activation, "
        "bare (ms) | sandbox instances, Keel / bare |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        kp, bp = keel.median(n, "parent_cpu_ms"), bare.median(n, "parent_cpu_ms")
        lines.append(
            f"| {n} | {keel.median(n, 'workflow_tasks'):.0f} | "
            f"{bare.median(n, 'workflow_tasks'):.0f} | {kp:.0f} | {bp:.0f} | "
            f"{(kp - bp) / n:.2f} | {keel.median(n, 'parent_max_activation_ms'):.0f} | "
            f"{bare.median(n, 'parent_max_activation_ms'):.0f} | "
            f"{max(r.parent_instances for r in keel.runs[n])} / "
            f"{max(r.parent_instances for r in bare.runs[n])} |"
        )
    lines += [
        "",
        "Wake-ups = completed workflow tasks in the parent's history. Workflow-code CPU "
        "(child and parent columns) = thread time of the worker thread running the "
        "workflow's activations and creating its sandboxed instance, measured by a wrapper "
        "around Keel's sandboxed runner (`keel.workers.runtime.workflow_runner`, with the "
        "bench module passed through like `keel`): the workflow code's own cost with the "
        "SDK's, without waits for the GIL. Sandbox instances > 1 would mean the parent was "
        "evicted from the worker's cache and replayed (max over runs). Process CPU also "
        "covers activities, the SDK core and the client.",
    ]
    return "\n".join(lines)


def growth_lines(keel: Variant, bare: Variant, sizes: list[int]) -> list[str]:
    def per_child(v: Variant, attr: str) -> dict[int, float]:
        return {n: v.median(n, attr) / n for n in sizes}

    return [
        f"- wall ms per child, Keel: {growth(per_child(keel, 'wall_ms'), sizes)}",
        f"- wall ms per child, bare: {growth(per_child(bare, 'wall_ms'), sizes)}",
        f"- parent CPU per child, Keel: {growth(per_child(keel, 'parent_cpu_ms'), sizes)}",
        f"- parent CPU per child, bare: {growth(per_child(bare, 'parent_cpu_ms'), sizes)}",
        f"- process CPU per child, Keel: {growth(per_child(keel, 'process_cpu_ms'), sizes)}",
        f"- process CPU per child, bare: {growth(per_child(bare, 'process_cpu_ms'), sizes)}",
        f"- dev server CPU per child, Keel: {growth(per_child(keel, 'server_cpu_ms'), sizes)}",
        f"- dev server CPU per child, bare: {growth(per_child(bare, 'server_cpu_ms'), sizes)}",
    ]


def micro_table(costs: dict[int, dict[str, float]], sizes: list[int]) -> str:
    lines = [
        "| N | `validate_plan` (ms) | of which duplicate-ref check (ms) | "
        "ready-scan, N/2 pending x N/2 done (ms, one wake-up) |",
        "|---:|---:|---:|---:|",
    ]
    for n in sizes:
        c = costs[n]
        lines.append(
            f"| {n} | {c['validate']:.3f} | {c['dup_check']:.3f} | {c['ready_scan']:.3f} |"
        )
    lines += [
        "",
        "`PlanExecutor.run_plan` itself, children faked (CPU of the whole run, ms; "
        "in parentheses: wake-ups, and µs per task):",
        "",
        "| N | N independent, all done in 1 wake-up | N independent, 1 done per wake-up | "
        "2 levels of N/2, 1 done per wake-up |",
        "|---:|---:|---:|---:|",
    ]
    for n in sizes:
        c = costs[n]
        cells = [
            f"{c[f'{k}_ms']:.1f} ({c[f'{k}_wakeups']:.0f}; {c[f'{k}_ms'] * 1000 / n:.0f} µs)"
            for k in ("flat_all", "flat_each", "levels_each")
        ]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_detail(keel: Variant, bare: Variant, sizes: list[int]) -> str:
    lines = ["Per-run wall times (ms, in run order):", ""]
    for n in sizes:
        for v in (keel, bare):
            lines.append(f"- N={n}, {v.label}: " + ", ".join(f"{r.wall_ms:.0f}" for r in v.runs[n]))
    return "\n".join(lines)


NOTE = (
    "Keel plan = `BenchKeelPlan`: a `KeelWorkflow` builds a plan of N independent `bench_noop` "
    "tasks, checks it with `validate_plan` and runs it with `PlanExecutor.run_plan` (policy: "
    "N tasks, fan-out N, no gates), so every task is a `KeelToolTask` child with ledger events "
    "(`PlanMaterialized`, N `TaskCompleted`) in the parent. bare children = "
    "`BenchBareChildren`: `asyncio.gather` of N `execute_child_workflow` of `BenchBareChild`, "
    "one activity each with `KeelToolTask`'s timeout and retry policy. Both children run the "
    "same instant activity `keel.tool.bench_noop`. Same dev server, worker, settings, "
    "pydantic converter and task queue; variants alternate (A B A B); ratio = Keel / bare."
)

MICRO_NOTE = (
    "Measured in this process after the dev server is shut down, without the sandbox "
    "(which makes workflow code slower), medians. First table: `validate_plan` "
    "(once per plan, in the parent's first workflow task) and its duplicate-ref check "
    "`sorted({r for r in refs if refs.count(r) > 1})` (O(N^2)); the ready-scan "
    "`[t for t in pending.values() if set(t.depends_on) <= set(run.results)]`, which "
    "`run_plan` evaluates on every wake-up while tasks are pending and which rebuilds "
    "`set(run.results)` for every pending task (O(pending x done) per wake-up). Second "
    "table: the real `run_plan` (ledger events included) with `workflow.info`, `now`, "
    "`execute_child_workflow` and `wait` patched, children resolved by a driver. Each "
    "wake-up also costs O(running): `workflow.wait(running.values(), FIRST_COMPLETED)` "
    "adds and removes a callback on every running task and the loop scans them all for "
    "`done()`. So one completion per wake-up makes the flat plan O(N^2) and the two-level "
    "plan O(N^3); all completions in one wake-up is linear. µs per task flat across N = "
    "linear."
)


def report(
    keel: Variant,
    bare: Variant,
    costs: dict[int, dict[str, float]],
    args: argparse.Namespace,
    settings: dict[str, int],
    seconds: float,
) -> str:
    machine = (
        f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()}, "
        f"Python {platform.python_version()}, temporalio {version('temporalio')}, "
        f"pydantic {version('pydantic')}"
    )
    arguments = f"--sizes {','.join(map(str, args.sizes))} --repeats {args.repeats}"
    worker = ", ".join(f"{k}={v}" for k, v in settings.items())
    return "\n".join(
        [
            "# Plan fan-out: Keel plan of N tasks vs N bare child workflows",
            "",
            f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {machine}",
            f"- arguments: `{arguments}`",
            f"- worker: {worker}",
            f"- run time: {seconds:.0f} s (dev server start to shutdown)",
            "",
            table(keel, bare, args.sizes, args.repeats),
            "",
            "Growth of the per-child cost between consecutive N (x1.00 = linear total cost):",
            "",
            *growth_lines(keel, bare, args.sizes),
            "",
            NOTE,
            "",
            "## Workflow code alone (outside Temporal)",
            "",
            micro_table(costs, args.sizes),
            "",
            MICRO_NOTE,
            "",
            runs_detail(keel, bare, args.sizes),
            "",
        ]
    )


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    top = max(args.sizes)
    settings = {
        "max_concurrent_workflow_tasks": args.workflow_slots,
        "max_concurrent_activities": max(100, top),
        "max_cached_workflows": 2 * top + 100,
    }
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    try:
        queue = f"bench-fanout-{uuid.uuid4()}"
        timing = TimingRunner({KEEL_PLAN_WORKFLOW, BARE_PARENT_WORKFLOW})
        worker = Worker(
            env.client,
            task_queue=queue,
            workflow_runner=timing,
            workflows=[BenchKeelPlan, BenchBareChildren, BenchBareChild, ToolTaskWorkflow],
            # Keel's signing activities: the plan's parent seals each task for its child.
            activities=[
                bench_noop,
                *engine_activities(WorkerKeys(SigningKey.generate(), Keyring())),
            ],
            **settings,
        )
        timing.server = server_pid()
        async with worker:
            keel, bare = await measure(env.client, queue, timing, args)
    finally:
        await env.shutdown()
    costs = {n: await micro_one(n) for n in args.sizes}
    text = report(keel, bare, costs, args, settings, time.perf_counter() - started)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"(written to {RESULTS})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--sizes", default="10,100,1000", help="comma-separated N (tasks / children per parent)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per N and variant")
    parser.add_argument(
        "--workflow-slots", type=int, default=200, help="worker max_concurrent_workflow_tasks"
    )
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error("--sizes must be comma-separated integers")
    if not args.sizes or min(args.sizes) < 1 or max(args.sizes) > MAX_PLAN_TASKS:
        parser.error(f"sizes must be between 1 and {MAX_PLAN_TASKS} (PlannerOutput's limit)")
    if args.repeats < 1 or args.workflow_slots < 2:
        parser.error("--repeats must be >= 1 and --workflow-slots >= 2")
    return args


if __name__ == "__main__":
    run_and_exit(lambda: asyncio.run(main(parse_args())))
