"""Signed review decisions in tests: the test kit's own review key, trusted by its workers.

Every worker ``keel.testing`` builds, and every ``offline_settings()``, trusts the key below
as a review service (``kind: service``), so ``approve``/``reject``/``modify`` and
``signed_review`` can decide as any reviewer with any roles, and the ledger records
``auth.method = "test-kit"``. Outside tests nothing trusts it: the key is generated afresh
in each test process and its trust file lives in a temporary directory.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle

from keel.contracts.reviews import (
    ReviewerTrust,
    new_nonce,
    sign_fields,
    trusted_key_entry,
)
from keel.contracts.signing import SigningKey

TEST_AUTH = {"method": "test-kit", "issuer": "keel.testing"}


@cache
def kit_review_key() -> SigningKey:
    """The test kit's review key (one per test process)."""
    return SigningKey.generate()


def kit_review_trust() -> ReviewerTrust:
    """A reviewer trust holding only the test kit's key, as a review service."""
    return ReviewerTrust(keys=[trusted_key_entry(kit_review_key(), "service", name="keel.testing")])


@cache
def kit_reviewer_keys_file() -> Path:
    """A reviewer trust file with the test kit's key (``KEEL_REVIEWER_KEYS_FILE`` for a
    worker in another process); removed when the test process exits."""
    directory = Path(tempfile.mkdtemp(prefix="keel-test-reviews-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = directory / "reviewer-keys.json"
    path.write_text(kit_review_trust().model_dump_json(indent=2, exclude_none=True))
    return path


@cache
def kit_review_key_file() -> Path:
    """The test kit's private review key as a PEM file (``KEEL_REVIEWER_KEY_FILE`` for a
    ``keel approve`` in a test: trusted as a service, it may sign for any reviewer)."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    path = kit_reviewer_keys_file().with_name("review-key.pem")
    pem = kit_review_key().private_key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


def kit_review_env() -> dict[str, str]:
    """Environment variables that make a worker trust, and the CLI sign with, the test kit's
    review key (for ``keel worker`` and ``keel approve`` run as processes)."""
    return {
        "KEEL_REVIEWER_KEYS_FILE": str(kit_reviewer_keys_file()),
        "KEEL_REVIEWER_KEY_FILE": str(kit_review_key_file()),
    }


async def current_run_id(handle: WorkflowHandle[Any, Any]) -> str:
    """The run id of the execution's latest run (a decision is signed for one run)."""
    latest = handle._client.get_workflow_handle(handle.id)
    return (await latest.describe()).run_id


async def signed_review(
    handle: WorkflowHandle[Any, Any],
    payload: Mapping[str, Any],
    *,
    roles: Sequence[str] = (),
    key: SigningKey | None = None,
    nonce: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """``payload`` (gate, decision, reviewer, comment, modifications, ... as
    ``review_payload`` builds it) signed by the test kit for the execution's current run.

    Fields the payload already has win (a test of a forged run id sets ``run_id`` in it);
    anything else it holds is signed as it is, to test refusals.
    """
    fields: dict[str, Any] = {
        "roles": list(roles),
        "workflow_id": handle.id,
        "run_id": run_id or await current_run_id(handle),
        "issued_at": _now(),
        "nonce": nonce or new_nonce(),
        "auth": dict(TEST_AUTH),
        **payload,
    }
    return sign_fields(key or kit_review_key(), fields)


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()
