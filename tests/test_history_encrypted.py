"""With history encryption on, Temporal's history holds none of the samples' PII in plaintext,
as read by a client without the codec and by the raw ``temporal`` CLI; with the codec (Keel's
CLI, or the raw CLI through the codec server) the same history reads in full.

Every built-in scenario runs through ``keel demo`` on a real dev server, with its worker and
clients encrypting under the session's keys."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from keel.scenarios.contract_review.workflow import ContractReviewWorkflow
from keel.workers.app import workflow_type_of
from keel.workers.codec import ENCODING, KEY_ID, CodecKeyring, EncryptionCodec
from keel.workers.codec_server import CodecServer
from keel.workers.runtime import connect
from tests.conftest import BIN, CODEC_KEYS, REVIEW_ENV, codec_settings, free_port, keel_worker
from tests.samples import load_sample

pytestmark = pytest.mark.integration

PII = [
    # support email: the customer's address, name, phone, order numbers, what they wrote
    "maya.lindqvist@example.com",
    "tom.okafor@example.com",
    "Maya Lindqvist",
    "+44 20 7946 0958",
    "7946 0958",
    "AB-104233",
    "AB-104871",
    "cracked lid",
    # contract review: the contract's text
    "Orion Logistics Holdings",
    "unlimited liability for any losses",
    "exclusive freight provider worldwide",
    "USD 125,000 per month",
    # incident: the page's text
    "p99 latency of checkout-api above 1s",
    # what the demo's reviewer wrote and changed on the high-risk contract
    "Clause 4 fees hide a penalty schedule",
    "cap customer liability at 12 months of fees",
]
"""Strings of the samples ``keel demo`` runs (support-refund, support-injection, the three
contracts, the incident page) and of its scripted reviews."""


def texts_of(document: Any) -> Iterator[str]:
    """Every string in a history's JSON, with each base64 field also decoded (payload data
    and metadata are base64 in it): where plaintext would be, in any form."""
    if isinstance(document, dict):
        for value in document.values():
            yield from texts_of(value)
    elif isinstance(document, list):
        for item in document:
            yield from texts_of(item)
    elif isinstance(document, str):
        yield document
        try:
            decoded = base64.b64decode(document, validate=True)
        except ValueError:
            return
        yield decoded.decode("utf-8", "replace")


def encrypted_payloads(document: Any) -> Iterator[Payload]:
    """The Keel-encrypted payloads in a history's JSON."""
    if isinstance(document, dict):
        metadata = document.get("metadata")
        if (
            isinstance(metadata, dict)
            and metadata.get("encoding") == base64.b64encode(ENCODING).decode()
        ):
            yield Payload(
                metadata={k: base64.b64decode(v) for k, v in metadata.items()},
                data=base64.b64decode(document.get("data", "")),
            )
        for value in document.values():
            yield from encrypted_payloads(value)
    elif isinstance(document, list):
        for item in document:
            yield from encrypted_payloads(item)


def leaked(text: str) -> list[str]:
    return [pii for pii in PII if pii.lower() in text.lower()]


async def keel(env: dict[str, str], *args: str, timeout: float = 300) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "keel"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    return proc.returncode or 0, out.decode()


async def temporal(address: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "temporal"),
        *args,
        "--address",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def executions(client: Client, workflow_ids: list[str]) -> list[tuple[str, str, Any]]:
    """``(workflow id, run id, history JSON)`` of each run of these workflows and of every
    child they started, fetched with ``client`` (as stored: no decoding)."""
    queue: list[tuple[str, str | None]] = [(wid, None) for wid in workflow_ids]
    seen: dict[tuple[str, str], Any] = {}
    while queue:
        workflow_id, run_id = queue.pop()
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        run = history.run_id
        if (workflow_id, run) in seen:
            continue
        seen[(workflow_id, run)] = json.loads(history.to_json())
        if started.continued_execution_run_id:
            queue.append((workflow_id, started.continued_execution_run_id))
        for event in history.events:
            if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
                child = event.start_child_workflow_execution_initiated_event_attributes
                queue.append((child.workflow_id, None))
    return [(wid, run, doc) for (wid, run), doc in seen.items()]


async def test_the_samples_pii_is_in_no_history_in_plaintext_and_reads_with_the_codec(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    address = dev_env.client.service_client.config.target_host
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        **REVIEW_ENV,  # the test kit signs the reviews these processes take
        "KEEL_DATA_DIR": str(tmp_path / "data"),
        "KEEL_MODEL": "offline",
        "KEEL_CODEC_KEYS": CODEC_KEYS,
        "KEEL_UI_URL": f"http://127.0.0.1:{free_port()}",
    }
    code, out = await keel(env, "demo")
    assert code == 0, out
    workflow_ids = sorted(set(re.findall(r"/workflows/(demo-[\w-]+)/", out)))
    # 3 contracts, 2 support emails, 1 incident, 1 ingestion
    assert len(workflow_ids) == 7, out

    # A client without the codec, as someone with access to the server reads it.
    raw_client = dev_env.client
    assert raw_client.data_converter.payload_codec is None
    runs = await executions(raw_client, workflow_ids)
    assert len(runs) > len(workflow_ids)  # the incident's tool tasks are child workflows
    codec = EncryptionCodec(CodecKeyring.parse(CODEC_KEYS))
    decoded_texts: list[str] = []
    for workflow_id, run_id, document in runs:
        raw = "\n".join(texts_of(document))
        assert leaked(raw) == [], f"{workflow_id} ({run_id}) holds plaintext"
        sealed = list(encrypted_payloads(document))
        assert sealed, f"{workflow_id} has no encrypted payload"
        for payload in await codec.decode(sealed):
            decoded_texts.append(payload.data.decode("utf-8", "replace"))
    # The scan looked where the PII is: decrypted, the same histories hold every string.
    decoded = "\n".join(decoded_texts)
    assert [pii for pii in PII if pii.lower() not in decoded.lower()] == []

    # The raw `temporal` CLI sees ciphertext only...
    support = next(wid for wid in workflow_ids if "support-refund" in wid)
    contract = next(wid for wid in workflow_ids if "contract-high" in wid)
    for workflow_id, run_id, _ in runs:
        shown = await temporal(
            address, "workflow", "show", "-w", workflow_id, "-r", run_id, "--output", "json"
        )
        assert leaked("\n".join(texts_of(json.loads(shown)))) == [], workflow_id

    # ...and reads the history in full through the codec server.
    async with CodecServer(codec, token="history-test-token", origins=[]) as server:
        for workflow_id in (support, contract):
            shown = await temporal(
                address,
                "workflow",
                "show",
                "-w",
                workflow_id,
                "--output",
                "json",
                "--codec-endpoint",
                server.url,
                "--codec-auth",
                "Bearer history-test-token",
            )
            text = "\n".join(texts_of(json.loads(shown)))
            wanted = (
                ["maya.lindqvist@example.com", "+44 20 7946 0958", "AB-104233"]
                if workflow_id == support
                else ["unlimited liability for any losses", "Orion Logistics Holdings"]
            )
            assert [pii for pii in wanted if pii not in text] == [], workflow_id

    # Keel's CLI decodes with the keys: the ledger reads; without them it says what to set.
    code, ledger = await keel(env, "ledger", contract, timeout=60)
    assert code == 0, ledger
    assert "hash chain verified" in ledger
    assert "Clause 4 fees hide a penalty schedule" in ledger
    assert "cap customer liability at 12 months of fees" in ledger
    code, exported = await keel(
        env, "export", "--query", f"WorkflowId = '{support}'", "-o", "json", timeout=60
    )
    assert code == 0 and '"type": "WorkflowCompleted"' in exported, exported
    code, replayed = await keel(env, "replay", support, timeout=60)
    assert code == 0 and "deterministic" in replayed, replayed
    history_file = tmp_path / "support.json"
    history_file.write_text(
        await temporal(address, "workflow", "show", "-w", support, "--output", "json")
    )
    code, replayed = await keel(env, "replay", str(history_file), timeout=60)
    assert code == 0 and "deterministic" in replayed, replayed

    without_keys = {k: v for k, v in env.items() if k != "KEEL_CODEC_KEYS"}
    without_keys["KEEL_DATA_DIR"] = str(tmp_path / "elsewhere")
    code, refused = await keel(without_keys, "ledger", contract, timeout=60)
    assert code == 2 and "KEEL_CODEC_KEYS" in refused and "Traceback" not in refused
    code, refused = await keel(without_keys, "replay", str(history_file), timeout=60)
    assert code == 2 and "encrypted with key id 'test-1'" in refused, refused


@pytest.mark.parametrize("command", [["worker"], ["gates"], ["ledger", "some-id"]])
async def test_against_another_server_without_keys_keel_refuses_to_start_and_says_how(
    tmp_path: Path, command: list[str]
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "TEMPORAL_"))},
        "TEMPORAL_ADDRESS": "temporal.invalid:7233",
        "TEMPORAL_CONFIG_FILE": str(tmp_path / "none.toml"),
        **REVIEW_ENV,  # the test kit signs the reviews these processes take
        "KEEL_DATA_DIR": str(tmp_path / "data"),
        "KEEL_MODEL": "offline",
    }
    code, out = await keel(env, *command, timeout=60)
    assert code == 2, out
    assert "no codec key is configured for the Temporal server at temporal.invalid:7233" in out
    assert "KEEL_CODEC_KEYS" in out and "KEEL_CODEC_KEY_FILE" in out and "KEEL_CODEC=off" in out
    assert "Traceback" not in out
    # Turned off explicitly, it goes on to connect (and finds no server there).
    code, out = await keel({**env, "KEEL_CODEC": "off"}, *command, timeout=60)
    assert code == 3 and "cannot reach Temporal" in out, out


async def test_a_worker_with_the_codec_runs_a_raw_plaintext_start_and_refuses_forged_ciphertext(
    dev_env: WorkflowEnvironment,
) -> None:
    raw_client = dev_env.client
    client = await connect(codec_settings(), address=raw_client.service_client.config.target_host)
    contract = load_sample("contract-low-risk")
    async with keel_worker(client) as task_queue:
        # A raw caller without the codec: its plaintext input is read as sent...
        plain = await raw_client.start_workflow(
            ContractReviewWorkflow.run, contract, id=f"raw-{uuid.uuid4()}", task_queue=task_queue
        )
        async with asyncio.timeout(30):
            result = await client.get_workflow_handle(plain.id).result()
        assert result["outcome"] == "approved"
        # ...and what the worker wrote back is encrypted.
        history = await plain.fetch_history()
        completed = history.events[-1].workflow_execution_completed_event_attributes
        assert completed.result.payloads[0].metadata["encoding"] == ENCODING

        # Ciphertext that does not open fails its run with the reason; it never wedges it.
        sealed = EncryptionCodec(CodecKeyring.parse(CODEC_KEYS)).seal(
            Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(contract).encode())
        )
        forged = {
            "failed authentication": Payload(
                metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
            ),
            "which this process does not have": Payload(
                metadata={"encoding": ENCODING, KEY_ID: b"stolen-1"}, data=sealed.data
            ),
        }
        for reason, payload in forged.items():
            handle = await raw_client.start_workflow(
                workflow_type_of(ContractReviewWorkflow),
                RawValue(payload),
                id=f"forged-{uuid.uuid4()}",
                task_queue=task_queue,
            )
            with pytest.raises(WorkflowFailureError) as failed:
                async with asyncio.timeout(30):
                    await client.get_workflow_handle(handle.id).result()
            cause = failed.value.cause
            assert isinstance(cause, ApplicationError) and cause.type == "UndecodableInput"
            assert reason in cause.message and cause.non_retryable


async def test_malformed_codec_settings_are_refused_naming_the_setting_never_the_key(
    tmp_path: Path,
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "TEMPORAL_"))},
        "TEMPORAL_ADDRESS": "temporal.invalid:7233",
        **REVIEW_ENV,  # the test kit signs the reviews these processes take
        "KEEL_DATA_DIR": str(tmp_path / "data"),
    }
    code, out = await keel({**env, "KEEL_CODEC": "maybe"}, "gates", timeout=60)
    assert code == 2 and "invalid settings" in out and "codec: Input should be 'on' or 'off'" in out
    assert "Traceback" not in out
    short = "k1:" + base64.b64encode(b"sixteen byte key").decode()
    code, out = await keel({**env, "KEEL_CODEC_KEYS": short}, "worker", timeout=60)
    assert code == 2 and "key 'k1' is 16 bytes; AES-256 needs 32" in out, out
    assert short.split(":")[1] not in out and "Traceback" not in out
