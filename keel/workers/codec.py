"""History encryption: a Temporal payload codec doing AES-256-GCM with named, rotatable keys.

Every payload a Keel client or worker sends through its data converter (workflow and
activity inputs and results, signals, updates, queries and their answers, failure messages,
stack traces and details, the workflow summary) is serialized whole (metadata and data) and
sealed with AES-256-GCM under the current key of the keyring, with a fresh random 96-bit
nonce. Not payloads, so not encrypted: workflow ids and types, activity and timer ids, task
queues, search attributes (``KeelPendingGates`` holds gate names) and headers. What reaches
the server::

    metadata: {"encoding": "binary/keel-encrypted", "keel-key-id": "<key id>"}
    data:     nonce (12 bytes) || ciphertext || GCM tag (16 bytes)

The associated data binds the outer ``encoding`` and ``keel-key-id`` (a payload relabelled
with another key id fails to open); the original metadata, its ``encoding`` included, is
inside the ciphertext and authenticated with it. Decoding accepts any key of the keyring, so
rotation is: add the new key to every process as a non-current key, then make it current
(first), then drop the old one once no history needs it.

A payload that is not ``binary/keel-encrypted`` (sent by a raw caller without the codec)
passes through ``decode`` unchanged: Keel's converters then read or refuse it as they
always do. An encrypted payload under an unknown key id, or one whose ciphertext or labels
were changed, raises ``PayloadDecryptionError`` (clients, the CLI, the codec server); a
worker's codec (``refusing=True``) turns it into a payload that Keel's refusing converter
rejects with the reason, so the run fails with ``UndecodableInput`` instead of failing
every workflow task.

Keys: ``KEEL_CODEC_KEYS`` (``id1:base64key,id2:base64key``; the first is current) or the
file ``KEEL_CODEC_KEY_FILE`` (the same, one key per line or comma-separated, ``#``
comments). ``KEEL_CODEC=off`` turns encryption off. See ``codec_keyring`` for what happens
when neither is set.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from keel.errors import KeelUserError
from keel.settings import KeelSettings

ENCODING = b"binary/keel-encrypted"
"""The ``encoding`` metadata of an encrypted payload."""
KEY_ID = "keel-key-id"
"""The metadata entry naming the key a payload is encrypted with."""
REFUSED_ENCODING = b"binary/keel-undecodable"
"""What a worker's codec turns an unopenable payload into (its data is the reason), for
``keel.workers.runtime.RefusingPayloadConverter`` to refuse."""
NONCE_BYTES = 12
KEY_BYTES = 32
DEV_KEY_FILE = "keys/codec-keys"
"""Under ``KEEL_DATA_DIR``: the key ``keel dev`` and ``keel demo`` generate when none is
configured."""
_AAD_PREFIX = b"keel-codec/1\x00"
_KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LOOPBACK_HOSTS = {"localhost", "::1", "[::1]"}

HOW_TO_CONFIGURE = (
    "set KEEL_CODEC_KEYS=<id>:<base64 of 32 random bytes> (e.g. the output of "
    "`python -c \"import base64,os; print('k1:' + base64.b64encode(os.urandom(32)).decode())\"`"
    "), or KEEL_CODEC_KEY_FILE=<file holding that line>, with the same keys on every worker and "
    "client; or KEEL_CODEC=off to keep history in plaintext"
)


class PayloadDecryptionError(Exception):
    """An encrypted payload could not be opened: unknown key id, or changed bytes."""


@dataclass(frozen=True)
class CodecKeyring:
    """AES-256 keys by id; ``current`` encrypts, every key decrypts.

    Attributes:
        current: the id new payloads are encrypted with (``None``: decode only).
        keys: key bytes (32 each) by id.
    """

    current: str | None
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.current is not None and self.current not in self.keys:
            raise KeelUserError(f"codec keyring: the current key {self.current!r} is not in it")

    @classmethod
    def parse(cls, text: str, *, source: str = "KEEL_CODEC_KEYS") -> CodecKeyring:
        """The keyring in ``text``: ``id:base64key`` entries separated by commas or lines
        (``#`` starts a comment); the first entry is the current key.

        Raises:
            KeelUserError: an entry is malformed, a key is not 32 bytes, an id repeats, or
                there is no entry (the message names ``source``, never a key).
        """
        keys: dict[str, bytes] = {}
        for entry in _entries(text):
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep or not _KEY_ID_PATTERN.fullmatch(key_id):
                raise KeelUserError(
                    f"{source}: an entry is not <id>:<base64 key> with an id of letters, digits, "
                    f"'.', '_' or '-'; {HOW_TO_CONFIGURE}"
                )
            if key_id in keys:
                raise KeelUserError(f"{source}: key id {key_id!r} appears twice")
            keys[key_id] = _key_bytes(encoded.strip(), key_id, source)
        if not keys:
            raise KeelUserError(f"{source} holds no key; {HOW_TO_CONFIGURE}")
        return cls(next(iter(keys)), keys)

    def key(self, key_id: str) -> bytes:
        """The key ``key_id``.

        Raises:
            PayloadDecryptionError: the keyring has no such key.
        """
        found = self.keys.get(key_id)
        if found is None:
            known = ", ".join(sorted(self.keys)) or "none"
            raise PayloadDecryptionError(
                f"payload encrypted with key id {key_id[:64]!r}, which this process does not "
                f"have (known: {known}); add that key to KEEL_CODEC_KEYS or KEEL_CODEC_KEY_FILE"
            )
        return found


def _entries(text: str) -> list[str]:
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    return [part.strip() for line in lines for part in line.split(",") if part.strip()]


def _key_bytes(encoded: str, key_id: str, source: str) -> bytes:
    try:
        raw = base64.b64decode(encoded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise KeelUserError(f"{source}: key {key_id!r} is not base64") from None
    if len(raw) != KEY_BYTES:
        raise KeelUserError(
            f"{source}: key {key_id!r} is {len(raw)} bytes; AES-256 needs {KEY_BYTES}"
        )
    return raw


def new_key_entry(key_id: str = "k1") -> str:
    """A fresh ``id:base64key`` entry (32 random bytes)."""
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


def _aad(key_id: bytes) -> bytes:
    return _AAD_PREFIX + ENCODING + b"\x00" + key_id


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads, with the key id in the payload's metadata.

    Args:
        keyring: the keys; its current key encrypts.
        refusing: turn a payload that cannot be opened into a ``REFUSED_ENCODING`` payload
            carrying the reason (workers: the run is refused, not wedged) instead of raising.
    """

    def __init__(self, keyring: CodecKeyring, *, refusing: bool = False) -> None:
        self.keyring = keyring
        self.refusing = refusing

    def with_refusing(self, refusing: bool = True) -> EncryptionCodec:
        """This codec over the same keys, refusing (or raising) on unopenable payloads."""
        return EncryptionCodec(self.keyring, refusing=refusing)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Each payload sealed under the current key.

        Raises:
            KeelUserError: the keyring is decode-only.
        """
        return [self.seal(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Each encrypted payload opened; any other payload unchanged.

        Raises:
            PayloadDecryptionError: unknown key id or changed bytes (unless ``refusing``).
        """
        return [self.open(payload) for payload in payloads]

    def seal(self, payload: Payload) -> Payload:
        """``payload`` encrypted under the current key (fresh nonce)."""
        key_id = self.keyring.current
        if key_id is None:
            raise KeelUserError(f"no codec key to encrypt with; {HOW_TO_CONFIGURE}")
        nonce = os.urandom(NONCE_BYTES)
        label = key_id.encode()
        sealed = AESGCM(self.keyring.keys[key_id]).encrypt(
            nonce, payload.SerializeToString(), _aad(label)
        )
        return Payload(metadata={"encoding": ENCODING, KEY_ID: label}, data=nonce + sealed)

    def open(self, payload: Payload) -> Payload:
        """``payload`` decrypted if it is encrypted, else ``payload`` itself."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        try:
            return _open(self.keyring, payload)
        except PayloadDecryptionError as err:
            if not self.refusing:
                raise
            return Payload(metadata={"encoding": REFUSED_ENCODING}, data=str(err).encode())


def _open(keyring: CodecKeyring, payload: Payload) -> Payload:
    label = payload.metadata.get(KEY_ID, b"")
    key_id = label.decode("utf-8", "replace")
    key = keyring.key(key_id)
    data = payload.data
    if len(data) < NONCE_BYTES + 16:
        raise PayloadDecryptionError(f"encrypted payload (key {key_id!r}) is truncated")
    try:
        plain = AESGCM(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _aad(label))
    except InvalidTag:
        raise PayloadDecryptionError(
            f"encrypted payload (key {key_id!r}) failed authentication: its ciphertext or "
            "labels were changed, or it was sealed with another key of the same id"
        ) from None
    inner = Payload()
    inner.ParseFromString(plain)
    return inner


# --- which keys a process uses ---------------------------------------------------------


def dev_key_path(settings: KeelSettings) -> Path:
    """Where ``keel dev`` / ``keel demo`` keep the generated key."""
    return settings.data_dir / DEV_KEY_FILE


def is_loopback(target: str) -> bool:
    """Whether the Temporal address ``host:port`` is on this machine."""
    host = target.rpartition(":")[0] if ":" in target else target
    host = host.lower() or "127.0.0.1"
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def codec_keyring(settings: KeelSettings, *, target: str, embedded: bool) -> CodecKeyring | None:
    """The keys a process talking to ``target`` encrypts history with; ``None`` when
    ``KEEL_CODEC=off``.

    In order: ``KEEL_CODEC_KEYS``; the file ``KEEL_CODEC_KEY_FILE``; the dev key
    ``KEEL_DATA_DIR/keys/codec-keys``, generated if missing when ``embedded`` (``keel dev``,
    ``keel demo``), used if present when ``target`` is a loopback address (the CLI or a worker
    beside ``keel dev``). Otherwise encryption cannot be on, and the process refuses to
    start rather than write plaintext history.

    Raises:
        KeelUserError: no key is configured for a non-local server, or a configured one is
            malformed or unreadable (the message says how to configure one).
    """
    if settings.codec == "off":
        return None
    if settings.codec_keys is not None:
        return CodecKeyring.parse(settings.codec_keys.get_secret_value())
    if settings.codec_key_file is not None:
        return read_key_file(settings.codec_key_file)
    path = dev_key_path(settings)
    if embedded and not path.exists():
        write_key_file(path, new_key_entry("dev-1"))
    if path.exists() and (embedded or is_loopback(target)):
        return read_key_file(path)
    raise KeelUserError(
        f"history encryption is on, and no codec key is configured for the Temporal server at "
        f"{target}: {HOW_TO_CONFIGURE}"
    )


def read_key_file(path: Path) -> CodecKeyring:
    """The keyring in the file ``path``.

    Raises:
        KeelUserError: the file is unreadable or malformed.
    """
    try:
        text = path.read_text()
    except OSError as err:
        raise KeelUserError(f"codec key file {path}: {err.strerror or err}") from None
    return CodecKeyring.parse(text, source=f"codec key file {path}")


def write_key_file(path: Path, entry: str) -> None:
    """Write ``entry`` to the file ``path`` (owner-only) unless it exists: of two processes
    generating at once, one key wins and both use it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(f"# Keel dev codec key (history encryption)\n{entry}\n")
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)  # atomic, and never replaces a key already there
    finally:
        draft.unlink()
