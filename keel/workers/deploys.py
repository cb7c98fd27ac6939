"""Deploying new workflow code without breaking the runs that wait at gates.

Two mechanisms, chosen per deployment (docs/deploys.md says which to use when):

* **Worker Versioning** (``KEEL_DEPLOYMENT_NAME`` and ``KEEL_BUILD_ID``): the worker joins a
  Temporal Worker Deployment as one build. Keel's workflows are **pinned** by default
  (``KEEL_VERSIONING_BEHAVIOR``): a run that waits days at a gate finishes on the code it
  started with, and new runs start on whichever build the operator made current
  (``temporal worker deployment set-current-version``). The old build keeps serving until
  its runs drain. ``auto-upgrade`` moves runs to the current build instead, which then
  must replay their histories. A workflow that declares its own behavior
  (``workflow.defn(versioning_behavior=...)``) keeps it.
* **Unversioned** (the embedded default, and ``keel dev``): every worker of the task queue
  runs the newest code, so every change to workflow code goes under ``workflow.patched``
  and running executions replay under it. Keel's engine ships its own changes this way,
  so both kinds of deployment can take them.

Draining: a worker told to stop stops polling at once and gives its in-flight activities
``KEEL_SHUTDOWN_GRACE_SECONDS`` to finish before it cancels them; a cancelled attempt
fails with a worker-shutdown cancellation and is retried by another worker.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import WorkerDeploymentConfig

from keel.errors import KeelUserError
from keel.settings import KeelSettings

__all__ = ["deployment_config", "deployment_note", "shutdown_grace"]

BEHAVIORS = {
    "pinned": VersioningBehavior.PINNED,
    "auto-upgrade": VersioningBehavior.AUTO_UPGRADE,
}


def deployment_config(settings: KeelSettings) -> WorkerDeploymentConfig | None:
    """This worker's Worker Versioning configuration; None when it is unversioned.

    Raises:
        KeelUserError: only one of ``KEEL_DEPLOYMENT_NAME`` and ``KEEL_BUILD_ID`` is set.
    """
    name, build = settings.deployment_name, settings.build_id
    if name is None and build is None:
        return None
    if name is None or build is None:
        missing = "KEEL_BUILD_ID" if build is None else "KEEL_DEPLOYMENT_NAME"
        raise KeelUserError(
            f"Worker Versioning needs both KEEL_DEPLOYMENT_NAME and KEEL_BUILD_ID; set "
            f"{missing} too (or neither, for an unversioned worker): see docs/deploys.md"
        )
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(deployment_name=name, build_id=build),
        use_worker_versioning=True,
        default_versioning_behavior=BEHAVIORS[settings.versioning_behavior],
    )


def shutdown_grace(settings: KeelSettings) -> timedelta:
    """How long a stopping worker lets in-flight activities finish (the SDK's
    ``graceful_shutdown_timeout``)."""
    return timedelta(seconds=settings.shutdown_grace_seconds)


def deployment_note(settings: KeelSettings) -> str:
    """What ``keel worker`` says about its deployment when it is ready."""
    config = deployment_config(settings)
    grace = f"in-flight activities get {settings.shutdown_grace_seconds:g} s to finish on stop"
    if config is None:
        return f"unversioned (changes to workflow code go under workflow.patched); {grace}"
    version = config.version
    return (
        f"deployment {version.deployment_name!r} build {version.build_id!r}, workflows "
        f"{settings.versioning_behavior} unless they say otherwise (new runs come here once it "
        f"is current: temporal worker deployment set-current-version --deployment-name "
        f"{version.deployment_name} --build-id {version.build_id}); {grace}"
    )
