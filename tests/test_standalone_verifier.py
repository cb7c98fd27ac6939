"""``verifier/keel_verify.py``, the auditors' verifier: under 100 lines, no Keel imports; it
passes a real export and fails each forgery, run as a subprocess with the venv's python."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from temporalio.testing import WorkflowEnvironment

from keel.contracts.signing import raw_public_key
from keel.offline import OfflineProvider
from keel.testing import offline_settings
from keel.workers.apps import resolve_apps
from keel.workers.keys import load_worker_keys
from keel.workers.runtime import build_worker, connect
from tests.conftest import BIN, CODEC_KEYS, codec_settings
from tests.helpers import decide, review, start_review, top_level_imports, wait_for_gate
from tests.ledger_forgeries import (
    FORGERIES,
    RealLedgers,
    forged_links,
    index_of,
    record_ledgers,
    reseal,
    with_events,
    write_export,
    write_keyring,
)

VERIFIER = Path(__file__).parent.parent / "verifier" / "keel_verify.py"


@pytest.fixture(scope="module")
async def real(
    ts_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> RealLedgers:
    return await record_ledgers(ts_env.client, tmp_path_factory.mktemp("standalone"))


async def verify(export: Path, keys: Path, *options: str, expect: int) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *[o for o in options if o.startswith("-O")],
        str(VERIFIER),
        str(export),
        "--keys",
        str(keys),
        *[o for o in options if not o.startswith("-O")],
        cwd=export.parent,
        env={"PATH": os.environ.get("PATH", "")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    text = out.decode()
    assert proc.returncode == expect, f"keel_verify -> {proc.returncode}:\n{text}"
    return text


def test_it_is_under_100_lines_and_imports_only_stdlib_rfc8785_and_cryptography() -> None:
    source = VERIFIER.read_text()
    assert len(source.splitlines()) < 100
    assert top_level_imports(source) == {
        "argparse",
        "base64",
        "hashlib",
        "json",
        "sys",
        "rfc8785",
        "cryptography",
    }
    assert "assert " not in source  # python -O would skip every check


async def test_a_real_export_verifies(real: RealLedgers, tmp_path: Path) -> None:
    export = write_export(tmp_path / "ledgers.jsonl", real.review + real.incident)
    out = await verify(export, real.keyring, expect=0)
    assert f"{real.review_id!r}: verified ({len(real.review)} events, signed by ed25519:" in out
    assert f"at #{len(real.review) - 1}, 0 unsigned events)" in out
    assert f"{real.incident_id!r}: verified" in out


FAILS_WITH = {
    "changed-field": "hash does not match the event",
    "dropped-event": "sequence number",
    "reordered-pair": "sequence number",
    "resealed-chain": "does not match the signed content",
    "injected-field": "does not match the signed content",  # no schema here: the signature
    "untrusted-key": "an untrusted key",
    "truncated": "1 events unsigned at the end",
    "truncated-to-an-earlier-head": "no completion signature",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
async def test_each_forgery_fails(real: RealLedgers, tmp_path: Path, name: str) -> None:
    forged = FORGERIES[name](real.events(real.review))
    export = write_export(tmp_path / f"{name}.jsonl", with_events(real.review, forged))
    out = await verify(export, real.keyring, expect=1)
    assert f"{real.review_id!r}: FAILED at event #" in out and FAILS_WITH[name] in out, out


def test_every_forgery_has_its_expected_failure() -> None:
    assert set(FAILS_WITH) == set(FORGERIES)


@pytest.mark.parametrize("name", ["link-to-another-run", "link-to-another-head"])
async def test_a_forged_continue_as_new_link_fails(
    real: RealLedgers, tmp_path: Path, name: str
) -> None:
    export = write_export(tmp_path / f"{name}.jsonl", forged_links(real.incident)[name])
    out = await verify(export, real.keyring, expect=1)
    why = "another run" if name.endswith("run") else "another previous head"
    assert f"{real.incident_id!r}: FAILED" in out and f"the link names {why}" in out


async def test_untrusted_keys_and_python_O_still_fail(real: RealLedgers, tmp_path: Path) -> None:
    export = write_export(tmp_path / "ledgers.jsonl", real.review)
    out = await verify(export, real.other_keyring, expect=1)
    assert "an untrusted key" in out
    forged = write_export(
        tmp_path / "forged.jsonl",
        with_events(real.review, FORGERIES["resealed-chain"](real.events(real.review))),
    )
    assert "FAILED" in await verify(forged, real.keyring, "-O", expect=1)


async def test_unreadable_input_exits_2(real: RealLedgers, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert "unreadable input" in await verify(bad, real.keyring, expect=2)
    repeated = tmp_path / "repeated.jsonl"
    line = json.dumps(real.review[0])
    repeated.write_text(line[:-1] + ', "event": {}}\n')
    assert "a repeated key" in await verify(repeated, real.keyring, expect=2)


async def test_a_real_keel_export_from_a_dev_server_verifies_and_its_forgery_fails(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    address = dev_env.client.service_client.config.target_host
    task_queue = f"standalone-{uuid.uuid4()}"
    client = await connect(codec_settings(), address=address)
    async with build_worker(
        client,
        offline_settings(),
        apps=resolve_apps(),
        task_queue=task_queue,
        provider=OfflineProvider(),
    ):
        handle = await start_review(client, task_queue, "medium", prefix="standalone")
        await wait_for_gate(handle, "standard-review")
        await decide(handle, review("standard-review", "approve", "legal.sam"))
        await handle.result()
        export = tmp_path / "export.jsonl"
        env = {**os.environ, "TEMPORAL_ADDRESS": address, "KEEL_CODEC_KEYS": CODEC_KEYS}
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "keel"), "export", "--query", f"WorkflowId = '{handle.id}'",
            "--out", str(export), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, out.decode()
    keys = write_keyring(tmp_path / "keys.json", load_worker_keys(offline_settings()).signing)
    assert f"{handle.id!r}: verified" in await verify(export, keys, expect=0)

    records = [json.loads(line) for line in export.read_text().splitlines()]
    events = [r["event"] for r in records]
    i = index_of(events, "GateDecided")
    events[i]["reviewer"] = "gc.morgan"
    forged = write_export(tmp_path / "forged.jsonl", with_events(records, reseal(events, i)))
    assert "does not match the signed content" in await verify(forged, keys, expect=1)


def test_the_by_hand_checks_in_docs_auditors_md_hold_on_a_real_ledger(real: RealLedgers) -> None:
    """The two snippets of "Checking by hand" run as written: on a real event and signature
    they pass; on a changed event or signature they raise."""
    doc = (VERIFIER.parent.parent / "docs" / "auditors.md").read_text()
    by_hand = doc[doc.index("## Checking by hand") :]
    event_check, signature_check = (
        block.split("\n", 1)[1] for block in by_hand.split("```python")[1:3]
    )
    event_check, signature_check = (b[: b.index("```")] for b in (event_check, signature_check))
    events = real.events(real.review)
    signed = events[index_of(events, "ChainHeadSigned", reason="completion")]
    key = load_worker_keys(offline_settings()).signing.public_key
    for e in events:
        exec(event_check, {"e": e})
    exec(signature_check, {"s": signed, "raw": raw_public_key(key)})
    with pytest.raises(AssertionError):
        exec(event_check, {"e": {**events[1], "seq": 99}})
    with pytest.raises(InvalidSignature):
        exec(
            signature_check,
            {"s": {**signed, "reason": "gate-opened:x"}, "raw": raw_public_key(key)},
        )
