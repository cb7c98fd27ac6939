"""The sandbox Keel's workflows run in: Temporal's, entered less often.

Temporal's ``SandboxedWorkflowRunner`` runs a workflow's code in a sandbox: each time the
worker calls into a run it swaps in the sandbox's modules and restricted builtins
(``Importer.applied``) and ``exec``s a source string, compiled anew on each call. Besides
activations, the worker calls in once per payload sequence it encodes or decodes, only to
ask which serialization context the payloads belong to (the workflow's, or one activity's
or child's). For a support email that is about 50 calls, each about 38 us here, most of it
the swap and the compile; answering takes 0.5 us.

``KeelSandboxedWorkflowRunner`` is the same sandbox with two changes, neither of which runs
workflow code differently:

* the two context questions (``get_serialization_context``,
  ``get_external_store_context``) are answered by the run's workflow instance directly:
  the SDK's answer reads the run's info and its pending activities and children, imports
  nothing and calls no workflow code, so it needs no sandbox;
* the source strings the sandbox executes (a handful, fixed by the SDK) are compiled once.

Workflow code (activations, and the import of the workflow's module) still runs under the
sandbox's restrictions, as before. It relies on ``temporalio``'s private ``_Instance``
(``workflow_sandbox._runner``), so a test runs workflows under it against the stock runner
(``tests/test_sandbox_runner.py``): an SDK change that breaks it fails there.
"""

from __future__ import annotations

import functools
from typing import Any

from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker._workflow_instance import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

_compiled = functools.lru_cache(maxsize=256)(
    lambda source: compile(source, "<string>", "exec")  # as exec(source) compiles it
)
"""A sandbox call's source, compiled once (the SDK's few strings, one per workflow module)."""


class _QuickInstance(_Instance):
    """One workflow run in the sandbox; see the module docstring for what differs."""

    def _run_code(self, code: str, **extra_globals: Any) -> None:
        super()._run_code(_compiled(code), **extra_globals)  # type: ignore[arg-type]

    def _in_sandbox(self) -> WorkflowInstance:
        in_sandbox: Any = self.globals_and_locals["__temporal_in_sandbox"]  # the SDK's InSandbox
        return in_sandbox.instance  # type: ignore[no-any-return]

    def get_serialization_context(self, command_info: CommandInfo | None) -> Any:
        return self._in_sandbox().get_serialization_context(command_info)

    def get_external_store_context(self, command_info: CommandInfo | None) -> Any:
        return self._in_sandbox().get_external_store_context(command_info)


class KeelSandboxedWorkflowRunner(SandboxedWorkflowRunner):
    """Temporal's sandboxed runner, calling into a run only to run its code."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        """One run's instance (``_QuickInstance``)."""
        return _QuickInstance(det, self.runner_class, self.restrictions)
