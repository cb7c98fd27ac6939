"""Measurement helpers shared by the benchmarks: CPU of this process and of the dev server,
percentiles, the load average, and a clean exit."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import resource
import sys
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from unittest import mock

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from keel.workers import runtime
from keel.workers.engine_memo import with_engine_memo


def process_cpu() -> float:
    """CPU seconds of this process, all threads (worker, client, anything in-process)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_pid() -> int | None:
    """The dev server: the child process of this one, found through /proc (Linux)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().rsplit(")", 1)
        except (OSError, ValueError):
            continue
        if "temporal" in name and int(rest.split()[1]) == os.getpid():
            return int(stat.parent.name)
    return None


def server_cpu(pid: int | None) -> float:
    """CPU seconds of process ``pid`` (NaN when unknown)."""
    if pid is None:
        return math.nan
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def system_load() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared: say under what load)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def run_and_exit(run: Callable[[], object]) -> NoReturn:
    """Run a benchmark's ``run`` and leave with ``os._exit`` and its status, once its
    workers, clients and server are shut down and its table is written: a crash in SDK
    teardown at interpreter exit (seen in 2 of 14 runs) cannot fail or truncate the run."""
    status = 0
    try:
        run()
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def keel_client(client: Client) -> Client:
    """``client`` with the interceptor Keel's own clients carry (``EngineMemo``: its runs
    decide the engine's patches without a marker), as ``keel.workers.runtime.connect``
    builds them."""
    return with_engine_memo(client)


@dataclass(frozen=True)
class BareOnStockRunner(WorkflowRunner):
    """One worker's runner for both variants: Keel's (``keel.workers.sandbox``) for Keel's
    workflows, and for the bare ones (``bare``, workflow type names) Temporal's stock
    ``SandboxedWorkflowRunner`` with the same restrictions and pass-through modules, so the
    bare variant is what a plain Temporal worker runs."""

    keel: SandboxedWorkflowRunner
    bare: frozenset[str]

    @functools.cached_property
    def stock(self) -> SandboxedWorkflowRunner:
        return SandboxedWorkflowRunner(restrictions=self.keel.restrictions)

    def _for(self, name: str | None) -> WorkflowRunner:
        return self.stock if name in self.bare else self.keel

    def prepare_workflow(self, defn: workflow._Definition) -> None:
        self._for(defn.name).prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return self._for(det.defn.name).create_instance(det)

    def set_worker_level_failure_exception_types(
        self, types: Sequence[type[BaseException]]
    ) -> None:
        self.keel.set_worker_level_failure_exception_types(types)
        self.stock.set_worker_level_failure_exception_types(types)


BENCH_MODULES = ("bench_workflows", "peer_workflows", "peer_agents")
"""The benchmarks' workflow modules, passed through every variant's sandbox: Keel's own
workflow modules are (``keel``), and without it every run of every variant would re-import
its module and re-apply ``@workflow.defn`` to its classes, a cost of the benchmark's file
layout, larger for a class with more members."""


def bench_sandbox() -> SandboxedWorkflowRunner:
    """Temporal's stock sandbox with the benchmarks' modules passed through (for the
    peers' workers; their plugins add their own pass-through modules to it)."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*BENCH_MODULES)
    )


def bare_on_stock(*bare: str) -> AbstractContextManager[object]:
    """While building a worker (``build_worker``) in this block, its runner is a
    ``BareOnStockRunner``: Keel's for Keel's workflows, the stock one for the workflow
    types ``bare``, both with ``BENCH_MODULES`` passed through."""
    keel_runner = runtime.workflow_runner

    def runner() -> BareOnStockRunner:
        keel = keel_runner()
        passed = keel.restrictions.with_passthrough_modules(*BENCH_MODULES)
        return BareOnStockRunner(dataclasses.replace(keel, restrictions=passed), frozenset(bare))

    return mock.patch.object(runtime, "workflow_runner", runner)
