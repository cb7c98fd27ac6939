"""``keel demo``'s scripted reviewers, deciding through the inbox's HTTP API.

The demo starts an inbox of its own (on a free port, over a directory of the built-in
reviewers with fresh passwords under ``data_dir/demo/``), signs in as each scripted reviewer
(``POST /api/tokens``) and decides each gate with ``POST /api/gates/.../decisions``: the
path an approval tool takes, so every decision in the demo's ledgers is signed by the inbox
and names an authenticated reviewer. A gate that needs more approvals than the script gives
is approved by the next eligible reviewer of the directory, as a second approver would.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from temporalio.client import Client

from keel.contracts.gates import GateView, ReviewReceipt
from keel.errors import KeelUserError
from keel.inbox.access import may_decide
from keel.inbox.accounts import BUILT_IN_REVIEWERS, write_accounts
from keel.inbox.directory import FileDirectory
from keel.inbox.server import serving
from keel.settings import KeelSettings

REQUEST_TIMEOUT_SECONDS = 60.0


@dataclass
class ApiReviewer:
    """Signs in as reviewers and decides gates through one inbox's API."""

    url: str
    passwords: dict[str, str]
    http: httpx.AsyncClient
    tokens: dict[str, str] = field(default_factory=dict)

    async def decide(
        self,
        workflow_id: str,
        gate: GateView,
        *,
        reviewer: str,
        decision: str,
        comment: str,
        modifications: dict[str, Any] | None = None,
    ) -> list[tuple[str, ReviewReceipt]]:
        """Decide ``gate`` as ``reviewer``, then approve with further reviewers while an
        approval leaves it open; each (reviewer, receipt).

        Raises:
            KeelUserError: the inbox refused a decision (its reasons in the message).
        """
        action = "modify" if modifications else decision
        body: dict[str, Any] = {"action": action, "comment": comment}
        if modifications:
            body["modifications"] = modifications
        receipt = await self._post(workflow_id, gate.gate, reviewer, body)
        done = [(reviewer, receipt)]
        while receipt.state.open and receipt.approvals < receipt.approvals_needed:
            approved = {who for who, _ in done} | set(gate.approved_by)
            nxt = self._another_approver(gate, approved)
            receipt = await self._post(
                workflow_id, gate.gate, nxt, {"action": "approve", "comment": comment}
            )
            done.append((nxt, receipt))
        return done

    def _another_approver(self, gate: GateView, approved: set[str]) -> str:
        for subject, (_, roles) in BUILT_IN_REVIEWERS.items():
            if subject not in approved and may_decide(subject, roles, gate):
                return subject
        raise KeelUserError(f"no further reviewer may approve gate {gate.gate}")

    async def _post(
        self, workflow_id: str, gate: str, reviewer: str, body: dict[str, Any]
    ) -> ReviewReceipt:
        path = f"/api/gates/{quote(workflow_id, safe='')}/{quote(gate, safe='')}/decisions"
        headers = {"authorization": f"Bearer {await self._token(reviewer)}"}
        answer = await self.http.post(path, json=body, headers=headers)
        if answer.status_code != 200:
            raise KeelUserError(f"the inbox refused {reviewer}'s {body['action']}: {_why(answer)}")
        return ReviewReceipt.model_validate(answer.json())

    async def _token(self, reviewer: str) -> str:
        if reviewer not in self.tokens:
            password = self.passwords.get(reviewer)
            if password is None:
                raise KeelUserError(f"the demo has no account for reviewer {reviewer!r}")
            answer = await self.http.post(
                "/api/tokens", json={"subject": reviewer, "password": password}
            )
            if answer.status_code != 200:
                raise KeelUserError(f"{reviewer} could not sign in: {_why(answer)}")
            self.tokens[reviewer] = answer.json()["access_token"]
        return self.tokens[reviewer]


def _why(answer: httpx.Response) -> str:
    try:
        body = answer.json()
        return "; ".join([body.get("error", ""), *body.get("reasons", [])])
    except ValueError:
        return f"HTTP {answer.status_code}"


@contextlib.asynccontextmanager
async def demo_reviewers(settings: KeelSettings, client: Client) -> AsyncIterator[ApiReviewer]:
    """An inbox for the demo's reviewers, and a client that decides through its API."""
    home = settings.data_dir / "demo"
    directory = home / "directory.json"
    passwords = write_accounts(directory, home / "passwords.txt")
    async with (
        serving(settings, client, port=0, directory=FileDirectory(directory)) as inbox,
        httpx.AsyncClient(base_url=inbox.url, timeout=REQUEST_TIMEOUT_SECONDS) as http,
    ):
        yield ApiReviewer(inbox.url, passwords, http)
