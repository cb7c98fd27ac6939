"""Who a reviewer is: the directory (a JSON file or a PostgreSQL table, argon2 passwords,
delegations), OIDC bearer tokens checked against a local JWKS, and signed sessions."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, generate_private_key
from jwt.algorithms import RSAAlgorithm

from keel.errors import KeelUserError
from keel.inbox.accounts import BUILT_IN_REVIEWERS, ensure_dev_accounts
from keel.inbox.directory import (
    Delegation,
    FileDirectory,
    Principal,
    authenticate,
    delegators_of,
    hash_password,
    write_directory_file,
)
from keel.inbox.oidc import OidcVerifier, TokenRefused
from keel.inbox.pg_directory import PostgresDirectory
from keel.inbox.sessions import SessionSigner, new_session
from tests.conftest import offline_settings
from tests.inbox_fixtures import local_jwks

PG_URL = os.environ.get("KEEL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ISSUER = "https://login.keel.example/"
AUDIENCE = "keel-inbox"
NOW = datetime.now(UTC)


def priya(**extra: Any) -> Principal:
    return Principal(
        subject="legal.priya",
        display_name="Priya",
        roles=("legal",),
        password_hash=hash_password("correct horse"),
        **extra,
    )


# ------------------------------------------------------------------------ the file directory


def test_a_password_opens_only_its_own_account(tmp_path: Path) -> None:
    path = tmp_path / "directory.json"
    write_directory_file(path, [priya(), Principal(subject="legal.sam", roles=("legal",))])
    directory = FileDirectory(path)
    assert authenticate(directory, "legal.priya", "correct horse") == directory.get("legal.priya")
    assert authenticate(directory, "legal.priya", "wrong") is None
    assert authenticate(directory, "nobody", "correct horse") is None
    assert authenticate(directory, "legal.sam", "") is None  # no password hash: OIDC only
    assert path.stat().st_mode & 0o777 == 0o600
    assert "correct horse" not in path.read_text()


def test_the_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "directory.json"
    write_directory_file(path, [priya()])
    directory = FileDirectory(path)
    assert directory.get("legal.priya") is not None
    directory.save([Principal(subject="legal.sam")])
    assert directory.get("legal.priya") is None
    assert directory.get("legal.sam") is not None


def test_a_malformed_directory_file_says_where(tmp_path: Path) -> None:
    path = tmp_path / "directory.json"
    path.write_text(json.dumps({"principals": [{"subject": "a"}, {"subject": "a"}]}))
    with pytest.raises(KeelUserError, match="subjects listed twice: a"):
        FileDirectory(path).get("a")
    path.write_text(json.dumps({"principals": [{"subject": "a", "roles": "legal"}]}))
    with pytest.raises(KeelUserError, match=r"principals\.0\.roles"):
        FileDirectory(path).get("a")


def test_a_delegation_holds_until_its_end(tmp_path: Path) -> None:
    path = tmp_path / "directory.json"
    away = priya(delegations=(Delegation(to="legal.sam", until=NOW + timedelta(days=1)),))
    write_directory_file(path, [away, Principal(subject="legal.sam")])
    directory = FileDirectory(path)
    assert [p.subject for p in delegators_of(directory, "legal.sam", NOW)] == ["legal.priya"]
    assert delegators_of(directory, "legal.sam", NOW + timedelta(days=2)) == []
    assert delegators_of(directory, "gc.morgan", NOW) == []


def test_dev_accounts_cover_the_built_in_reviewers_and_are_kept(tmp_path: Path) -> None:
    settings = offline_settings(data_dir=tmp_path)
    made = ensure_dev_accounts(settings)
    assert set(made.passwords) == set(BUILT_IN_REVIEWERS)
    assert made.passwords_file.stat().st_mode & 0o777 == 0o600
    directory = FileDirectory(made.directory)
    chen = authenticate(directory, "support.lead.chen", made.passwords["support.lead.chen"])
    assert chen is not None and "support-lead" in chen.roles
    again = ensure_dev_accounts(settings)
    assert again.passwords == made.passwords  # never regenerated over an existing directory


# ------------------------------------------------------------------- the PostgreSQL directory


@pytest.fixture
def pg_directory() -> Iterator[PostgresDirectory]:
    table = f"keel_inbox_test_{uuid.uuid4().hex[:12]}"
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL at {PG_URL} is needed for this test: {exc}", pytrace=False)
    yield PostgresDirectory(PG_URL, table)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def test_the_postgresql_directory_answers_as_the_file_does(
    pg_directory: PostgresDirectory,
) -> None:
    away = priya(delegations=(Delegation(to="legal.sam", until=NOW + timedelta(hours=1)),))
    pg_directory.put(away)
    pg_directory.put(Principal(subject="legal.sam", roles=("legal",)))
    assert authenticate(pg_directory, "legal.priya", "correct horse") == away
    assert authenticate(pg_directory, "legal.priya", "nope") is None
    assert [p.subject for p in delegators_of(pg_directory, "legal.sam", NOW)] == ["legal.priya"]
    pg_directory.put(away.model_copy(update={"roles": ("legal", "legal-lead")}))
    changed = pg_directory.get("legal.priya")
    assert changed is not None and changed.roles == ("legal", "legal-lead")


def test_an_unreachable_postgresql_directory_is_a_clear_error() -> None:
    directory = PostgresDirectory("postgresql://nobody@127.0.0.1:1/none", "keel_inbox_x")
    with pytest.raises(KeelUserError, match="directory postgresql table keel_inbox_x"):
        directory.get("legal.priya")
    with pytest.raises(KeelUserError, match="lower-case"):
        PostgresDirectory(PG_URL, 'x"; DROP TABLE y; --')


# ------------------------------------------------------------------------------------ OIDC


@pytest.fixture(scope="module")
def signing_key() -> RSAPrivateKey:
    return generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url(signing_key: RSAPrivateKey) -> Iterator[str]:
    """A local key set (no identity provider): one RSA key, kid ``k1``."""
    with local_jwks(public_jwk(signing_key)) as url:
        yield url


def public_jwk(key: RSAPrivateKey, kid: str = "k1") -> dict[str, Any]:
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def token(key: Any, *, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
    body = {
        "sub": "gc.morgan",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 300,
        "roles": ["general-counsel"],
        **claims,
    }
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def verifier(jwks_url: str) -> OidcVerifier:
    return OidcVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks_url)


def test_a_token_of_the_issuer_names_its_reviewer_and_roles(
    jwks_url: str, signing_key: RSAPrivateKey
) -> None:
    identity = verifier(jwks_url).verify(token(signing_key))
    assert (identity.subject, identity.roles, identity.issuer) == (
        "gc.morgan",
        ("general-counsel",),
        ISSUER,
    )


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "another-app"}, "audience"),
        ({"iss": "https://evil.example/"}, "issuer"),
        ({"roles": "general-counsel"}, "not a list"),
        ({"sub": ""}, "names no reviewer"),
    ],
)
def test_tokens_with_bad_claims_are_refused(
    jwks_url: str, signing_key: RSAPrivateKey, claims: dict[str, Any], why: str
) -> None:
    with pytest.raises(TokenRefused, match=f"(?i){why}"):
        verifier(jwks_url).verify(token(signing_key, **claims))


def test_unsigned_and_foreign_tokens_are_refused(jwks_url: str) -> None:
    unsigned = jwt.encode(
        {"sub": "gc.morgan", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60},
        None,  # type: ignore[arg-type]  # PyJWT's stubs omit alg=none's absent key
        algorithm="none",
    )
    with pytest.raises(TokenRefused, match="'none' is not accepted"):
        verifier(jwks_url).verify(unsigned)
    with pytest.raises(TokenRefused, match="'HS256' is not accepted"):
        verifier(jwks_url).verify(token("a shared secret of thirty-two bytes!", alg="HS256"))
    stranger = generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TokenRefused, match="no trusted key"):
        verifier(jwks_url).verify(token(stranger, kid="k2"))
    with pytest.raises(TokenRefused, match="Signature verification failed"):
        verifier(jwks_url).verify(token(stranger, kid="k1"))
    with pytest.raises(TokenRefused):
        verifier(jwks_url).verify("not.a.token")


# -------------------------------------------------------------------------------- sessions


def test_sessions_are_sealed_expire_and_end_at_logout() -> None:
    signer = SessionSigner(b"s" * 48, max_age_seconds=60)
    session = new_session("legal.priya")
    sealed = signer.seal(session)
    assert signer.open(sealed) == session
    assert signer.open(sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]) is None
    assert SessionSigner(b"t" * 48, max_age_seconds=60).open(sealed) is None
    assert signer.open_token(sealed) is None  # a cookie is not an API token
    assert SessionSigner(b"s" * 48, max_age_seconds=-1).open(sealed) is None  # expired
    old = dataclasses.replace(session, started=time.time() - 120)
    assert signer.open(signer.seal(old)) is None  # re-sealed now, but begun too long ago
    signer.revoke(session)
    assert signer.open(sealed) is None
    assert session.csrf_matches(session.csrf) and not session.csrf_matches("x")
