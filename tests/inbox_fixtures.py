"""A running inbox for tests: a directory of reviewers, the inbox app over a dev server,
and a worker that trusts the inbox's key (the inbox registers it in the worker's data dir)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from temporalio.client import Client, WorkflowHandle

from keel import testing
from keel.inbox.app import create_app
from keel.inbox.context import InboxContext
from keel.inbox.directory import (
    Delegation,
    FileDirectory,
    Principal,
    hash_password,
    write_directory_file,
)
from keel.inbox.server import build_context, register_key
from keel.scenarios.contract_review import ContractReviewWorkflow
from keel.settings import KeelSettings
from tests.conftest import offline_settings
from tests.samples import load_sample

PASSWORD = "a reviewer's password"
REVIEWERS = {
    "legal.priya": ("legal",),
    "legal.sam": ("legal",),
    "gc.morgan": ("general-counsel",),
    "support.agent.ana": ("support-agent",),
    "away.deputy": (),
}
"""Subject: roles. ``legal.sam`` delegates to ``away.deputy`` (who has no role)."""


@dataclass
class Inbox:
    """A test inbox: its app, context, settings and the worker's task queue."""

    app: FastAPI
    ctx: InboxContext
    settings: KeelSettings
    client: Client
    task_queue: str

    def http(self) -> httpx.AsyncClient:
        """An HTTP client of the app (in process)."""
        transport = httpx.ASGITransport(app=self.app, client=("203.0.113.7", 5555))
        return httpx.AsyncClient(transport=transport, base_url="http://inbox.test")

    async def token(self, subject: str) -> dict[str, str]:
        """Authorization headers of an API token for ``subject``."""
        async with self.http() as http:
            answer = await http.post("/api/tokens", json={"subject": subject, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        return {"authorization": f"Bearer {answer.json()['access_token']}"}

    async def contract_review(
        self, sample: str = "contract-medium-risk"
    ) -> WorkflowHandle[Any, Any]:
        """A contract review started on the worker (it stops at a gate)."""
        return await self.client.start_workflow(
            ContractReviewWorkflow.run,
            load_sample(sample),
            id=f"inbox-{uuid.uuid4()}",
            task_queue=self.task_queue,
        )


def write_test_directory(path: Path) -> None:
    """The test reviewers, each with ``PASSWORD``."""
    hashed = hash_password(PASSWORD)
    until = datetime.now(UTC) + timedelta(days=1)
    write_directory_file(
        path,
        [
            Principal(
                subject=subject,
                display_name=subject.split(".")[-1].title(),
                roles=roles,
                password_hash=hashed,
                delegations=(Delegation(to="away.deputy", until=until),)
                if subject == "legal.sam"
                else (),
            )
            for subject, roles in REVIEWERS.items()
        ],
    )


@asynccontextmanager
async def running_inbox(client: Client, data_dir: Path) -> AsyncIterator[Inbox]:
    """An inbox over ``client`` with a worker trusting its key."""
    settings = offline_settings(data_dir=data_dir)
    write_test_directory(data_dir / "directory.json")
    ctx = build_context(settings, client, directory=FileDirectory(data_dir / "directory.json"))
    register_key(settings, ctx.key)
    async with AsyncExitStack() as stack:
        queue = await stack.enter_async_context(testing.keel_worker(client, settings=settings))
        yield Inbox(create_app(ctx), ctx, settings, client, queue)


@contextmanager
def local_jwks(*public_jwks: dict[str, Any]) -> Iterator[str]:
    """A local HTTP server publishing ``public_jwks`` as a key set (no identity provider);
    yields its URL."""
    body = json.dumps({"keys": list(public_jwks)}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
