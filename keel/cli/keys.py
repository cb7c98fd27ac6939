"""``keel keys``: the worker's signing keys, for operators and auditors.

``keel keys export`` writes the public keys an auditor verifies ledgers with (this machine's
worker key and ``KEEL_TRUSTED_KEYS_FILE``); ``keel keys new FILE`` makes a private key for a
rotation: point ``KEEL_SIGNING_KEY_FILE`` at it and keep the old public key trusted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from keel.cli.output import USAGE, CliError
from keel.settings import KeelSettings
from keel.workers.keys import load_worker_keys, read_keyring, write_keyring, write_new_key


def cmd_keys(settings: KeelSettings, args: Any) -> int:
    """Run ``keel keys export`` or ``keel keys new``."""
    if args.action == "new":
        return _new(Path(args.path))
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
