"""Replaying recorded histories against the current code: the CI check that a change to a
workflow does not break executions already running."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer, WorkflowReplayResult

from keel.workers.app import App
from keel.workers.apps import resolve_apps, workflows_of
from keel.workers.codec import CodecKeyring
from keel.workers.runtime import worker_data_converter, workflow_runner

HistorySource = WorkflowHistory | WorkflowHandle[Any, Any] | str | os.PathLike[str]
"""A history, a handle to fetch it from, or a JSON file (``temporal workflow show
--output json``, ``WorkflowHistory.to_json()``) or folder of them."""


async def replay_histories(
    histories: Iterable[HistorySource],
    *,
    apps: Sequence[App] | None = None,
    workflows: Sequence[type] = (),
    keyring: CodecKeyring | None = None,
) -> list[tuple[str, WorkflowReplayResult]]:
    """Replay each history with the apps' workflows, in the full workflow sandbox and with
    Keel's workers' converter.

    Args:
        histories: what to replay (see ``HistorySource``); folders give their ``*.json``.
        apps: whose workflows to replay with; default: every installed app.
        workflows: further workflow classes.
        keyring: the codec keys of encrypted histories (``keel.workers.codec``).

    Returns:
        ``(workflow id, result)`` per history; a result's ``replay_failure`` is set when
        the code no longer matches.
    """
    chosen = list(apps) if apps is not None else resolve_apps()
    replayer = Replayer(
        workflows=workflows_of(chosen, extra=workflows),
        data_converter=worker_data_converter(keyring),
        workflow_runner=workflow_runner(),  # the workers' sandbox: replay runs as they ran
    )
    results = []
    for source in histories:
        for history in await _load(source):
            outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
            results.append((history.workflow_id, outcome))
    return results


async def assert_replays(
    histories: Iterable[HistorySource],
    *,
    apps: Sequence[App] | None = None,
    workflows: Sequence[type] = (),
    keyring: CodecKeyring | None = None,
) -> None:
    """Fail unless every history replays without a nondeterminism or other replay error.

    Args:
        histories: what to replay (see ``HistorySource``).
        apps: whose workflows to replay with; default: every installed app.
        workflows: further workflow classes.
        keyring: the codec keys of encrypted histories (``keel.workers.codec``).

    Raises:
        AssertionError: naming each history that failed and why, or there was none.
    """
    results = await replay_histories(histories, apps=apps, workflows=workflows, keyring=keyring)
    if not results:
        raise AssertionError("no histories to replay")
    failed = [f"{wid}: {r.replay_failure}" for wid, r in results if r.replay_failure]
    if failed:
        raise AssertionError("histories that no longer replay:\n" + "\n".join(failed))


async def _load(source: HistorySource) -> list[WorkflowHistory]:
    if isinstance(source, WorkflowHistory):
        return [source]
    if isinstance(source, WorkflowHandle):
        return [await source.fetch_history()]
    path = Path(source)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    return [WorkflowHistory.from_json(file.stem, file.read_text()) for file in files]
