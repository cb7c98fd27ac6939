"""Test-only workflows for the sandbox runner (``tests/test_sandbox_runner.py``): one that
sends payloads in every context the SDK distinguishes, and one that breaks a sandbox rule.

The workflow sandbox re-imports this module, so it must stay import-safe.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError

STEP = timedelta(seconds=10)


@activity.defn(name="sandbox_probe_echo")
async def echo(text: str) -> str:
    return f"echo {text}"


@workflow.defn(name="SandboxProbeChild")
class SandboxProbeChild:
    @workflow.run
    async def run(self, text: str) -> str:
        return f"child {text}"


@workflow.defn(name="SandboxProbeContexts")
class SandboxProbeContexts:
    """An activity, a local activity, a child, a memo upsert and a query-able state: every
    payload the worker converts, in each context the SDK gives a payload."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @workflow.run
    async def run(self, text: str) -> list[str]:
        self.seen.append(await workflow.execute_activity(echo, text, start_to_close_timeout=STEP))
        self.seen.append(
            await workflow.execute_local_activity(echo, f"{text}!", start_to_close_timeout=STEP)
        )
        self.seen.append(
            await workflow.execute_child_workflow(
                SandboxProbeChild.run, text, id=f"{workflow.info().workflow_id}-child"
            )
        )
        workflow.upsert_memo({"seen": len(self.seen)})
        return self.seen

    @workflow.query
    def progress(self) -> list[str]:
        return self.seen


@workflow.defn(
    name="SandboxProbeOpensAFile", failure_exception_types=[RestrictedWorkflowAccessError]
)
class SandboxProbeOpensAFile:
    """Reads a file in workflow code, which the sandbox forbids."""

    @workflow.run
    async def run(self, path: str) -> str:
        with open(path) as file:  # the point: the sandbox refuses it
            return file.read()
