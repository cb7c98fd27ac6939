"""A local webhook receiver for the notification tests: it keeps every request it gets.

``WebhookReceiver`` is an ``http.server`` in a thread of its own on 127.0.0.1. Each request
is kept as a ``Delivery`` (raw body, headers) *before* the receiver answers, so a test sees
what reached the receiver even when the sender died waiting for the answer. What it answers
is the test's to set: ``status`` (200 by default), ``hold`` (answer only once the event is
set: the test kills the sender meanwhile), and ``down_for`` (the first N requests are
answered 503, as a load balancer answers for a receiver that is down).

It counts both ways a test states: ``raw`` (every POST that reached it) and ``distinct``
(different ``Keel-Delivery-Id`` values: what a deduplicating receiver shows).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from keel.contracts.notifications import DELIVERY_HEADER


@dataclass(frozen=True)
class Delivery:
    """One request as the receiver got it."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def delivery_id(self) -> str:
        return self.headers.get(DELIVERY_HEADER.lower(), "")

    def json(self) -> dict[str, Any]:
        parsed = json.loads(self.body)
        assert isinstance(parsed, dict)
        return parsed


@dataclass
class _State:
    deliveries: list[Delivery] = field(default_factory=list)
    status: int = 200
    down_for: int = 0
    hold: threading.Event | None = None
    got: threading.Condition = field(default_factory=threading.Condition)


class WebhookReceiver:
    """A webhook receiver on 127.0.0.1 (``port`` 0: any free one; read ``.url``)."""

    def __init__(self, port: int = 0) -> None:
        self.state = _State()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the receiver is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    @property
    def deliveries(self) -> list[Delivery]:
        with self.state.got:
            return list(self.state.deliveries)

    def raw(self, delivery_id: str | None = None) -> int:
        """Requests that reached the receiver (with ``delivery_id``, if given)."""
        return sum(1 for d in self.deliveries if delivery_id in (None, d.delivery_id))

    def distinct(self) -> set[str]:
        """The different delivery ids received (what a deduplicating receiver shows)."""
        return {d.delivery_id for d in self.deliveries}

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Delivery]:
        """Block until ``count`` requests have arrived (a thread; use asyncio.to_thread)."""
        with self.state.got:
            arrived = self.state.got.wait_for(lambda: len(self.state.deliveries) >= count, timeout)
            assert arrived, f"{len(self.state.deliveries)} of {count} deliveries within {timeout}s"
            return list(self.state.deliveries)

    def start(self) -> WebhookReceiver:
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with state.got:
                    status = 503 if state.down_for > 0 else state.status
                    state.down_for = max(0, state.down_for - 1)
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    state.deliveries.append(Delivery(self.path, headers, body, status))
                    state.got.notify_all()
                    hold = state.hold
                if hold is not None:
                    hold.wait(120)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.state.hold is not None:
            self.state.hold.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
