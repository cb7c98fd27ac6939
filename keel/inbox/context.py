"""What every request of the inbox needs: the Temporal client, the directory, the keys."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.client import Client

from keel.contracts.gates import MAX_NAME_CHARS
from keel.contracts.reviews import Device
from keel.contracts.signing import Keyring, SigningKey
from keel.inbox.access import Reviewer
from keel.inbox.directory import Directory, Principal, authenticate, delegators_of
from keel.inbox.errors import NotSignedIn
from keel.inbox.oidc import OidcVerifier, TokenRefused
from keel.inbox.sessions import Session, SessionSigner


@dataclass
class InboxContext:
    """The inbox's collaborators, built once (``keel.inbox.server.build_context``)."""

    client: Client
    directory: Directory
    key: SigningKey
    """Signs every decision the inbox sends (its public half is in the workers' trust)."""
    sessions: SessionSigner
    keyring: Keyring | None
    """Keys a ledger's signed heads are checked against on gate pages."""
    oidc: OidcVerifier | None = None
    secure_cookies: bool = False
    link_key: bytes | None = None
    """Key of signed links into the inbox (notifications), when configured."""

    async def sign_in(self, subject: str, password: str) -> Principal | None:
        """The principal whose password this is (argon2, off the event loop)."""
        return await asyncio.to_thread(authenticate, self.directory, subject, password)

    async def reviewer_for_session(self, session: Session | None) -> Reviewer:
        """The reviewer a session (cookie or API token) belongs to, as the directory has them
        now (a removed account is signed out; changed roles apply at once).

        Raises:
            NotSignedIn: no session, nobody signed in, or the account is gone.
        """
        if session is None or session.subject is None:
            raise NotSignedIn("sign in first")
        principal = await asyncio.to_thread(self.directory.get, session.subject)
        if principal is None:
            raise NotSignedIn("the account is no longer in the directory; sign in again")
        return await self._reviewer(
            principal.subject,
            principal.name,
            principal.roles,
            "password",
            self.directory.description,
        )

    async def reviewer_for_bearer(self, token: str) -> Reviewer:
        """The reviewer an ``Authorization: Bearer`` token names: an OIDC JWT when OIDC is
        configured and the token looks like one, else an inbox API token.

        Raises:
            NotSignedIn: the token is forged, expired, or for another issuer or audience.
        """
        if token.count(".") == 2 and self.oidc is not None:
            try:
                identity = await asyncio.to_thread(self.oidc.verify, token)
            except TokenRefused as exc:
                raise NotSignedIn(f"bearer token refused: {exc}") from None
            return await self._reviewer(
                identity.subject, identity.display_name, identity.roles, "oidc", identity.issuer
            )
        session = self.sessions.open_token(token)
        if session is None:
            raise NotSignedIn("bearer token refused: not a valid, unexpired inbox or OIDC token")
        return await self.reviewer_for_session(session)

    async def _reviewer(
        self, subject: str, name: str, roles: tuple[str, ...], method: str, issuer: str | None
    ) -> Reviewer:
        delegators = await asyncio.to_thread(
            delegators_of, self.directory, subject, datetime.now(UTC)
        )
        return Reviewer(subject, name, roles, method, issuer, tuple(delegators))


def device_of(user_agent: str | None, address: str | None) -> Device:
    """The device as the inbox saw the request (its headers and peer, bounded)."""
    return Device(
        user_agent=(user_agent or "")[: MAX_NAME_CHARS * 2] or None,
        address=(address or "")[:MAX_NAME_CHARS] or None,
    )
