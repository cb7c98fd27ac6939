"""The inbox's HTTP API (``/api``), for approval tools: list gates, read one, decide.

Callers authenticate with ``Authorization: Bearer``: an OIDC JWT of the configured issuer,
or an inbox API token (``POST /api/tokens`` with a local account's password). Decisions go
through the same checks and signing as the web pages (``keel.inbox.deciding``); an
``Idempotency-Key`` header makes a retried request the same decision. Errors are JSON,
``{"error": ..., "reasons": [...]}``, with the status saying which kind.

(No ``from __future__ import annotations`` here: FastAPI reads the route signatures'
annotations at runtime, and the dependencies are local to ``api_router``.)
"""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from keel.contracts.gates import MAX_NAME_CHARS, GateView, ReviewReceipt
from keel.contracts.reviews import new_nonce
from keel.inbox.access import Reviewer
from keel.inbox.context import InboxContext, device_of
from keel.inbox.deciding import DecisionRequest, decide, nonce_for
from keel.inbox.directory import MAX_PASSWORD_CHARS
from keel.inbox.errors import NotSignedIn
from keel.inbox.reading import gate_page, waiting_gates
from keel.inbox.sessions import new_session

MAX_IDEMPOTENCY_KEY_CHARS = 200


class ErrorBody(BaseModel):
    """Every error the API answers."""

    error: str
    reasons: list[str] = Field(default_factory=list)


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        401: "no valid bearer token",
        403: "the caller may not do this",
        404: "no such gate, or none the caller may see",
        409: "the gate is closed, or the workflow refused the decision",
        413: "the request is too large",
        422: "the request is malformed or incomplete",
        503: "Temporal or the workflow's worker did not answer",
    }.items()
}


class TokenRequest(BaseModel):
    """A local account's credentials."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class TokenResponse(BaseModel):
    """A bearer token for the API."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int


class GateSummary(BaseModel):
    """An open gate waiting for the caller."""

    workflow_id: str
    run_id: str
    workflow_type: str
    acting_as: list[str | None]
    """Whom the caller may decide it as: null for themselves, or a delegator's name."""
    gate: GateView


class ProposalBody(BaseModel):
    """What an agent node proposed."""

    node: str
    contract: str
    model: str
    output: dict[str, Any] | None
    confidence: float | None
    rationale: str | None
    at: datetime


class LedgerEntryBody(BaseModel):
    """One ledger event, summarized."""

    seq: int
    at: datetime
    type: str
    text: str


class VerificationBody(BaseModel):
    """Whether the run's ledger verifies as stored."""

    ok: bool
    events: int
    reason: str | None
    signed_through: int | None
    """The last event covered by a signed head."""


class GateDetail(GateSummary):
    """One gate with what the agent proposed and the run's ledger."""

    status: str
    proposals: list[ProposalBody]
    ledger: list[LedgerEntryBody]
    verification: VerificationBody | None


_bearer = HTTPBearer(auto_error=False)


def api_router(ctx: InboxContext) -> APIRouter:
    """The ``/api`` routes over ``ctx``."""
    router = APIRouter(prefix="/api", tags=["gates"], responses=ERRORS)

    async def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Reviewer:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise NotSignedIn("send Authorization: Bearer <token>")
        return await ctx.reviewer_for_bearer(credentials.credentials)

    Caller = Annotated[Reviewer, Depends(caller)]

    @router.post("/tokens", response_model=TokenResponse, tags=["auth"])
    async def create_token(body: TokenRequest) -> TokenResponse:
        """An API token for a local account (its subject and password)."""
        principal = await ctx.sign_in(body.subject, body.password)
        if principal is None:
            raise NotSignedIn("wrong name or password")
        token = ctx.sessions.token(new_session(principal.subject))
        return TokenResponse(access_token=token, expires_in=ctx.sessions.max_age_seconds)

    @router.get("/gates", response_model=list[GateSummary])
    async def list_gates(reviewer: Caller) -> list[GateSummary]:
        """The open gates the caller may decide (themselves, or for whoever delegated)."""
        rows = await waiting_gates(ctx.client, reviewer)
        return [
            GateSummary(
                workflow_id=r.workflow_id,
                run_id=r.run_id,
                workflow_type=r.workflow_type,
                acting_as=r.acting_as,
                gate=r.gate,
            )
            for r in rows
        ]

    @router.get("/gates/{workflow_id}/{gate}", response_model=GateDetail)
    async def read_gate(workflow_id: str, gate: str, reviewer: Caller) -> GateDetail:
        """One gate, with what the agent proposed and the run's verified ledger."""
        page = await gate_page(ctx.client, reviewer, workflow_id, gate, ctx.keyring)
        report = page.verification
        return GateDetail(
            workflow_id=page.workflow_id,
            run_id=page.run_id,
            workflow_type=page.workflow_type,
            acting_as=page.acting_as,
            gate=page.gate,
            status=page.status,
            proposals=[ProposalBody(**vars(p)) for p in page.proposals],
            ledger=[LedgerEntryBody(**vars(e)) for e in page.timeline],
            verification=VerificationBody(
                ok=report.ok,
                events=report.events,
                reason=report.reason,
                signed_through=report.last_signed.covers_seq if report.last_signed else None,
            )
            if report
            else None,
        )

    @router.post("/gates/{workflow_id}/{gate}/decisions", response_model=ReviewReceipt)
    async def decide_gate(
        workflow_id: str,
        gate: str,
        body: DecisionRequest,
        reviewer: Caller,
        request: Request,
        idempotency_key: Annotated[
            str | None, Header(max_length=MAX_IDEMPOTENCY_KEY_CHARS, min_length=1)
        ] = None,
    ) -> ReviewReceipt:
        """Approve, reject, modify, reassign or defer ("not now"). The same
        ``Idempotency-Key`` again answers the first decision's receipt (``repeated``)."""
        nonce = nonce_for(reviewer.subject, idempotency_key) if idempotency_key else new_nonce()
        return await decide(
            ctx.client,
            ctx.key,
            reviewer,
            workflow_id,
            gate,
            body,
            nonce=nonce,
            device=device_of(
                request.headers.get("user-agent"), request.client.host if request.client else None
            ),
        )

    return router
