"""The key that signs inbox links (``keel.contracts.links``), from a file.

``KEEL_INBOX_LINK_KEY_FILE`` names it; unset, it is ``KEEL_DATA_DIR/keys/inbox-link-key``,
generated on first use (mode 0600), so the workers that put links in notifications and the
embedded inbox that checks them share it on one machine with no set-up. A deployment gives
the workers and the inbox the same file. The key is the file's text without surrounding
whitespace (``openssl rand -base64 32 > inbox-link-key`` makes one); at least 32 bytes.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from keel.contracts.links import MIN_KEY_BYTES
from keel.errors import KeelUserError
from keel.settings import KeelSettings

DEFAULT_LINK_KEY_NAME = "keys/inbox-link-key"


def link_key_path(settings: KeelSettings) -> Path:
    """Where the inbox link key is (or will be generated)."""
    return settings.inbox_link_key_file or settings.data_dir / DEFAULT_LINK_KEY_NAME


def load_link_key(settings: KeelSettings) -> bytes:
    """The inbox link key ``settings`` name (generated if it is the default one and
    missing).

    Raises:
        KeelUserError: a configured file is missing or unreadable, or the key is shorter
            than 32 bytes.
    """
    path = link_key_path(settings)
    if settings.inbox_link_key_file is None and not path.exists():
        return write_new_link_key(path)
    return read_link_key(path)


def read_link_key(path: Path) -> bytes:
    """The key in ``path``.

    Raises:
        KeelUserError: the file is missing or unreadable, or the key is too short.
    """
    try:
        key = path.read_bytes().strip()
    except OSError as err:
        raise KeelUserError(f"inbox link key {path}: {err.strerror or err}") from None
    if len(key) < MIN_KEY_BYTES:
        raise KeelUserError(
            f"inbox link key {path} holds {len(key)} bytes; it needs at least {MIN_KEY_BYTES}"
            " (make one with: openssl rand -base64 32)"
        )
    return key


def write_new_link_key(path: Path) -> bytes:
    """Generate a key and write it to ``path`` (mode 0600); if another process wrote one
    there first, that one is kept and returned."""
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked into place: a reader never sees a
    # half-written key, and of two processes generating at once the first link wins.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key + b"\n")
    try:
        os.link(temporary, path)
    except FileExistsError:
        return read_link_key(path)
    finally:
        temporary.unlink()
    return key
