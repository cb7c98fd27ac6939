"""A scriptable local fake of the OpenAI and Anthropic HTTP APIs, for tests.

It speaks the real wire formats (bodies, error shapes, ``retry-after`` and request-id
headers) on ``POST .../chat/completions`` and ``POST .../v1/messages``, so tests drive the
real SDK clients. Each request takes the next scripted ``Reply``; with the script empty,
``server.responder(request_json)`` returns the answer object (default ``{}``) or a ``Reply``::

    with FakeModelServer() as server:
        server.script(Reply.error(429, retry_after=2), Reply.json({"answer": 42}))
        ...  # point a provider at server.base_url_openai / server.base_url_anthropic
        assert server.calls == 2 and server.requests[-1].schema == {...}
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Usage = tuple[int, int]
Wire = Literal["openai", "anthropic", "unknown"]
_ROUTES: dict[str, Wire] = {"/chat/completions": "openai", "/v1/messages": "anthropic"}
# Error ``type`` and ``code`` values as the real APIs send them, by HTTP status.
_OPENAI_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
_ANTHROPIC_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_ANTHROPIC_TYPES |= {404: "not_found_error", 413: "request_too_large", 529: "overloaded_error"}


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP answer; build it with the class methods."""

    kind: Literal["json", "content", "error", "raw"]
    value: Any = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    model: str | None = None  # the reply's model; None echoes the requested one
    usage: Usage | None = None  # (input, output) tokens; estimated from sizes if None
    content_type: str = "application/json"

    @classmethod
    def json(cls, obj: Any, *, model: str | None = None, usage: Usage | None = None) -> Reply:
        """A completion answering ``obj`` (OpenAI: JSON content; Anthropic: tool input)."""
        return cls("json", obj, model=model, usage=usage)

    @classmethod
    def content(cls, text: str, *, model: str | None = None, usage: Usage | None = None) -> Reply:
        """A valid completion whose content is ``text`` verbatim (Anthropic: a text block)."""
        return cls("content", text, model=model, usage=usage)

    @classmethod
    def error(
        cls, status: int, message: str | None = None, *, retry_after: float | str | None = None
    ) -> Reply:
        """An error in the API's own body shape; ``retry_after`` becomes the header."""
        headers = {} if retry_after is None else {"retry-after": f"{retry_after}"}
        return cls("error", message, status=status, headers=headers)

    @classmethod
    def malformed_body(
        cls, body: str = '{"id": "trunc', content_type: str = "application/json"
    ) -> Reply:
        """HTTP 200 with a body that is no completion: truncated JSON, a proxy's HTML page..."""
        return cls("raw", body, content_type=content_type)

    def delayed(self, seconds: float) -> Reply:
        """This reply, sent ``seconds`` late (e.g. to trip a client timeout)."""
        return dataclasses.replace(self, delay=seconds)


def request_schema(body: Any) -> Any:
    """The JSON schema a request body asks for, in either wire format (None if absent)."""
    if isinstance(body, dict) and "response_format" in body:
        return body["response_format"].get("json_schema", {}).get("schema")
    return (body.get("tools") or [{}])[0].get("input_schema") if isinstance(body, dict) else None


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received; ``headers`` keys are lower-case."""

    wire: Wire
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def api_key(self) -> str | None:
        bearer = self.headers.get("authorization", "").removeprefix("Bearer ")
        return self.headers.get("x-api-key") or bearer or None

    @property
    def schema(self) -> Any:
        return request_schema(self.body)


class FakeModelServer:
    """The server: serves on 127.0.0.1 (a free port) from a thread while inside ``with``.

    ``responder`` may be replaced at any time; if it raises, the client gets a 500 saying so.
    """

    def __init__(self, responder: Callable[[Any], Any] | None = None) -> None:
        self.responder: Callable[[Any], Any] = responder or (lambda body: {})
        self._script: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock, self._closing = threading.Lock(), threading.Event()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,))
        self.base_url_anthropic = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.base_url_openai = f"{self.base_url_anthropic}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request (OpenAI or Anthropic) takes the next one."""
        with self._lock:
            self._script.extend(replies)

    def env(self, keel_model: str, api_key: str = "sk-fake") -> dict[str, str]:
        """Environment for a worker using this server, e.g. ``env("openai:gpt-4o-mini")``."""
        if keel_model.startswith("anthropic:"):
            urls = {"ANTHROPIC_BASE_URL": self.base_url_anthropic, "ANTHROPIC_API_KEY": api_key}
        else:
            urls = {"OPENAI_BASE_URL": self.base_url_openai, "OPENAI_API_KEY": api_key}
        return {"KEEL_MODEL": keel_model, **urls}

    def __enter__(self) -> FakeModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()  # wakes delayed replies so their handler threads finish
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _handle(self, handler: _Handler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("content-length") or 0))
        body = json.loads(raw) if raw else None  # the SDKs always send JSON
        path = handler.path.split("?")[0]
        wire: Wire = next((wire for end, wire in _ROUTES.items() if path.endswith(end)), "unknown")
        rec = RecordedRequest(wire, path, {k.lower(): v for k, v in handler.headers.items()}, body)
        with self._lock:
            self._requests.append(rec)
            number = len(self._requests)
            scripted = self._script.popleft() if self._script and rec.wire != "unknown" else None
        reply = scripted or self._respond(rec)
        self._closing.wait(reply.delay)
        status, out_headers, payload = _render(reply, rec, f"req_fake_{number}")
        handler.send_response(status)
        for name, value in {**out_headers, "content-length": str(len(payload))}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _respond(self, rec: RecordedRequest) -> Reply:
        if rec.wire == "unknown":
            return Reply.error(404, f"fake model server: no route for {rec.path}")
        try:
            out = self.responder(rec.body)
        except Exception as exc:
            return Reply.error(500, f"fake model server: the responder raised {exc!r}")
        return out if isinstance(out, Reply) else Reply.json(out)


def _render(reply: Reply, rec: RecordedRequest, req_id: str) -> tuple[int, dict[str, str], bytes]:
    anthropic = rec.wire == "anthropic"
    headers = {"request-id" if anthropic else "x-request-id": req_id}
    headers |= {"content-type": reply.content_type, **reply.headers}
    if reply.kind == "raw":
        return reply.status, headers, str(reply.value).encode()
    if reply.kind == "error":
        return reply.status, headers, json.dumps(_error(reply, anthropic, req_id)).encode()
    text = reply.value if reply.kind == "content" else json.dumps(reply.value)
    usage = reply.usage or (max(1, len(json.dumps(rec.body)) // 4), max(1, len(text) // 4))
    body: dict[str, Any] = {"model": reply.model or rec.model or "fake-model"}
    if anthropic:  # a json answer comes as input of the tool the request forced, as Claude does
        tool = (rec.body.get("tool_choice") or {}).get("name") or "answer"
        block = {"type": "tool_use", "id": "toolu_1", "name": tool, "input": reply.value}
        if reply.kind == "content":
            block = {"type": "text", "text": text}
        body |= {"id": f"msg_{req_id}", "type": "message", "role": "assistant"}
        body |= {"content": [block], "stop_sequence": None}
        body |= {"stop_reason": "tool_use" if reply.kind == "json" else "end_turn"}
        body |= {"usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}
    else:
        message = {"role": "assistant", "content": text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        body |= {"id": f"chatcmpl-{req_id}", "object": "chat.completion", "created": 1}
        tokens = dict(prompt_tokens=usage[0], completion_tokens=usage[1], total_tokens=sum(usage))
        body |= {"choices": [choice], "usage": tokens}
    return 200, headers, json.dumps(body).encode()


def _error(reply: Reply, anthropic: bool, request_id: str) -> dict[str, Any]:
    message = reply.value or f"fake HTTP {reply.status} error"
    if anthropic:
        kind = _ANTHROPIC_TYPES.get(reply.status, "api_error" if reply.status >= 500 else None)
        error = {"type": kind or "invalid_request_error", "message": message}
        return {"type": "error", "error": error, "request_id": request_id}
    kind = "server_error" if reply.status >= 500 else "invalid_request_error"
    kind = "requests" if reply.status == 429 else kind
    code = _OPENAI_CODES.get(reply.status)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _HTTPServer(ThreadingHTTPServer):
    fake: FakeModelServer
    daemon_threads = False  # server_close() joins handler threads: nothing outlives ``with``

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out has closed its socket, so the late write fails: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    # HTTP/1.0 closes each connection after one reply, so closing never waits on an idle
    # keep-alive connection and each SDK call shows as exactly one request.
    protocol_version = "HTTP/1.0"
    timeout = 10  # a stuck client cannot hold a handler thread (and close()) for long

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet
