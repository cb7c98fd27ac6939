"""``keel keys``: the worker's signing keys, for operators and auditors, and reviewers' keys.

``keel keys export`` writes the public keys an auditor verifies ledgers with (this machine's
worker key and ``KEEL_TRUSTED_KEYS_FILE``); ``keel keys new FILE`` makes a private key for a
rotation: point ``KEEL_SIGNING_KEY_FILE`` at it and keep the old public key trusted.
``keel keys reviewer FILE --reviewer NAME --role ROLE`` makes a reviewer's own key for
``keel approve`` and prints (or adds to ``--trust FILE``) the entry the workers must trust.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from keel.cli.output import USAGE, CliError
from keel.contracts.reviews import ReviewerTrust, trusted_key_entry
from keel.settings import KeelSettings
from keel.workers.keys import (
    load_worker_keys,
    read_keyring,
    read_reviewer_trust,
    write_keyring,
    write_new_key,
)


def cmd_keys(settings: KeelSettings, args: Any) -> int:
    """Run ``keel keys export`` or ``keel keys new``."""
    if args.action == "new":
        return _new(Path(args.path))
    if args.action == "reviewer":
        return _reviewer(args)
    keyring = read_keyring(settings.trusted_keys_file)
    keyring.add(load_worker_keys(settings).signing.public_key)
    if args.out:
        write_keyring(keyring, Path(args.out))
        print(f"wrote {len(keyring)} public key(s) to {args.out}", file=sys.stderr)
    else:
        print(json.dumps(keyring.to_json(), indent=2))
    return 0


def _new(path: Path) -> int:
    if path.exists():
        raise CliError(f"{path} exists: a signing key is never overwritten", USAGE)
    key = write_new_key(path)
    print(f"wrote signing key {key.key_id} to {path} (mode 0600)", file=sys.stderr)
    return 0


def _reviewer(args: Any) -> int:
    path = Path(args.path)
    if path.exists():
        raise CliError(f"{path} exists: a key is never overwritten", USAGE)
    key = write_new_key(path)
    entry = trusted_key_entry(
        key, "reviewer", name=f"{args.reviewer}'s CLI key", subject=args.reviewer, roles=args.role
    )
    print(
        f"wrote reviewer key {key.key_id} for {args.reviewer} to {path} (mode 0600)",
        file=sys.stderr,
    )
    if args.trust:
        trust_path = Path(args.trust)
        trust = read_reviewer_trust(trust_path) if trust_path.exists() else ReviewerTrust()
        trust = trust.merged(ReviewerTrust(keys=[entry]))
        trust_path.write_text(trust.model_dump_json(indent=2, exclude_none=True) + "\n")
        print(f"added it to {trust_path} (KEEL_REVIEWER_KEYS_FILE of the workers)", file=sys.stderr)
    else:
        print(json.dumps({"keys": [entry.model_dump(mode="json", exclude_none=True)]}, indent=2))
    return 0
