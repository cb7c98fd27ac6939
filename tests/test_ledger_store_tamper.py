"""The issue's attack on the store itself: with the dev server stopped, one cell of its
SQLite database is edited (the reviewer legal.sam -> gc.morgan in a completed review's
result) and the chain resealed; after a restart ``keel verify`` and ``keel ledger`` catch it.

History is left unencrypted here (``KEEL_CODEC=off``): the attacker of this test can read and
rewrite payloads, as one holding the codec keys could; only the signatures stop them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path

from temporalio.api.history.v1 import History
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from keel.contracts.integrity import verify_ledger
from keel.contracts.names import SEARCH_ATTRIBUTES
from keel.offline import OfflineProvider
from keel.testing import offline_settings
from keel.workers.apps import resolve_apps
from keel.workers.devstack import DEV_SERVER_STARTUP
from keel.workers.keys import load_worker_keys
from keel.workers.runtime import build_worker
from tests.conftest import BIN, REVIEW_ENV, free_port
from tests.helpers import decide, review, run_keel, start_review, wait_for_gate
from tests.ledger_forgeries import index_of, reseal, write_keyring


async def dev_server(db: Path, port: int) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        port=port,
        dev_server_database_filename=str(db),
        dev_server_log_level="error",
    )


def reseal_reviewer_in_the_database(db: Path, workflow_id: str) -> int:
    """Rewrite the completed run's result in ``history_node``: the GateDecided reviewer
    changed and every hash from it on recomputed. Returns the rows rewritten."""
    con = sqlite3.connect(db)
    rewritten = 0
    with con:
        for rowid, data in con.execute("SELECT rowid, data FROM history_node").fetchall():
            if workflow_id.encode() not in data and b"legal.sam" not in data:
                continue
            history = History.FromString(data)
            for event in history.events:
                if not event.HasField("workflow_execution_completed_event_attributes"):
                    continue
                payload = event.workflow_execution_completed_event_attributes.result.payloads[0]
                result = json.loads(payload.data)
                if result.get("ledger", [{}])[0].get("workflow_id") != workflow_id:
                    continue
                ledger = result["ledger"]
                i = index_of(ledger, "GateDecided", reviewer="legal.sam")
                ledger[i]["reviewer"] = "gc.morgan"
                result["ledger"] = reseal(ledger, i)
                result["ledger_head"] = result["ledger"][-1]["hash"]
                result["decided_by"] = "gc.morgan"
                payload.data = json.dumps(result).encode()
                con.execute(
                    "UPDATE history_node SET data = ? WHERE rowid = ?",
                    (history.SerializeToString(), rowid),
                )
                rewritten += 1
    con.close()
    return rewritten


async def keel(*args: str, env: dict[str, str], expect: int) -> str:
    return await run_keel(*args, env=env, expect=expect)


async def test_a_resealed_edit_of_the_dev_servers_database_is_caught(tmp_path: Path) -> None:
    db, port = tmp_path / "temporal.db", free_port()
    task_queue = f"tamper-{uuid.uuid4()}"
    server = await dev_server(db, port)
    try:
        async with build_worker(
            server.client,
            offline_settings(),
            apps=resolve_apps(),
            task_queue=task_queue,
            provider=OfflineProvider(),
        ):
            handle = await start_review(server.client, task_queue, "medium", prefix="tamper")
            await wait_for_gate(handle, "standard-review")
            await decide(handle, review("standard-review", "approve", "legal.sam"))
            assert (await handle.result()).decided_by == "legal.sam"
    finally:
        await server.shutdown()

    keys = write_keyring(tmp_path / "keys.json", load_worker_keys(offline_settings()).signing)
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "KEEL_CODEC": "off",
        **REVIEW_ENV,  # the test kit signs the reviews these processes take
        "KEEL_DATA_DIR": str(tmp_path / "cli"),
    }

    assert reseal_reviewer_in_the_database(db, handle.id) == 1
    server = await dev_server(db, port)  # restarted on the edited database
    try:
        result = await server.client.get_workflow_handle(handle.id).result()
        assert result["decided_by"] == "gc.morgan"  # the store now says so
        decided = next(e for e in result["ledger"] if e["type"] == "GateDecided")
        assert decided["reviewer"] == "gc.morgan"
        # Resealed whole: every hash and link holds; only the signatures can tell.
        assert verify_ledger(result["ledger"], keyring=None, closed=True).ok

        out = await keel("verify", handle.id, "--keys", str(keys), env=env, expect=1)
        assert f"{handle.id}: FAILED" in out
        assert "does not match the signed content" in out
        printed = await keel(
            "ledger", handle.id, env={**env, "KEEL_TRUSTED_KEYS_FILE": str(keys)}, expect=1
        )
        assert "gc.morgan" in printed and "LEDGER BROKEN at event #" in printed
        assert "hash chain verified" not in printed
    finally:
        await server.shutdown()
