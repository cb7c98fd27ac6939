"""The codec server: lets the Temporal UI (and ``temporal`` CLI users) read encrypted history.

It speaks Temporal's remote-codec protocol: ``POST /encode`` and ``POST /decode`` with a
body ``{"payloads": [{"metadata": {name: base64}, "data": base64}]}`` (the protobuf JSON of
``Payloads``), answered in the same shape. It is a small HTTP/1.1 server on asyncio (Keel
ships no HTTP framework), bound to 127.0.0.1 by default.

Access: every request needs the bearer token, either as ``Authorization: Bearer TOKEN`` or
as the first path segment (``/TOKEN/decode``): the UI of the dev server sends no
credentials of its own, so ``keel dev`` gives it the endpoint ``http://HOST:PORT/TOKEN``.
Tokens are compared in constant time; a request without a valid one gets 401. CORS
admits the UI's origin (``KEEL_UI_URL``, and its ``localhost``/``127.0.0.1`` twin): the
preflight ``OPTIONS`` is answered, unauthenticated as browsers send it, allowing the
headers the UI sends (``Content-Type``, ``X-Namespace``, ``Authorization``). Bodies larger
than ``max_bytes`` get 413 unread; malformed ones 400; a payload that cannot be opened
(unknown key id, changed bytes) 422.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from temporalio.api.common.v1 import Payloads

from keel.workers.codec import EncryptionCodec, PayloadDecryptionError

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
"""Largest request line plus headers read."""
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
READ_TIMEOUT_SECONDS = 30.0
_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    422: "Unprocessable Content",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class HttpError(Exception):
    """A request refused with ``status`` and a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def ui_origins(ui_url: str) -> list[str]:
    """The browser origins of the UI at ``ui_url``: its own, and for a loopback host the
    same port under ``localhost`` and ``127.0.0.1``."""
    parts = urlsplit(ui_url)
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    origins = [origin]
    host, port = parts.hostname or "", f":{parts.port}" if parts.port else ""
    if host in ("localhost", "127.0.0.1"):
        twin = "127.0.0.1" if host == "localhost" else "localhost"
        origins.append(f"{parts.scheme}://{twin}{port}")
    return origins


class CodecServer:
    """Serve ``codec`` over HTTP for the block (``async with``).

    Args:
        codec: the history-encryption codec (raising, not refusing, on bad payloads).
        token: the bearer token every request must carry.
        origins: browser origins allowed by CORS (see ``ui_origins``).
        host: interface to bind.
        port: port to bind (0: any free one; ``port`` says which after start).
        max_bytes: largest request body read.
    """

    def __init__(
        self,
        codec: EncryptionCodec,
        *,
        token: str,
        origins: Sequence[str],
        host: str = "127.0.0.1",
        port: int = 0,
        max_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        if not token:
            raise ValueError("the codec server needs a token")
        self.codec = codec.with_refusing(False)
        self._token = token.encode()
        self.origins = {origin.lower().rstrip("/") for origin in origins}
        self.host = host
        self.port = port
        self.max_bytes = max_bytes
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        """Base URL (``POST {url}/decode`` with the bearer token)."""
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        """The bearer token requests must carry."""
        return self._token.decode()

    @property
    def ui_endpoint(self) -> str:
        """The endpoint for ``--ui-codec-endpoint``: the token as the first path segment."""
        return f"{self.url}/{self.token}"

    async def __aenter__(self) -> CodecServer:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEAD_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        origin = ""
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                    method, path, headers = await _read_head(reader)
                    origin = headers.get("origin", "")
                    status, body = await self._respond(method, path, headers, reader)
            except HttpError as err:
                status, body = err.status, {"error": str(err)}
            except TimeoutError:
                status, body = 400, {"error": "request not received in time"}
            await _write(writer, status, body, self._cors(origin, status))
            if status == 413:  # let the client finish sending, so it reads the answer
                await _discard(reader, self.max_bytes)
        except (ConnectionError, OSError):
            pass  # the client went away
        except Exception:  # never let one request take the server down
            log.exception("codec server: request failed")
            with contextlib.suppress(Exception):
                await _write(writer, 500, {"error": "internal error"}, self._cors(origin, 500))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _cors(self, origin: str, status: int) -> dict[str, str]:
        if origin.lower().rstrip("/") not in self.origins:
            return {"Vary": "Origin"}
        return {
            "Vary": "Origin",
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
        }

    async def _respond(
        self, method: str, path: str, headers: dict[str, str], reader: asyncio.StreamReader
    ) -> tuple[int, Any]:
        token, action = self._route(path)
        if method == "OPTIONS":
            return 204, None  # a preflight carries no credentials; the CORS headers answer
        if method != "POST":
            raise HttpError(405, f"{method[:16]} is not allowed; POST /encode or /decode")
        if not self._authorized(token, headers.get("authorization", "")):
            raise HttpError(401, "missing or wrong bearer token")
        body = await self._read_body(headers, reader)
        payloads = _parse_payloads(body)
        try:
            if action == "encode":
                out = await self.codec.encode(payloads.payloads)
            else:
                out = await self.codec.decode(payloads.payloads)
        except PayloadDecryptionError as err:
            raise HttpError(422, str(err)) from None
        return 200, MessageToDict(Payloads(payloads=out))

    def _route(self, path: str) -> tuple[bytes | None, str]:
        parts = [p for p in urlsplit(path).path.split("/") if p]
        if len(parts) == 1 and parts[0] in ("encode", "decode"):
            return None, parts[0]
        if len(parts) == 2 and parts[1] in ("encode", "decode"):
            return parts[0].encode(), parts[1]
        raise HttpError(404, "not found; POST /encode or /decode")

    def _authorized(self, path_token: bytes | None, authorization: str) -> bool:
        scheme, _, given = authorization.partition(" ")
        bearer = given.strip().encode() if scheme.lower() == "bearer" else b""
        candidates = [t for t in (path_token, bearer) if t]
        return any(hmac.compare_digest(t, self._token) for t in candidates)

    async def _read_body(self, headers: dict[str, str], reader: asyncio.StreamReader) -> bytes:
        if "transfer-encoding" in headers:
            raise HttpError(411, "send the body with a Content-Length, not chunked")
        length_text = headers.get("content-length")
        if length_text is None:
            raise HttpError(411, "Content-Length required")
        if not length_text.isdigit():
            raise HttpError(400, "Content-Length is not a number")
        length = int(length_text)
        if length > self.max_bytes:
            raise HttpError(413, f"body of {length} bytes; the limit is {self.max_bytes}")
        try:
            return await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise HttpError(400, "body shorter than its Content-Length") from None


async def _discard(reader: asyncio.StreamReader, limit: int) -> None:
    """Read and drop up to ``limit`` bytes for a second (a refused body still in flight)."""
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        async with asyncio.timeout(1.0):
            while limit > 0 and (chunk := await reader.read(min(limit, 65536))):
                limit -= len(chunk)


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError(431, f"request head over {MAX_HEAD_BYTES} bytes") from None
    except asyncio.IncompleteReadError:
        raise ConnectionError("client closed the connection") from None
    lines = head.decode("latin-1").split("\r\n")
    request = lines[0].split(" ")
    if len(request) != 3 or not request[2].startswith("HTTP/1."):
        raise HttpError(400, "not an HTTP/1.x request")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpError(400, "malformed header line")
            headers[name.strip().lower()] = value.strip()
    return request[0].upper(), request[1], headers


def _parse_payloads(body: bytes) -> Payloads:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise HttpError(400, "body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("payloads"), list):
        raise HttpError(400, 'body must be {"payloads": [{"metadata": {...}, "data": "..."}]}')
    try:
        return ParseDict(document, Payloads(), ignore_unknown_fields=True)
    except (ParseError, ValueError, TypeError, RecursionError) as err:
        raise HttpError(400, f"malformed payloads: {str(err)[:200]}") from None


async def _write(
    writer: asyncio.StreamWriter, status: int, body: Any, headers: dict[str, str]
) -> None:
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    extra = {"Content-Length": str(len(data)), "Connection": "close", **headers}
    if body is not None:
        extra["Content-Type"] = "application/json"
    if status == 401:
        extra["WWW-Authenticate"] = 'Bearer realm="keel-codec"'
    lines += [f"{name}: {value}" for name, value in extra.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)
    await writer.drain()
