"""Deciding as someone else through the raw ``temporal`` CLI and through ``keel approve``:
unsigned, forged and wrong-key decisions are refused and change nothing; a reviewer's own
key decides only as that reviewer.

The attack of issue 9: ``temporal workflow update execute --name review`` as ``gc.morgan``
with a made-up device went into the ledger as the general counsel's approval.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from keel.contracts.gates import GateState, GateView
from keel.contracts.ledger import GateDecided, ReviewRefused
from keel.contracts.reviews import ReviewerTrust
from keel.contracts.signing import SigningKey
from keel.testing import keel_worker, ledger_of, offline_settings, review_payload, signed_review
from tests.conftest import BIN
from tests.helpers import start_review, wait_for_gate

HIGH, MEDIUM = "general-counsel", "standard-review"


async def temporal(env: WorkflowEnvironment, *args: str) -> tuple[int, str]:
    """Run the ``temporal`` CLI against ``env``; its exit code and output."""
    address = env.client.service_client.config.target_host
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "temporal"),
        *args,
        "--address",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def refusals(ledger: list[Any]) -> list[ReviewRefused]:
    return [e for e in ledger if isinstance(e, ReviewRefused)]


async def gates(handle: WorkflowHandle[Any, Any]) -> list[GateView]:
    return list(await handle.query("gates", result_type=list[GateView]))


async def test_the_raw_temporal_cli_cannot_approve_as_someone_else(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    mallory = SigningKey.generate()
    async with keel_worker(dev_env.client, settings=offline_settings(data_dir=tmp_path)) as tq:
        handle = await start_review(dev_env.client, tq, "high", prefix="raw-cli")
        await wait_for_gate(handle, HIGH, timeout=60)
        claimed = {**review_payload(HIGH, "approve", "gc.morgan"), "device": "gc-laptop"}
        forged = await signed_review(
            handle, review_payload(HIGH, "approve", "gc.morgan"), key=mallory
        )
        tampered = await signed_review(handle, review_payload(HIGH, "approve", "legal.sam"))
        tampered["reviewer"] = "gc.morgan"
        for payload in (claimed, forged, tampered):
            code, out = await temporal(
                dev_env, "workflow", "update", "execute", "--workflow-id", handle.id,
                "--name", "review", "--input", json.dumps(payload),
            )  # fmt: skip
            assert code != 0 and "review refused" in out, out
            code, out = await temporal(
                dev_env, "workflow", "signal", "--workflow-id", handle.id,
                "--name", "review", "--input", json.dumps(payload),
            )  # fmt: skip
            assert code == 0, out  # a signal is accepted by the server ...
        async with asyncio.timeout(30):  # ... and refused, on record, by the workflow
            while len(refused := refusals(await ledger_of(handle))) < 3:
                await asyncio.sleep(0.1)
        [gate] = await gates(handle)
        assert (gate.state, gate.approved_by) == (GateState.AWAITING_APPROVAL, [])
        assert [r.reviewer for r in refused] == ["gc.morgan"] * 3
        assert "GateDecided" not in {e.type for e in await ledger_of(handle)}
        await handle.terminate("raw CLI test done")


async def test_keel_approve_signs_with_the_reviewers_own_key(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    key_file, trust_file = tmp_path / "priya.pem", tmp_path / "reviewer-keys.json"
    keel_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "TEMPORAL_"))},
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "KEEL_CODEC": "off",
        "KEEL_DATA_DIR": str(tmp_path / "cli"),
    }

    async def keel(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "keel"), *args, env=env or keel_env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    code, out = await keel(
        "keys", "reviewer", str(key_file), "--reviewer", "legal.priya", "--role", "legal",
        "--trust", str(trust_file),
    )  # fmt: skip
    assert code == 0, out
    trust = ReviewerTrust.model_validate_json(trust_file.read_text())
    assert [(k.kind, k.subject, k.roles) for k in trust.keys] == [
        ("reviewer", "legal.priya", ("legal",))
    ]
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    settings = offline_settings(data_dir=tmp_path / "worker", reviewer_keys_file=trust_file)
    async with keel_worker(dev_env.client, settings=settings) as tq:
        handle = await start_review(dev_env.client, tq, "medium", prefix="cli-key")
        await wait_for_gate(handle, MEDIUM, timeout=60)
        code, out = await keel("approve", handle.id, MEDIUM, "--reviewer", "legal.priya")
        assert code == 2 and "KEEL_REVIEWER_KEY_FILE" in out, out  # no key configured
        signing = {**keel_env, "KEEL_REVIEWER_KEY_FILE": str(key_file)}
        code, out = await keel("approve", handle.id, MEDIUM, "--reviewer", "legal.sam", env=signing)
        assert code == 2 and "signs for 'legal.priya' only" in out, out
        code, out = await keel(
            "approve", handle.id, MEDIUM, "--reviewer", "legal.priya", "--comment", "ok",
            env=signing,
        )  # fmt: skip
        assert code == 0 and "approved" in out, out
        result = await handle.result()
    [decided] = [e for e in result.ledger if isinstance(e, GateDecided)]
    assert (decided.reviewer, decided.roles, decided.auth and decided.auth["method"]) == (
        "legal.priya",
        ["legal"],
        "reviewer-key",
    )
    assert decided.key_id == trust.keys[0].key_id
