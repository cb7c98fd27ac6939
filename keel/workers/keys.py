"""The worker's signing key and trusted keys, from files.

``KEEL_SIGNING_KEY_FILE`` names the private key (PEM, PKCS#8, unencrypted; mode 0600);
unset, the key is ``KEEL_DATA_DIR/keys/signing-key.pem``, generated on first use, so a dev
machine needs no set-up. ``KEEL_TRUSTED_KEYS_FILE`` adds public keys (``keel keys export``
writes that file): to rotate, give workers a new key and keep the old public key trusted.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from keel.contracts.reviews import ReviewerTrust, TrustedReviewerKey
from keel.contracts.signing import Keyring, SigningKey, WorkerKeys
from keel.errors import KeelUserError
from keel.settings import KeelSettings

DEFAULT_KEY_NAME = "keys/signing-key.pem"
REVIEWER_KEYS_NAME = "keys/reviewer-keys.json"
"""Where an embedded inbox registers its key, under the data directory."""


def signing_key_path(settings: KeelSettings) -> Path:
    """Where the worker's private key is (or will be generated)."""
    return settings.signing_key_file or settings.data_dir / DEFAULT_KEY_NAME


def load_worker_keys(settings: KeelSettings) -> WorkerKeys:
    """The signing key and keyring ``settings`` name (the key generated if it is the default
    one and missing).

    Raises:
        KeelUserError: a configured file is missing, unreadable or not a key.
    """
    path = signing_key_path(settings)
    if settings.signing_key_file is None and not path.exists():
        write_new_key(path)
    return WorkerKeys(
        read_signing_key(path),
        read_keyring(settings.trusted_keys_file),
        reviewers=lambda: load_reviewer_trust(settings),
    )


def load_reviewer_trust(settings: KeelSettings) -> ReviewerTrust:
    """The keys trusted to sign review decisions: ``data_dir/keys/reviewer-keys.json`` (if
    present) and ``settings.reviewer_keys_file``, whose entries win.

    Raises:
        KeelUserError: a file is unreadable or not a reviewer trust file.
    """
    trust = ReviewerTrust()
    default = settings.data_dir / REVIEWER_KEYS_NAME
    if default.exists():
        trust = trust.merged(read_reviewer_trust(default))
    if settings.reviewer_keys_file is not None:
        trust = trust.merged(read_reviewer_trust(settings.reviewer_keys_file))
    return trust


def read_reviewer_trust(path: Path) -> ReviewerTrust:
    """The reviewer trust file ``path``.

    Raises:
        KeelUserError: the file is missing, unreadable or malformed (a key id that does not
            match its key counts as malformed).
    """
    from pydantic import ValidationError

    from keel.contracts.signing import Keyring

    try:
        trust = ReviewerTrust.model_validate_json(path.read_bytes())
        for entry in trust.keys:  # the id must name the key it stands beside
            Keyring.from_json({"keys": [{"key_id": entry.key_id, "public_key": entry.public_key}]})
    except OSError as err:
        raise KeelUserError(f"reviewer keys {path}: {err.strerror or err}") from None
    except (ValidationError, ValueError) as err:
        raise KeelUserError(f"reviewer keys {path}: {err}") from None
    return trust


def trust_reviewer_key(settings: KeelSettings, entry: TrustedReviewerKey) -> Path:
    """Add ``entry`` to ``data_dir/keys/reviewer-keys.json`` (replacing one of the same key
    id), written whole under a temporary name and renamed, so a worker never reads half a
    file. Returns the file's path."""
    path = settings.data_dir / REVIEWER_KEYS_NAME
    trust = read_reviewer_trust(path) if path.exists() else ReviewerTrust()
    trust = trust.merged(ReviewerTrust(keys=[entry]))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    temporary.write_text(trust.model_dump_json(indent=2, exclude_none=True) + "\n")
    os.replace(temporary, path)
    return path


def read_signing_key(path: Path) -> SigningKey:
    """The Ed25519 private key in the PEM file ``path``.

    Raises:
        KeelUserError: the file is missing or holds no Ed25519 private key.
    """
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as err:
        raise KeelUserError(f"signing key {path}: {err.strerror or err}") from None
    except (ValueError, TypeError) as err:
        raise KeelUserError(f"signing key {path} is not an unencrypted PEM key: {err}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeelUserError(f"signing key {path} is not an Ed25519 key")
    return SigningKey(key)


def read_keyring(path: Path | None) -> Keyring:
    """The public keys in the keyring file ``path`` (empty when ``path`` is None).

    Raises:
        KeelUserError: the file is missing or is not a keyring.
    """
    if path is None:
        return Keyring()
    try:
        return Keyring.from_json(json.loads(path.read_text()))
    except OSError as err:
        raise KeelUserError(f"trusted keys {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise KeelUserError(f"trusted keys {path}: {err}") from None


def write_new_key(path: Path) -> SigningKey:
    """Generate a key and write it to ``path`` (mode 0600); if another process wrote one
    there first, that one is kept and returned."""
    key = SigningKey.generate()
    pem = key.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked into place: a reader never sees a
    # half-written key, and of two processes generating at once the first link wins.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return read_signing_key(path)
    finally:
        temporary.unlink()
    return key


def write_keyring(keyring: Keyring, path: Path) -> None:
    """Write ``keyring`` as a keyring file."""
    path.write_text(json.dumps(keyring.to_json(), indent=2) + "\n")


def load_reviewer_key(settings: KeelSettings) -> SigningKey:
    """The CLI's reviewer key (``KEEL_REVIEWER_KEY_FILE``).

    Raises:
        KeelUserError: none is configured, or the file holds no Ed25519 key.
    """
    if settings.reviewer_key_file is None:
        raise KeelUserError(
            "keel approve and keel reject sign the decision with your reviewer key: set "
            "KEEL_REVIEWER_KEY_FILE (`keel keys reviewer FILE --reviewer NAME --role ROLE` "
            "makes one and prints the entry the workers must trust), or decide in the inbox"
        )
    return read_signing_key(settings.reviewer_key_file.expanduser())


def trusted_keyring(settings: KeelSettings, path: str | None = None) -> Keyring:
    """The keys a ledger's signatures are checked against: the keyring file ``path`` alone
    when given; else ``KEEL_TRUSTED_KEYS_FILE`` and this machine's worker key, if it has one
    (the dev default: a worker and the CLI on one machine share ``data_dir``).

    Raises:
        KeelUserError: a keyring file is missing or is not a keyring.
    """
    if path is not None:
        return read_keyring(Path(path))
    keyring = read_keyring(settings.trusted_keys_file)
    local = signing_key_path(settings)
    if local.is_file():
        try:
            keyring.add(read_signing_key(local).public_key)
        except KeelUserError as exc:
            print(f"keel: note: {_printable(str(exc))}; not trusted", file=sys.stderr)
    return keyring


def _printable(text: str) -> str:
    """``text`` with control characters escaped (it may quote a file's contents)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
