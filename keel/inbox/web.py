"""The inbox's pages: sign in, the waiting list, a gate's page with one-click decisions.

Server-rendered (Jinja2, autoescaped): every page works without script, a form post is
the whole interaction, and the session and CSRF checks sit in one place. Each rendered
decision form carries a fresh nonce, so a double submit is one decision.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from keel.contracts.gates import MAX_COMMENT_CHARS, MAX_NAME_CHARS
from keel.contracts.links import link_problem
from keel.contracts.reviews import Action, new_nonce
from keel.inbox.access import Reviewer, time_left
from keel.inbox.context import InboxContext, device_of
from keel.inbox.deciding import DecisionRequest, decide
from keel.inbox.errors import Forbidden, InboxError, InvalidDecision, NotSignedIn
from keel.inbox.reading import gate_page, waiting_gates
from keel.inbox.sessions import COOKIE, Session, new_session

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
MAX_FORM_FIELD_CHARS = 20_000


def web_router(ctx: InboxContext) -> APIRouter:
    """The HTML routes over ``ctx`` (not in the OpenAPI document)."""
    router = APIRouter(include_in_schema=False)

    def render(
        request: Request, session: Session, name: str, status: int = 200, **values: Any
    ) -> Response:
        response = TEMPLATES.TemplateResponse(
            request,
            name,
            {"csrf": session.csrf, "now": datetime.now(UTC), **values},
            status_code=status,
        )
        _set_cookie(ctx, response, session)
        return response

    def session_of(request: Request) -> Session:
        return ctx.sessions.open(request.cookies.get(COOKIE)) or new_session()

    async def form_of(request: Request, session: Session) -> dict[str, str]:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not session.csrf_matches(fields.get("csrf")):
            raise Forbidden("the form's CSRF token is missing or stale: reload the page and retry")
        if any(len(v) > MAX_FORM_FIELD_CHARS for v in fields.values()):
            raise InvalidDecision(f"a field is longer than {MAX_FORM_FIELD_CHARS} characters")
        return fields

    @router.get("/login")
    async def login_page(request: Request, next: str = "/") -> Response:
        return render(request, session_of(request), "login.html", next=_local(next))

    @router.post("/login")
    async def login(request: Request) -> Response:
        session = session_of(request)
        fields = await form_of(request, session)
        subject = fields.get("subject", "").strip()
        principal = await ctx.sign_in(subject, fields.get("password", ""))
        if principal is None:
            return render(
                request,
                session,
                "login.html",
                401,
                error="Wrong name or password.",
                next=_local(fields.get("next", "/")),
                subject=subject[:MAX_NAME_CHARS],
            )
        signed_in = new_session(principal.subject, issuer=ctx.directory.description)
        response = RedirectResponse(_local(fields.get("next", "/")), status_code=303)
        _set_cookie(ctx, response, signed_in)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = session_of(request)
        await form_of(request, session)
        ctx.sessions.revoke(session)
        response = RedirectResponse("/login", status_code=303)
        _set_cookie(ctx, response, new_session())
        return response

    @router.get("/")
    async def inbox(request: Request) -> Response:
        session = session_of(request)
        try:
            reviewer = await ctx.reviewer_for_session(session)
        except NotSignedIn:
            return RedirectResponse("/login", status_code=303)
        rows = await waiting_gates(ctx.client, reviewer)
        return render(
            request, session, "inbox.html", reviewer=reviewer, rows=rows, time_left=time_left
        )

    @router.get("/gates/{workflow_id}/{gate}")
    async def gate(request: Request, workflow_id: str, gate: str) -> Response:
        session = session_of(request)
        try:
            reviewer = await ctx.reviewer_for_session(session)
        except NotSignedIn:
            target = f"/gates/{quote(workflow_id, safe='')}/{quote(gate, safe='')}"
            if request.url.query:  # a notification link's exp and sig survive the sign-in
                target += f"?{request.url.query}"
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return await show_gate(request, session, reviewer, workflow_id, gate)

    async def show_gate(
        request: Request,
        session: Session,
        reviewer: Reviewer,
        workflow_id: str,
        gate: str,
        status: int = 200,
        **values: Any,
    ) -> Response:
        page = await gate_page(ctx.client, reviewer, workflow_id, gate, ctx.keyring)
        return render(
            request,
            session,
            "gate.html",
            status,
            reviewer=reviewer,
            page=page,
            nonce=new_nonce(),
            time_left=time_left,
            link_note=_link_note(ctx, request, workflow_id, gate),
            pretty=_pretty,
            done=request.query_params.get("done"),
            max_comment=MAX_COMMENT_CHARS,
            proposed_changes=_proposed_changes(page),
            **values,
        )

    @router.post("/gates/{workflow_id}/{gate}")
    async def decide_here(request: Request, workflow_id: str, gate: str) -> Response:
        session = session_of(request)
        fields = await form_of(request, session)
        reviewer = await ctx.reviewer_for_session(session)
        try:
            decision = _decision(fields)
            receipt = await decide(
                ctx.client,
                ctx.key,
                reviewer,
                workflow_id,
                gate,
                decision,
                nonce=fields.get("nonce") or new_nonce(),
                device=device_of(
                    request.headers.get("user-agent"),
                    request.client.host if request.client else None,
                ),
            )
        except InboxError as exc:
            # A bad form, a reviewer without the gate, or a gate closed or refused by the
            # workflow (409): shown on the page, with what was typed; anything else raises.
            if not isinstance(exc, InvalidDecision | Forbidden) and exc.status != 409:
                raise
            return await show_gate(
                request,
                session,
                reviewer,
                workflow_id,
                gate,
                exc.status,
                error=exc.message,
                reasons=exc.reasons,
                form=fields,
            )
        done = "repeated" if receipt.repeated else fields.get("action", "")
        target = f"/gates/{quote(workflow_id, safe='')}/{quote(gate, safe='')}?done={quote(done)}"
        return RedirectResponse(target, status_code=303)

    return router


def _decision(fields: dict[str, str]) -> DecisionRequest:
    """The decision a gate form posts (its fields are the same as the API's body)."""
    try:
        action = Action(fields.get("action", ""))
    except ValueError:
        raise InvalidDecision("choose approve, reject, modify, reassign or not now") from None
    modifications = None
    if action is Action.MODIFY:
        try:
            modifications = json.loads(fields.get("modifications") or "null")
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InvalidDecision("the changes are not valid JSON", [str(exc)]) from None
        if not isinstance(modifications, dict):
            raise InvalidDecision("the changes must be a JSON object of field: value")
    reassign = None
    if action is Action.REASSIGN:
        reassign = {
            "reviewers": _names(fields.get("reassign_reviewers", "")),
            "roles": _names(fields.get("reassign_roles", "")),
        }
    try:
        return DecisionRequest(
            action=action,
            comment=fields.get("comment") or None,
            modifications=modifications,
            reassign_to=reassign,  # validated into a Reassignment
            on_behalf_of=fields.get("on_behalf_of") or None,
        )
    except ValueError as exc:
        raise InvalidDecision("the form is not valid", [str(exc).splitlines()[0]]) from None


def _names(text: str) -> list[str]:
    return [n for n in (part.strip() for part in text.replace(",", " ").split()) if n]


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _proposed_changes(page: Any) -> str:
    """The modify form's starting text: the proposal's values of the fields a modify may set."""
    schema = page.gate.modify_schema or {}
    fields = list((schema.get("properties") or {}).keys())
    for proposal in reversed(page.proposals):
        values = {k: v for k, v in (proposal.output or {}).items() if k in fields}
        if values:
            return _pretty(values)
    return "{}"


def _local(target: str) -> str:
    """``target`` if it is a path on this site (no open redirect), else ``/``."""
    return (
        target
        if target.startswith("/") and not target.startswith("//") and "\\" not in target
        else "/"
    )


def _link_note(ctx: InboxContext, request: Request, workflow_id: str, gate: str) -> str | None:
    """What a signed notification link says about itself (None: not a signed link)."""
    exp, sig = request.query_params.get("exp"), request.query_params.get("sig")
    if exp is None or sig is None or ctx.link_key is None:
        return None
    problem = link_problem(workflow_id, gate, exp, sig, ctx.link_key, datetime.now(UTC))
    return (
        f"This link is not valid: {problem}."
        if problem
        else "Opened from a notification Keel sent."
    )


def _set_cookie(ctx: InboxContext, response: Response, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        ctx.sessions.seal(session),
        max_age=ctx.sessions.max_age_seconds,
        httponly=True,
        samesite="strict",
        secure=ctx.secure_cookies,
        path="/",
    )
