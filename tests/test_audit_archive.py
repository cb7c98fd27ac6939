"""``keel audit`` after Temporal forgot the execution: the archiver copied the ledger, the
execution was deleted (as retention would), and the dossier is read from the archive,
verified, with the reviewer's decision and signature, and says where it came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from keel.cli.ledgers import chain_runs
from tests.helpers import decide, review, start_review, wait_for_gate
from tests.test_archive import Deployment, delete_from_temporal

pytestmark = pytest.mark.integration


async def test_an_execution_temporal_deleted_is_audited_from_the_archive(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    deployment = Deployment(dev_env, tmp_path / "data", str(tmp_path / "archive.sqlite3"))
    async with deployment.worker(deployment.queues[0]):
        handle = await start_review(deployment.client, deployment.queues[0], "medium")
        await wait_for_gate(handle, "standard-review", timeout=60)
        await decide(handle, review("standard-review", "approve", "legal.sam", comment="ok"))
        await handle.result()
        events = [e for run in await chain_runs(deployment.client, handle.id) for e in run.events]
        passed = await deployment.archive_pass()
        assert passed.archived == 1 and passed.failed_verification == 0
    run_id = events[0]["run_id"]
    archived = tmp_path / "archived.html"
    await deployment.keel("audit", handle.id, "--from-archive", "--out", str(archived), "--no-pdf")
    assert (
        f"{run_id} (COMPLETED, from the archive)" in archived.read_text()
    )  # though Temporal has it
    await delete_from_temporal(deployment.client, handle.id, [run_id])

    html = tmp_path / "dossier.html"
    out = await deployment.keel("audit", handle.id, "--out", str(html), "--no-pdf", "-o", "json")
    assert f"Temporal no longer has '{handle.id}'" in out
    summary = json.loads(out.splitlines()[-1])
    assert (summary["verified"], summary["events"], summary["pdf"]) == (True, len(events), None)
    page = html.read_text()
    assert 'data-state="verified"' in page and "from the ledger archive" in page
    assert f"{run_id} (COMPLETED, from the archive)" in page
    (decided,) = [e for e in events if e["type"] == "GateDecided"]
    assert f'<tr data-seq="{decided["seq"]}">' in page
    assert "a trusted key for this reviewer signed this decision" in page
    (agent,) = [e for e in events if e["type"] == "AgentDecided"]
    assert agent["prompt_sha256"] in page and agent["contract_fingerprint"] in page
    # An auditor with the archive and no Temporal at all.
    deployment.cli_env["TEMPORAL_ADDRESS"] = "127.0.0.1:9"  # nothing listens there
    alone = tmp_path / "alone.html"
    await deployment.keel("audit", handle.id, "--from-archive", "--out", str(alone), "--no-pdf")
    assert 'data-state="verified"' in alone.read_text()
    missing = await deployment.keel("audit", "never-audited", "--from-archive", expect=1)
    assert "'never-audited' is not in the ledger archive" in missing
