"""The built-in scenarios' reviewers, as local accounts for ``keel dev`` and ``keel demo``.

On a dev machine the inbox needs someone to sign in as: the reviewers the built-in gate
specs name, each with the roles those specs ask for and a random password. The passwords
are written once to ``data_dir/dev-passwords.txt`` (mode 0600) and printed by ``keel dev``;
an existing directory file is never overwritten, so edited accounts survive restarts.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from keel.inbox.directory import Principal, hash_password, write_directory_file
from keel.settings import KeelSettings

DIRECTORY_NAME = "directory.json"
PASSWORDS_NAME = "dev-passwords.txt"

BUILT_IN_REVIEWERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "legal.priya": ("Priya (Legal)", ("legal",)),
    "legal.sam": ("Sam (Legal)", ("legal",)),
    "legal.lead.jordan": ("Jordan (Legal lead)", ("legal", "legal-lead")),
    "gc.morgan": ("Morgan (General Counsel)", ("general-counsel",)),
    "deputy-gc.alex": ("Alex (Deputy GC)", ("general-counsel",)),
    "support.agent.ana": ("Ana (Support)", ("support-agent",)),
    "support.agent.ben": ("Ben (Support)", ("support-agent",)),
    "support.lead.chen": ("Chen (Support lead)", ("support-agent", "support-lead")),
    "support.manager.dee": ("Dee (Support manager)", ("support-manager",)),
    "oncall.lead": ("On-call lead", ("oncall-lead",)),
    "sre.manager": ("SRE manager", ("sre-manager",)),
}
"""Subject: (display name, roles), as the built-in scenarios' gate specs name them."""


@dataclass(frozen=True)
class DevAccounts:
    """Where the dev directory is, and the passwords made for it (empty when it existed)."""

    directory: Path
    passwords_file: Path
    passwords: dict[str, str]


def default_directory_path(settings: KeelSettings) -> Path:
    """The embedded default directory file."""
    return settings.inbox_directory_file or settings.data_dir / DIRECTORY_NAME


def ensure_dev_accounts(settings: KeelSettings) -> DevAccounts:
    """The built-in reviewers' accounts in ``data_dir/directory.json``, created with random
    passwords when that file does not exist yet (passwords then read back from
    ``dev-passwords.txt``)."""
    path = settings.data_dir / DIRECTORY_NAME
    passwords_file = settings.data_dir / PASSWORDS_NAME
    if path.exists():
        return DevAccounts(path, passwords_file, read_passwords(passwords_file))
    return DevAccounts(path, passwords_file, write_accounts(path, passwords_file))


def write_accounts(path: Path, passwords_file: Path) -> dict[str, str]:
    """Write the built-in reviewers with fresh random passwords to the directory file
    ``path`` and their passwords to ``passwords_file`` (both 0600); the passwords."""
    passwords = {subject: secrets.token_urlsafe(12) for subject in BUILT_IN_REVIEWERS}
    principals = [
        Principal(
            subject=subject,
            display_name=name,
            email=f"{subject}@keel.example",
            roles=roles,
            password_hash=hash_password(passwords[subject]),
        )
        for subject, (name, roles) in BUILT_IN_REVIEWERS.items()
    ]
    _write_passwords(passwords_file, passwords)
    write_directory_file(path, principals)
    return passwords


def read_passwords(path: Path) -> dict[str, str]:
    """``subject password`` lines of a dev passwords file (none if it is missing)."""
    if not path.exists():
        return {}
    pairs = (line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())
    return {p[0]: p[1] for p in pairs if len(p) == 2 and not p[0].startswith("#")}


def _write_passwords(path: Path, passwords: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# keel dev: the built-in reviewers' inbox passwords (subject password)\n")
        out.writelines(f"{subject} {password}\n" for subject, password in passwords.items())
