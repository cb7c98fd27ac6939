"""The inbox's HTTP API on a real dev server: who sees which gate, decisions signed by the
inbox and verified by the workflow, idempotency keys, forged tokens, and the API's own
OpenAPI document (schemathesis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from keel.contracts.ledger import GateDecided
from keel.inbox.server import _uvicorn
from keel.testing import ledger_of, wait_for_gate
from tests.inbox_fixtures import Inbox, local_jwks, running_inbox

pytestmark = pytest.mark.timeout(180)
GATE = "standard-review"


@pytest.fixture(scope="module")
async def inbox(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Inbox]:
    async with running_inbox(dev_env.client, tmp_path_factory.mktemp("inbox")) as running:
        yield running


async def open_review(inbox: Inbox) -> str:
    handle = await inbox.contract_review()
    await wait_for_gate(handle, GATE)
    return handle.id


async def decisions(inbox: Inbox, workflow_id: str) -> list[GateDecided]:
    events = await ledger_of(inbox.client.get_workflow_handle(workflow_id))
    return [e for e in events if isinstance(e, GateDecided)]


async def test_a_reviewer_lists_and_reads_the_gates_of_their_role(inbox: Inbox) -> None:
    workflow_id = await open_review(inbox)
    async with inbox.http() as http:
        listed = await http.get("/api/gates", headers=await inbox.token("legal.priya"))
        assert listed.status_code == 200, listed.text
        mine = [g for g in listed.json() if g["workflow_id"] == workflow_id]
        assert [g["gate"]["gate"] for g in mine] == [GATE]
        page = await http.get(
            f"/api/gates/{workflow_id}/{GATE}", headers=await inbox.token("legal.priya")
        )
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["verification"]["ok"] is True
        assert any(p["node"] == "classify-risk" and p["rationale"] for p in body["proposals"])
        assert body["gate"]["modify_schema"] is not None
        outsider = await inbox.token("support.agent.ana")
        theirs = await http.get("/api/gates", headers=outsider)
        assert all(g["workflow_id"] != workflow_id for g in theirs.json())
        hidden = await http.get(f"/api/gates/{workflow_id}/{GATE}", headers=outsider)
        assert hidden.status_code == 404


async def test_forged_bearer_tokens_are_refused(inbox: Inbox) -> None:
    good = (await inbox.token("legal.priya"))["authorization"]
    forged = [
        None,
        "Bearer nonsense",
        good[:-3] + ("xyz" if not good.endswith("xyz") else "abc"),
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJsZWdhbC5wcml5YSJ9.",
        "Basic bGVnYWwucHJpeWE6eA==",
    ]
    async with inbox.http() as http:
        for header in forged:
            headers = {"authorization": header} if header else {}
            answer = await http.get("/api/gates", headers=headers)
            assert answer.status_code == 401, (header, answer.text)
            assert answer.json()["error"]
        wrong = await http.post("/api/tokens", json={"subject": "legal.priya", "password": "guess"})
        assert wrong.status_code == 401


async def test_a_decision_by_someone_without_the_role_is_refused_and_changes_nothing(
    inbox: Inbox,
) -> None:
    workflow_id = await open_review(inbox)
    async with inbox.http() as http:
        for subject in ("support.agent.ana", "gc.morgan"):
            answer = await http.post(
                f"/api/gates/{workflow_id}/{GATE}/decisions",
                json={"action": "approve"},
                headers=await inbox.token(subject),
            )
            assert answer.status_code == 404, answer.text
        deputy = await inbox.token("away.deputy")
        as_self = await http.post(
            f"/api/gates/{workflow_id}/{GATE}/decisions", json={"action": "approve"}, headers=deputy
        )
        assert as_self.status_code == 403
        assert "on behalf of legal.sam" in as_self.json()["error"]
        for_someone_else = await http.post(
            f"/api/gates/{workflow_id}/{GATE}/decisions",
            json={"action": "approve", "on_behalf_of": "legal.priya"},
            headers=deputy,
        )
        assert for_someone_else.status_code == 403
    assert await decisions(inbox, workflow_id) == []


async def test_bad_decisions_get_reasons_and_change_nothing(inbox: Inbox) -> None:
    workflow_id = await open_review(inbox)
    url = f"/api/gates/{workflow_id}/{GATE}/decisions"
    async with inbox.http() as http:
        headers = await inbox.token("legal.priya")
        cases: list[tuple[dict[str, Any], str]] = [
            ({"action": "reject"}, "a comment is required to reject"),
            ({"action": "modify", "modifications": {"risk": "low"}}, "risk"),
            ({"action": "modify"}, "modify needs the changed fields"),
            ({"action": "reassign", "comment": "over to you"}, "at least one reviewer or role"),
            ({"action": "approve", "modifications": {"conditions": []}}, "only sent with"),
            ({"action": "launch"}, "action"),
        ]
        for body, reason in cases:
            answer = await http.post(url, json=body, headers=headers)
            assert answer.status_code == 422, (body, answer.text)
            assert reason in " ".join([answer.json()["error"], *answer.json()["reasons"]])
        huge = await http.post(url, content=b"{" + b" " * 70_000 + b"}", headers=headers)
        assert huge.status_code == 413
    assert await decisions(inbox, workflow_id) == []


async def test_a_repeated_idempotency_key_is_one_decision(inbox: Inbox) -> None:
    workflow_id = await open_review(inbox)
    body = {
        "action": "modify",
        "modifications": {"conditions": ["DPA signed before go-live"]},
        "comment": "with the DPA",
    }
    async with inbox.http() as http:
        headers = {**await inbox.token("legal.priya"), "idempotency-key": "retry-1"}
        first = await http.post(
            f"/api/gates/{workflow_id}/{GATE}/decisions", json=body, headers=headers
        )
        assert first.status_code == 200, first.text
        again = await http.post(
            f"/api/gates/{workflow_id}/{GATE}/decisions", json=body, headers=headers
        )
    assert again.status_code == 200, again.text
    assert again.json()["repeated"] is True
    assert again.json()["ledger_seq"] == first.json()["ledger_seq"]
    decided = await decisions(inbox, workflow_id)
    assert len(decided) == 1
    assert decided[0].reviewer == "legal.priya"
    assert decided[0].modifications == {"conditions": ["DPA signed before go-live"]}
    # Signed by the inbox's key, with the device as the inbox saw the request.
    assert decided[0].key_id == inbox.ctx.key.key_id
    assert decided[0].auth is not None and decided[0].auth["method"] == "password"
    assert decided[0].auth["device"]["address"] == "203.0.113.7"


async def test_a_delegate_decides_on_behalf_of_the_delegator(inbox: Inbox) -> None:
    workflow_id = await open_review(inbox)
    async with inbox.http() as http:
        deputy = await inbox.token("away.deputy")
        listed = await http.get("/api/gates", headers=deputy)
        mine = [g for g in listed.json() if g["workflow_id"] == workflow_id]
        assert mine and mine[0]["acting_as"] == ["legal.sam"]
        answer = await http.post(
            f"/api/gates/{workflow_id}/{GATE}/decisions",
            json={"action": "approve", "on_behalf_of": "legal.sam", "comment": "while Sam is away"},
            headers=deputy,
        )
    assert answer.status_code == 200, answer.text
    decided = await decisions(inbox, workflow_id)
    assert [(d.reviewer, d.on_behalf_of, d.decision) for d in decided] == [
        ("away.deputy", "legal.sam", "approve")
    ]


async def test_not_now_steps_aside_and_leaves_the_gate_open(inbox: Inbox) -> None:
    workflow_id = await open_review(inbox)
    async with inbox.http() as http:
        answer = await http.post(
            f"/api/gates/{workflow_id}/{GATE}/decisions",
            json={"action": "defer"},
            headers=await inbox.token("legal.priya"),
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == "awaiting_approval"
        page = await http.get(
            f"/api/gates/{workflow_id}/{GATE}", headers=await inbox.token("legal.sam")
        )
    assert page.json()["gate"]["deferred_by"] == ["legal.priya"]
    assert page.json()["acting_as"] == [None]  # Sam may still decide it
    assert await decisions(inbox, workflow_id) == []


async def test_an_oidc_token_decides_and_a_forged_one_does_not(inbox: Inbox) -> None:
    """A JWT of the configured issuer authenticates its subject with the roles its claim
    gives; the same token signed by another key, or expired, authenticates nobody."""
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

    from keel.inbox.oidc import OidcVerifier
    from tests.test_inbox_identity import AUDIENCE, ISSUER, public_jwk

    key = generate_private_key(public_exponent=65537, key_size=2048)
    stranger = generate_private_key(public_exponent=65537, key_size=2048)
    workflow_id = await open_review(inbox)

    def bearer(signer: Any, **claims: Any) -> dict[str, str]:
        body: dict[str, Any] = {
            "sub": "legal.sam",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "roles": ["legal"],
        }
        body |= {"exp": int(time.time()) + 300, **claims}
        token = jwt.encode(body, signer, algorithm="RS256", headers={"kid": "k1"})
        return {"authorization": f"Bearer {token}"}

    url = f"/api/gates/{workflow_id}/{GATE}/decisions"
    with local_jwks(public_jwk(key)) as jwks_url:
        inbox.ctx.oidc = OidcVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks_url)
        try:
            async with inbox.http() as http:
                for forged in (bearer(stranger), bearer(key, exp=int(time.time()) - 600)):
                    refused = await http.post(url, json={"action": "approve"}, headers=forged)
                    assert refused.status_code == 401, refused.text
                no_role = await http.post(
                    url, json={"action": "approve"}, headers=bearer(key, sub="x", roles=[])
                )
                assert no_role.status_code == 404
                answer = await http.post(url, json={"action": "approve"}, headers=bearer(key))
        finally:
            inbox.ctx.oidc = None
    assert answer.status_code == 200, answer.text
    decided = await decisions(inbox, workflow_id)
    assert [d.reviewer for d in decided] == ["legal.sam"]


async def test_the_api_conforms_to_its_own_openapi_document(inbox: Inbox) -> None:
    """Schemathesis generates requests from the document (a few dozen in all, as a signed-in
    reviewer) and checks each answer against it: documented status, JSON body, schema; and
    no 5xx but a documented 503."""
    await open_review(inbox)
    headers = await inbox.token("legal.priya")
    async with _uvicorn(inbox.app, "127.0.0.1", 0) as port:
        await asyncio.to_thread(_run_schemathesis, inbox.app.openapi(), port, headers)


def _run_schemathesis(document: dict[str, Any], port: int, headers: dict[str, str]) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import ignored_auth

    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 4
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            # ignored_auth replays the request "without auth" but keeps these headers; the
            # refusal of requests without (or with forged) tokens is tested above instead.
            case.call_and_validate(
                base_url=f"http://127.0.0.1:{port}", headers=headers, excluded_checks=[ignored_auth]
            )

        check()
