"""Ed25519 signatures over canonical JSON: what Keel signs, and how a signature is checked.

A signed message is the RFC 8785 canonical JSON of ``{"purpose": P, "message": M}``; the
purpose (``keel/ledger-head/1``, ``keel/tool-task/1``, ...) keeps a signature made for one
use from being replayed for another. A key is named by its id, ``ed25519:`` and the first
16 hex digits of the sha256 of its raw public key, so a verifier can hold several keys
(rotation) and a signature says which one made it.

Pure: no I/O. Loading keys from files is ``keel.workers.keys``. ``cryptography`` is imported
only where a key is used, never at import time: workflow modules import this one, and a
sandbox (Temporal's default runner re-imports modules for each run) cannot load its native
extension.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from keel.contracts.reviews import ReviewerTrust


def signing_bytes(purpose: str, message: Mapping[str, Any]) -> bytes:
    """The exact bytes signed for ``message`` under ``purpose`` (RFC 8785 canonical JSON)."""
    return rfc8785.dumps({"purpose": purpose, "message": dict(message)})


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of ``public_key``."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """``ed25519:`` and the first 16 hex digits of the sha256 of the raw public key."""
    return "ed25519:" + hashlib.sha256(raw_public_key(public_key)).hexdigest()[:16]


def b64encode(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64decode(text: str) -> bytes:
    """The inverse of ``b64encode`` (padding optional).

    Raises:
        ValueError: ``text`` is not base64.
    """
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"not base64: {err}") from None


class Signature(BaseModel):
    """An Ed25519 signature and the id of the key that made it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str
    signature: str
    """URL-safe base64 (no padding) of the 64 signature bytes."""


class SigningKey:
    """A private Ed25519 key and its id."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def __repr__(self) -> str:
        return f"SigningKey({self.key_id})"

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    def sign(self, purpose: str, message: Mapping[str, Any]) -> Signature:
        """Sign ``message`` for ``purpose``."""
        raw = self._key.sign(signing_bytes(purpose, message))
        return Signature(key_id=self.key_id, signature=b64encode(raw))

    @property
    def private_key(self) -> Ed25519PrivateKey:
        """The key itself (for writing it to a file)."""
        return self._key


class Keyring:
    """The public keys a verifier trusts, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for key in keys:
            self.add(key)

    def __repr__(self) -> str:
        return f"Keyring({sorted(self._keys)})"

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, public_key: Ed25519PublicKey) -> str:
        """Trust ``public_key``; returns its id."""
        kid = key_id(public_key)
        self._keys[kid] = public_key
        return kid

    @property
    def key_ids(self) -> list[str]:
        """The trusted key ids, sorted."""
        return sorted(self._keys)

    def problem(self, purpose: str, message: Mapping[str, Any], signature: Signature) -> str | None:
        """Why ``signature`` does not hold for ``message`` under ``purpose``; None if it does."""
        from cryptography.exceptions import InvalidSignature

        public_key = self._keys.get(signature.key_id)
        if public_key is None:
            return f"signed by {signature.key_id}, which is not a trusted key"
        try:
            public_key.verify(b64decode(signature.signature), signing_bytes(purpose, message))
        except (InvalidSignature, ValueError):
            return f"the signature by {signature.key_id} does not match the signed content"
        return None

    def valid(self, purpose: str, message: Mapping[str, Any], signature: Signature) -> bool:
        """Whether ``signature`` holds for ``message`` under ``purpose``."""
        return self.problem(purpose, message, signature) is None

    def to_json(self) -> dict[str, Any]:
        """The keyring file's form: ``{"keys": [{"key_id": ..., "public_key": ...}]}``."""
        return {
            "keys": [
                {"key_id": kid, "public_key": b64encode(raw_public_key(key))}
                for kid, key in sorted(self._keys.items())
            ]
        }

    @classmethod
    def from_json(cls, data: Any) -> Keyring:
        """The keyring ``to_json`` wrote.

        Raises:
            ValueError: the document is not a keyring, or a key id does not match its key.
        """
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise ValueError('a keyring is {"keys": [{"key_id": ..., "public_key": ...}]}')
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        ring = cls()
        for entry in data["keys"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("public_key"), str):
                raise ValueError("each key needs a public_key (base64 of 32 raw bytes)")
            raw = b64decode(entry["public_key"])
            if len(raw) != 32:
                raise ValueError("an Ed25519 public key is 32 bytes")
            kid = ring.add(Ed25519PublicKey.from_public_bytes(raw))
            if entry.get("key_id", kid) != kid:
                raise ValueError(f"key id {entry.get('key_id')!r} does not match its key ({kid})")
        return ring


SIGN_ACTIVITY = "keel.sign"
VERIFY_ACTIVITY = "keel.verify_signature"


class SignRequest(BaseModel):
    """What to sign: a purpose and a JSON object."""

    model_config = ConfigDict(extra="forbid")

    purpose: str
    message: dict[str, Any]


class VerifyRequest(SignRequest):
    """A signed message to check."""

    signature: Signature


class VerifyResult(BaseModel):
    """Whether the signature holds, and if not, why."""

    valid: bool
    problem: str | None = None


class WorkerKeys:
    """A worker's signing key, the keys it trusts (its own included), and where it reads the
    keys trusted for review decisions (called whenever a gate opens; none by default)."""

    def __init__(
        self,
        signing: SigningKey,
        keyring: Keyring,
        *,
        reviewers: Callable[[], ReviewerTrust] | None = None,
    ) -> None:
        self.signing = signing
        self.keyring = keyring
        self.reviewers = reviewers
        if signing.key_id not in keyring:
            keyring.add(signing.public_key)

    def __repr__(self) -> str:
        return f"WorkerKeys(signing={self.signing.key_id}, trusted={self.keyring.key_ids})"
