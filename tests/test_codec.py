"""History encryption: the AES-256-GCM payload codec, its keyring and where its keys come from."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError

from keel import testing
from keel.errors import KeelUserError
from keel.scenarios.contract_review import APP as CONTRACT_REVIEW
from keel.testing import time_skipping_env
from keel.workers.codec import (
    ENCODING,
    KEY_ID,
    NONCE_BYTES,
    REFUSED_ENCODING,
    CodecKeyring,
    EncryptionCodec,
    PayloadDecryptionError,
    codec_keyring,
    dev_key_path,
    new_key_entry,
)
from keel.workers.runtime import keel_data_converter, worker_data_converter
from tests.conftest import offline_settings
from tests.helpers import start_review

OLD = new_key_entry("2025-q4")
NEW = new_key_entry("2026-q1")


def json_payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


async def seal(codec: EncryptionCodec, payload: Payload) -> Payload:
    return (await codec.encode([payload]))[0]


async def unseal(codec: EncryptionCodec, payload: Payload) -> Payload:
    return (await codec.decode([payload]))[0]


async def test_a_payload_round_trips_and_is_stored_as_ciphertext_under_its_key_id() -> None:
    codec = EncryptionCodec(CodecKeyring.parse(NEW))
    original = json_payload("ada@example.com")
    sealed = await seal(codec, original)
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID] == b"2026-q1"
    assert set(sealed.metadata) == {"encoding", KEY_ID}  # the original encoding is hidden
    assert b"ada@example.com" not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString()
    assert await unseal(codec, sealed) == original


async def test_each_payload_gets_a_fresh_nonce() -> None:
    codec = EncryptionCodec(CodecKeyring.parse(NEW))
    first, second = await codec.encode([json_payload("same"), json_payload("same")])
    assert first.data[:NONCE_BYTES] != second.data[:NONCE_BYTES]
    assert first.data != second.data


async def test_rotation_new_payloads_use_the_new_key_and_old_ones_still_open() -> None:
    before = EncryptionCodec(CodecKeyring.parse(OLD))
    written_before = await seal(before, json_payload("order 1042"))
    rotated = EncryptionCodec(CodecKeyring.parse(f"{NEW},{OLD}"))
    written_after = await seal(rotated, json_payload("order 1043"))
    assert written_after.metadata[KEY_ID] == b"2026-q1"
    assert await unseal(rotated, written_before) == json_payload("order 1042")
    assert await unseal(rotated, written_after) == json_payload("order 1043")
    # A process that only has the old key cannot read what the new one sealed.
    with pytest.raises(PayloadDecryptionError, match=r"key id '2026-q1'.*known: 2025-q4"):
        await unseal(before, written_after)


async def test_a_changed_ciphertext_is_refused() -> None:
    codec = EncryptionCodec(CodecKeyring.parse(NEW))
    sealed = await seal(codec, json_payload("refund $5,000"))
    flipped = bytearray(sealed.data)
    flipped[NONCE_BYTES + 3] ^= 0x01
    tampered = Payload(metadata=dict(sealed.metadata), data=bytes(flipped))
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await unseal(codec, tampered)
    truncated = Payload(metadata=dict(sealed.metadata), data=sealed.data[:20])
    with pytest.raises(PayloadDecryptionError, match="truncated"):
        await unseal(codec, truncated)


async def test_a_relabelled_key_id_is_refused_even_when_that_key_is_known() -> None:
    """The key id is bound as associated data: a payload cannot be pointed at another key."""
    both = CodecKeyring.parse(f"{NEW},{OLD}")
    codec = EncryptionCodec(both)
    sealed = await seal(codec, json_payload("x"))
    relabelled = Payload(metadata={"encoding": ENCODING, KEY_ID: b"2025-q4"}, data=sealed.data)
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await unseal(codec, relabelled)
    # The same key bytes under another id: the label is still authenticated.
    same_key = CodecKeyring("other", {"other": both.keys["2026-q1"], **both.keys})
    copied = Payload(metadata={"encoding": ENCODING, KEY_ID: b"other"}, data=sealed.data)
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await unseal(EncryptionCodec(same_key), copied)


async def test_an_unknown_key_id_is_refused_with_the_ids_it_knows() -> None:
    codec = EncryptionCodec(CodecKeyring.parse(OLD))
    foreign = await seal(
        EncryptionCodec(CodecKeyring.parse(new_key_entry("elsewhere"))), json_payload("x")
    )
    with pytest.raises(PayloadDecryptionError, match=r"'elsewhere'.*known: 2025-q4"):
        await unseal(codec, foreign)


async def test_plaintext_payloads_from_raw_callers_pass_through_decode_unchanged() -> None:
    codec = EncryptionCodec(CodecKeyring.parse(NEW))
    raw = [json_payload("raw caller"), Payload(metadata={"encoding": b"binary/null"})]
    assert await codec.decode(raw) == raw


async def test_a_workers_codec_turns_an_unopenable_payload_into_a_refused_input() -> None:
    """On a worker the run is refused (UndecodableInput), not every workflow task failed."""
    keyring = CodecKeyring.parse(NEW)
    sealed = await seal(EncryptionCodec(keyring), json_payload("x"))
    forged = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + b"\x00")
    converter = worker_data_converter(keyring)
    assert converter.payload_codec is not None
    [refused] = await converter.payload_codec.decode([forged])
    assert refused.metadata["encoding"] == REFUSED_ENCODING
    with pytest.raises(ApplicationError) as raised:
        converter.payload_converter.from_payloads([refused], [str])
    assert raised.value.type == "UndecodableInput" and raised.value.non_retryable
    assert "failed authentication" in raised.value.message


async def test_the_client_converter_encrypts_values_and_failure_messages() -> None:
    converter = keel_data_converter(CodecKeyring.parse(NEW))
    [payload] = await converter.encode(["customer ada@example.com"])
    assert payload.metadata["encoding"] == ENCODING
    assert await converter.decode([payload], [str]) == ["customer ada@example.com"]
    failure = Failure()
    await converter.encode_failure(ApplicationError("card 4111 1111 1111 1111"), failure)
    assert "4111" not in failure.message and b"4111" not in failure.SerializeToString()
    decoded = await converter.decode_failure(failure)
    assert "card 4111 1111 1111 1111" in str(decoded)


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=4096),
    metadata=st.dictionaries(st.text(min_size=1, max_size=20), st.binary(max_size=64), max_size=4),
)
def test_any_payload_round_trips(data: bytes, metadata: dict[str, bytes]) -> None:
    codec = EncryptionCodec(CodecKeyring.parse(f"{NEW},{OLD}"))
    original = Payload(metadata=metadata, data=data)
    sealed = codec.seal(original)
    assert codec.open(sealed) == original
    if len(data) >= 8:
        assert data not in sealed.data


# --- keyring parsing and where keys come from ---------------------------------------------


def test_a_keyring_parses_ids_and_keys_and_the_first_is_current() -> None:
    ring = CodecKeyring.parse(f" {NEW} ,\n# rotated out next quarter\n{OLD}\n")
    assert ring.current == "2026-q1" and set(ring.keys) == {"2026-q1", "2025-q4"}
    urlsafe = base64.urlsafe_b64encode(os.urandom(32)).decode()
    assert CodecKeyring.parse(f"u:{urlsafe}").keys["u"] == base64.urlsafe_b64decode(urlsafe)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "holds no key"),
        ("nokey", "not <id>:<base64 key>"),
        ("bad id:" + base64.b64encode(os.urandom(32)).decode(), "not <id>:<base64 key>"),
        ("k:!!!not-base64", "not base64"),
        ("k:" + base64.b64encode(os.urandom(16)).decode(), "16 bytes; AES-256 needs 32"),
        (f"{NEW},{NEW}", "appears twice"),
    ],
)
def test_a_malformed_keyring_is_refused_saying_what_to_fix(text: str, problem: str) -> None:
    with pytest.raises(KeelUserError, match=problem) as raised:
        CodecKeyring.parse(text)
    secret = NEW.split(":", 1)[1]
    assert secret not in str(raised.value)  # a message never shows a key


def test_keys_come_from_env_then_file(tmp_path: Path) -> None:
    from_env = codec_keyring(
        offline_settings(codec="on", codec_keys=NEW, data_dir=tmp_path),
        target="temporal.prod:7233",
        embedded=False,
    )
    assert from_env is not None and from_env.current == "2026-q1"
    keys = tmp_path / "codec.keys"
    keys.write_text(f"# ops-managed\n{OLD}\n")
    from_file = codec_keyring(
        offline_settings(codec="on", codec_key_file=keys, data_dir=tmp_path),
        target="temporal.prod:7233",
        embedded=False,
    )
    assert from_file is not None and from_file.current == "2025-q4"
    with pytest.raises(KeelUserError, match=r"codec key file .*missing"):
        codec_keyring(
            offline_settings(codec="on", codec_key_file=tmp_path / "missing", data_dir=tmp_path),
            target="x:1",
            embedded=False,
        )


def test_off_means_no_codec(tmp_path: Path) -> None:
    settings_off = offline_settings(codec="off", data_dir=tmp_path)
    assert codec_keyring(settings_off, target="temporal.prod:7233", embedded=False) is None


def test_with_no_key_a_remote_server_is_refused_and_the_message_says_how_to_configure(
    tmp_path: Path,
) -> None:
    on = offline_settings(codec="on", data_dir=tmp_path)
    with pytest.raises(KeelUserError) as raised:
        codec_keyring(on, target="temporal.prod:7233", embedded=False)
    message = str(raised.value)
    assert "temporal.prod:7233" in message
    assert "KEEL_CODEC_KEYS" in message and "KEEL_CODEC_KEY_FILE" in message
    assert "KEEL_CODEC=off" in message
    # Nor does a local one without the dev key keel dev writes.
    with pytest.raises(KeelUserError):
        codec_keyring(on, target="127.0.0.1:7233", embedded=False)


def test_the_embedded_stack_generates_a_dev_key_once_and_local_clients_use_it(
    tmp_path: Path,
) -> None:
    on = offline_settings(codec="on", data_dir=tmp_path)
    generated = codec_keyring(on, target="127.0.0.1:7233", embedded=True)
    path = dev_key_path(on)
    assert generated is not None and path.exists()
    assert path.stat().st_mode & 0o077 == 0  # owner only
    again = codec_keyring(on, target="127.0.0.1:7233", embedded=True)
    assert again == generated  # persisted: executions stay readable across runs
    local = codec_keyring(on, target="localhost:7233", embedded=False)
    assert local == generated
    # The dev key is never used for a server elsewhere.
    with pytest.raises(KeelUserError):
        codec_keyring(on, target="temporal.prod:7233", embedded=False)


# --- the test kit, encrypted -----------------------------------------------------------------


async def test_the_test_kit_runs_encrypted_when_given_keys_and_replays_with_them(
    tmp_path: Path,
) -> None:
    keyring = CodecKeyring.parse(NEW)
    async with time_skipping_env(keyring=keyring) as env:
        async with testing.keel_worker(
            env.client, apps=[CONTRACT_REVIEW], settings=offline_settings(data_dir=tmp_path)
        ) as task_queue:
            handle = await start_review(env.client, task_queue, "low", prefix="kit-encrypted")
            assert (await handle.result()).outcome == "approved"
        history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.input.payloads[0].metadata["encoding"] == ENCODING
    assert b"Brightline Analytics" not in history.events[0].SerializeToString()
    path = tmp_path / "kit-encrypted.json"
    path.write_text(history.to_json())
    await testing.assert_replays([path], apps=[CONTRACT_REVIEW], keyring=keyring)
    # Without the keys the history cannot be read, so it does not replay.
    [(_, outcome)] = await testing.replay_histories([path], apps=[CONTRACT_REVIEW])
    assert outcome.replay_failure is not None
