"""Keel's signatures: what they bind, which keys count, and the worker's key files."""

from __future__ import annotations

import json
import os
import stat
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment

from keel.contracts.signing import Keyring, Signature, SigningKey, WorkerKeys, signing_bytes
from keel.errors import KeelUserError
from keel.testing import keel_worker, offline_settings
from keel.workers.keys import load_worker_keys, read_keyring, write_keyring, write_new_key

with workflow.unsafe.imports_passed_through():
    from keel.workflows.signing import sign, signature_problem

MESSAGE = {"workflow_id": "wf-1", "seq": 7, "head": "ab" * 32}


def test_a_signature_holds_for_its_message_and_purpose_only() -> None:
    key = SigningKey.generate()
    ring = Keyring([key.public_key])
    signature = key.sign("keel/test/1", MESSAGE)
    assert ring.valid("keel/test/1", MESSAGE, signature)
    assert not ring.valid("keel/other/1", MESSAGE, signature)
    assert not ring.valid("keel/test/1", {**MESSAGE, "seq": 8}, signature)
    assert "not a trusted key" in (ring.problem("keel/test/1", MESSAGE, _by_other_key()) or "")


def _by_other_key() -> Signature:
    return SigningKey.generate().sign("keel/test/1", MESSAGE)


def test_a_signature_with_garbage_bytes_is_refused_not_raised() -> None:
    key = SigningKey.generate()
    ring = Keyring([key.public_key])
    for garbage in ("", "!!!", "A" * 86, key.sign("keel/test/1", MESSAGE).signature[:-2]):
        forged = Signature(key_id=key.key_id, signature=garbage)
        assert ring.problem("keel/test/1", MESSAGE, forged) is not None


def test_the_signed_bytes_are_rfc8785_canonical() -> None:
    assert signing_bytes("p", {"b": 1, "a": [1.0, "é"]}) == (
        '{"message":{"a":[1,"é"],"b":1},"purpose":"p"}'.encode()
    )


def test_rotation_keeps_old_signatures_valid_when_the_old_key_stays_trusted(
    tmp_path: Path,
) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    signed_before = old.sign("keel/test/1", MESSAGE)
    write_keyring(Keyring([old.public_key]), tmp_path / "trusted.json")
    keys = WorkerKeys(new, read_keyring(tmp_path / "trusted.json"))
    assert keys.keyring.key_ids == sorted([old.key_id, new.key_id])
    assert keys.keyring.valid("keel/test/1", MESSAGE, signed_before)


def test_a_keyring_whose_key_id_does_not_match_its_key_is_refused(tmp_path: Path) -> None:
    ring = Keyring([SigningKey.generate().public_key]).to_json()
    ring["keys"][0]["key_id"] = SigningKey.generate().key_id
    (tmp_path / "k.json").write_text(json.dumps(ring))
    with pytest.raises(KeelUserError, match="does not match its key"):
        read_keyring(tmp_path / "k.json")


@pytest.mark.parametrize("text", ["", "[]", '{"keys": [{"public_key": "AAAA"}]}', "{"])
def test_a_malformed_keyring_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "k.json").write_text(text)
    with pytest.raises(KeelUserError, match="trusted keys"):
        read_keyring(tmp_path / "k.json")


def test_the_default_key_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    settings = offline_settings(data_dir=tmp_path)
    first = load_worker_keys(settings)
    again = load_worker_keys(settings)
    assert first.signing.key_id == again.signing.key_id
    path = tmp_path / "keys" / "signing-key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["signing-key.pem"]


def test_processes_generating_the_key_at_once_agree_on_one(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing-key.pem"
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: write_new_key(path).key_id, range(16)))
    assert len(ids) == 1


def test_a_configured_key_file_that_is_missing_or_not_a_key_is_a_clear_error(
    tmp_path: Path,
) -> None:
    missing = offline_settings(signing_key_file=tmp_path / "nope.pem")
    with pytest.raises(KeelUserError, match="signing key"):
        load_worker_keys(missing)
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(KeelUserError, match="not an unencrypted PEM key"):
        load_worker_keys(offline_settings(signing_key_file=tmp_path / "bad.pem"))


@workflow.defn(name="SigningProbe", sandboxed=True)
class SigningProbe:
    """Signs a message, then checks it as given and altered."""

    @workflow.run
    async def run(self, message: dict[str, Any]) -> list[str | None]:
        """Sign, check, check a forgery."""
        signature = await sign("keel/test/1", message)
        forged = {**message, "seq": -1}
        return [
            signature.key_id,
            await signature_problem("keel/test/1", message, signature),
            await signature_problem("keel/test/1", forged, signature),
        ]


async def test_workflow_code_signs_and_checks_through_the_worker(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = offline_settings(data_dir=tmp_path)
    expected = load_worker_keys(settings).signing.key_id
    worker = keel_worker(ts_env.client, apps=[], workflows=[SigningProbe], settings=settings)
    async with worker as tq:
        key_id, valid, forged = await ts_env.client.execute_workflow(
            SigningProbe.run, MESSAGE, id=f"sign-{uuid.uuid4()}", task_queue=tq
        )
    assert key_id == expected
    assert valid is None
    assert forged is not None and "does not match" in forged


def test_keel_keys_exports_the_worker_key_and_rotates_without_losing_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from keel.cli.main import run
    from keel.settings import KeelSettings

    # The CLI reads its settings once per process; here, on every run.
    cli_module = sys.modules[run.__module__]
    monkeypatch.setattr(cli_module, "get_settings", lambda: KeelSettings(_env_file=None))
    monkeypatch.setenv("KEEL_DATA_DIR", str(tmp_path / "data"))
    assert run(["keys", "export", "--out", str(tmp_path / "before.json")]) == 0
    old = read_keyring(tmp_path / "before.json")
    assert old.key_ids == [
        load_worker_keys(offline_settings(data_dir=tmp_path / "data")).signing.key_id
    ]

    assert run(["keys", "new", str(tmp_path / "new.pem")]) == 0
    assert run(["keys", "new", str(tmp_path / "new.pem")]) == 2  # never overwritten
    assert "never overwritten" in capsys.readouterr().err
    monkeypatch.setenv("KEEL_SIGNING_KEY_FILE", str(tmp_path / "new.pem"))
    monkeypatch.setenv("KEEL_TRUSTED_KEYS_FILE", str(tmp_path / "before.json"))
    assert run(["keys", "export"]) == 0
    after = Keyring.from_json(json.loads(capsys.readouterr().out))
    assert set(old.key_ids) < set(after.key_ids) and len(after) == 2
