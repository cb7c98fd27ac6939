"""The inbox as one ASGI app: the pages, the ``/api`` routes and their OpenAPI document.

FastAPI gives the API its OpenAPI document from the same models that validate requests
(so the spec cannot drift from the code, and schemathesis tests the one against the other);
the pages are server-rendered templates on the same app, sharing its authentication and
decision path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.inbox.api import api_router
from keel.inbox.context import InboxContext
from keel.inbox.errors import InboxError, NotSignedIn
from keel.inbox.web import web_router

MAX_BODY_BYTES = 64 * 1024
"""Largest request body read (a decision with its changes is a few kilobytes)."""
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def create_app(ctx: InboxContext) -> FastAPI:
    """The inbox app over ``ctx``."""
    app = FastAPI(
        title="Keel inbox",
        version="1",
        description="Gates waiting for reviewers: list them, read one, decide it (signed).",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.include_router(api_router(ctx))
    app.include_router(web_router(ctx))
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    app.add_exception_handler(InboxError, _inbox_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_middleware(_Guard)
    return app


async def _inbox_error(request: Request, exc: InboxError) -> Response:
    if request.url.path.startswith("/api"):
        headers = {"www-authenticate": "Bearer"} if isinstance(exc, NotSignedIn) else None
        return JSONResponse(
            {"error": exc.message, "reasons": exc.reasons}, status_code=exc.status, headers=headers
        )
    return TEMPLATES.TemplateResponse(
        request, "error.html", {"message": exc.message, "reasons": exc.reasons}, exc.status
    )


async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
    reasons = [
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
        for e in exc.errors()[:10]
    ]
    return JSONResponse({"error": "the request is not valid", "reasons": reasons}, 422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    body: dict[str, Any] = {"error": str(exc.detail), "reasons": []}
    if request.url.path.startswith("/api"):
        return JSONResponse(body, exc.status_code, headers=exc.headers)
    return TEMPLATES.TemplateResponse(
        request, "error.html", {"message": str(exc.detail), "reasons": []}, exc.status_code
    )


class _Guard:
    """Bounds request bodies (413 past ``MAX_BODY_BYTES``, whether announced or streamed)
    and adds the security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await _too_large(send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise _TooLarge
            return message

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [
                    (k.encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k.encode() not in present
                ]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, bounded, with_headers)
        except _TooLarge:
            await _too_large(send)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send) -> None:
    body = b'{"error":"the request is too large","reasons":["at most 65536 bytes"]}'
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), *_header_pairs()],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header_pairs() -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
