"""OIDC bearer tokens: JWTs of one issuer and audience, checked against its JWKS.

Only asymmetric algorithms are accepted (RS256/ES256/EdDSA and kin), named by the key the
token's ``kid`` selects: ``alg: none`` and HMAC tokens (signed with a public key as the
secret) are refused before any key is used. Expiry, issuer and audience are required.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWKClient

from keel.contracts.gates import MAX_NAME_CHARS
from keel.inbox.directory import MAX_ROLES

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
LEEWAY_SECONDS = 30
"""Clock skew tolerated between the issuer and this host."""
MAX_TOKEN_CHARS = 16_000


class TokenRefused(Exception):
    """A bearer token that does not authenticate anyone; the message says why."""


@dataclass(frozen=True)
class TokenIdentity:
    """Who a verified token names."""

    subject: str
    roles: tuple[str, ...]
    issuer: str
    display_name: str


class OidcVerifier:
    """Checks tokens of ``issuer`` for ``audience`` against the JWKS at ``jwks_url``."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        roles_claim: str = "roles",
        subject_claim: str = "sub",
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.roles_claim = roles_claim
        self.subject_claim = subject_claim
        # Keys are cached; an unknown kid fetches the set again (rotation), at most so often.
        self._keys = PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)

    def verify(self, token: str) -> TokenIdentity:
        """The identity ``token`` carries (blocking: it may fetch the JWKS).

        Raises:
            TokenRefused: the token is malformed, unsigned, signed by an unknown key, expired,
                or for another issuer or audience, or names no subject.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRefused("the token is too long")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in ALGORITHMS:
                raise TokenRefused(f"algorithm {header.get('alg')!r} is not accepted")
            key = self._keys.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except TokenRefused:
            raise
        except jwt.PyJWKClientError as err:
            raise TokenRefused(f"no trusted key for the token: {err}") from None
        except jwt.PyJWTError as err:
            raise TokenRefused(str(err) or type(err).__name__) from None
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> TokenIdentity:
        subject = claims.get(self.subject_claim)
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_NAME_CHARS:
            raise TokenRefused(f"the token's {self.subject_claim!r} claim names no reviewer")
        roles = claims.get(self.roles_claim, [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise TokenRefused(f"the token's {self.roles_claim!r} claim is not a list of names")
        name = claims.get("name")
        return TokenIdentity(
            subject=subject,
            roles=tuple(r for r in roles if 0 < len(r) <= MAX_NAME_CHARS)[:MAX_ROLES],
            issuer=self.issuer,
            display_name=name if isinstance(name, str) else subject,
        )
