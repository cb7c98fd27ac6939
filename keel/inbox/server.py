"""Running the inbox: its key and trust entry, its directory, and the HTTP server.

``keel inbox`` and ``keel dev`` both come here. On start the inbox loads (or, for the
default path, generates) its Ed25519 key and writes the key's trust entry (kind
``service``) where the workers on this machine read reviewer keys, so the decisions it signs
are accepted without a worker restart; a deployment instead adds the printed entry to
``KEEL_REVIEWER_KEYS_FILE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from temporalio.client import Client

from keel.contracts.reviews import TrustedReviewerKey, trusted_key_entry
from keel.contracts.signing import SigningKey
from keel.errors import KeelUserError
from keel.inbox.accounts import default_directory_path
from keel.inbox.app import create_app
from keel.inbox.context import InboxContext
from keel.inbox.directory import Directory, FileDirectory
from keel.inbox.oidc import OidcVerifier
from keel.inbox.sessions import SessionSigner, load_session_secret
from keel.settings import KeelSettings

KEY_NAME = "keys/inbox-signing-key.pem"


@dataclass(frozen=True)
class RunningInbox:
    """A started inbox: where it listens and the trust entry of the key it signs with."""

    url: str
    trust_entry: TrustedReviewerKey
    trust_file: Path
    directory: str


def inbox_key_path(settings: KeelSettings) -> Path:
    """Where the inbox's signing key is (or will be generated)."""
    return settings.inbox_signing_key_file or settings.data_dir / KEY_NAME


def load_inbox_key(settings: KeelSettings) -> SigningKey:
    """The inbox's signing key (generated 0600 at the default path if missing).

    Raises:
        KeelUserError: a configured key file is missing or is not an Ed25519 key.
    """
    from keel.workers.keys import read_signing_key, write_new_key

    path = inbox_key_path(settings)
    if settings.inbox_signing_key_file is None and not path.exists():
        return write_new_key(path)
    return read_signing_key(path)


def open_directory(settings: KeelSettings) -> Directory:
    """The directory the settings name: the PostgreSQL table, else the JSON file.

    Raises:
        KeelUserError: the file does not exist (``keel inbox users add`` creates one).
    """
    if settings.inbox_directory_url:
        from keel.inbox.pg_directory import PostgresDirectory

        return PostgresDirectory(settings.inbox_directory_url, settings.inbox_directory_table)
    path = default_directory_path(settings)
    if not path.exists():
        raise KeelUserError(
            f"no inbox directory at {path}: add a reviewer with `keel inbox users add NAME "
            "--role ROLE`, set KEEL_INBOX_DIRECTORY_FILE or KEEL_INBOX_DIRECTORY_URL, or run "
            "`keel dev`, which creates one for the built-in scenarios"
        )
    return FileDirectory(path)


def oidc_verifier(settings: KeelSettings) -> OidcVerifier | None:
    """The OIDC token verifier, when issuer, audience and JWKS URL are all set.

    Raises:
        KeelUserError: only some of the three are set.
    """
    values = (
        settings.inbox_oidc_issuer,
        settings.inbox_oidc_audience,
        settings.inbox_oidc_jwks_url,
    )
    if not any(values):
        return None
    if not all(values):
        raise KeelUserError(
            "OIDC needs KEEL_INBOX_OIDC_ISSUER, KEEL_INBOX_OIDC_AUDIENCE and "
            "KEEL_INBOX_OIDC_JWKS_URL together"
        )
    return OidcVerifier(
        issuer=settings.inbox_oidc_issuer or "",
        audience=settings.inbox_oidc_audience or "",
        jwks_url=settings.inbox_oidc_jwks_url or "",
        roles_claim=settings.inbox_oidc_roles_claim,
        subject_claim=settings.inbox_oidc_subject_claim,
    )


def build_context(
    settings: KeelSettings, client: Client, *, directory: Directory | None = None
) -> InboxContext:
    """Everything the inbox needs, from ``settings`` (cookies are ``Secure`` when the inbox's
    public URL, ``KEEL_INBOX_URL``, is https)."""
    from keel.workers.keys import trusted_keyring

    return InboxContext(
        client=client,
        directory=directory or open_directory(settings),
        key=load_inbox_key(settings),
        sessions=SessionSigner(
            load_session_secret(settings), max_age_seconds=settings.inbox_session_minutes * 60
        ),
        keyring=trusted_keyring(settings) or None,
        oidc=oidc_verifier(settings),
        secure_cookies=settings.inbox_url.startswith("https://"),
        link_key=_link_key(settings),
    )


def register_key(settings: KeelSettings, key: SigningKey) -> tuple[TrustedReviewerKey, Path]:
    """Write the inbox key's trust entry where this machine's workers read reviewer keys."""
    from keel.workers.keys import trust_reviewer_key

    entry = trusted_key_entry(key, "service", name=f"keel inbox on {socket.gethostname()}")
    return entry, trust_reviewer_key(settings, entry)


@contextlib.asynccontextmanager
async def serving(
    settings: KeelSettings,
    client: Client,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    directory: Directory | None = None,
) -> AsyncIterator[RunningInbox]:
    """The inbox, served on ``host:port`` (default ``KEEL_INBOX_PORT``; 0: a free port)
    until the block ends."""
    ctx = build_context(settings, client, directory=directory)
    entry, trust_file = register_key(settings, ctx.key)
    app = create_app(ctx)
    chosen = settings.inbox_port if port is None else port
    async with _uvicorn(app, host, chosen) as bound:
        shown = f"[{host}]" if ":" in host else host
        yield RunningInbox(f"http://{shown}:{bound}", entry, trust_file, ctx.directory.description)


@contextlib.asynccontextmanager
async def _uvicorn(app: FastAPI, host: str, port: int) -> AsyncIterator[int]:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise KeelUserError(
            f"the inbox cannot listen on {host}:{port}: {err.strerror}; set KEEL_INBOX_PORT "
            "or pass --port"
        ) from None
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise KeelUserError(f"the inbox on {host}:{bound} stopped as it started")
            await asyncio.sleep(0.02)
        yield bound
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


def _link_key(settings: KeelSettings) -> bytes:
    """The key of signed links into the inbox (shared with the workers that send them)."""
    from keel.workers.link_key import load_link_key

    return load_link_key(settings)


@contextlib.asynccontextmanager
async def dev_inbox(settings: KeelSettings, client: Client) -> AsyncIterator[RunningInbox]:
    """The inbox inside ``keel dev``: the built-in reviewers' accounts (created on first
    run, unless a directory is configured), on ``KEEL_INBOX_PORT`` or, if that is taken, any
    free port; prints where it is and where the passwords are."""
    from keel.inbox.accounts import ensure_dev_accounts

    configured = settings.inbox_directory_url or settings.inbox_directory_file
    accounts = None if configured else ensure_dev_accounts(settings)
    try:
        running = serving(settings, client)
        inbox = await running.__aenter__()
    except KeelUserError:  # the port is taken (another keel dev): any free one
        running = serving(settings, client, port=0)
        inbox = await running.__aenter__()
    try:
        print(inbox_banner(inbox), flush=True)
        if accounts is not None:
            print(
                f"inbox: sign in as a built-in reviewer; passwords in {accounts.passwords_file}"
                + "".join(f"\n  {who} {pw}" for who, pw in accounts.passwords.items()),
                flush=True,
            )
        yield inbox
    finally:
        await running.__aexit__(None, None, None)


def inbox_banner(inbox: Any) -> str:
    """What ``keel inbox`` and ``keel dev`` print about the running inbox."""
    return (
        f"inbox: {inbox.url} (API {inbox.url}/api, docs {inbox.url}/api/docs); directory "
        f"{inbox.directory}; signs decisions with key {inbox.trust_entry.key_id}, trusted in "
        f"{inbox.trust_file}"
    )
