"""The codec server the Temporal UI decodes history with: Temporal's remote-codec JSON over
HTTP, CORS for the UI, a bearer token, bounded bodies. Spoken to over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload

from keel.workers.codec import ENCODING, KEY_ID, CodecKeyring, EncryptionCodec, new_key_entry
from keel.workers.codec_server import CodecServer, ui_origins
from tests.conftest import BIN, REVIEW_ENV, free_port

TOKEN = "t0ken-for-the-tests"
UI = "http://127.0.0.1:8233"
KEYS = CodecKeyring.parse(new_key_entry("ui-1"))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def http(
    server: CodecServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    raw_head: bytes | None = None,
) -> Reply:
    """One HTTP/1.1 request on a fresh connection, as a browser or curl sends it."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        if raw_head is None:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {server.host}:{server.port}"]
            all_headers = {**(headers or {})}
            if body is not None:
                all_headers.setdefault("Content-Length", str(len(body)))
            lines += [f"{k}: {v}" for k, v in all_headers.items()]
            raw_head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        writer.write(raw_head + (body or b""))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines)
    return Reply(int(status_line.split(" ")[1]), {k.lower(): v for k, v in parsed.items()}, payload)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body_of(*values: str) -> bytes:
    payloads = [
        {"metadata": {"encoding": b64(b"json/plain")}, "data": b64(json.dumps(v).encode())}
        for v in values
    ]
    return json.dumps({"payloads": payloads}).encode()


AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
async def server() -> AsyncIterator[CodecServer]:
    async with CodecServer(
        EncryptionCodec(KEYS), token=TOKEN, origins=ui_origins(UI), max_bytes=64 * 1024
    ) as running:
        yield running


async def test_encode_then_decode_round_trips_in_temporals_json_format(
    server: CodecServer,
) -> None:
    encoded = await http(server, "POST", "/encode", body_of("ada@example.com", "+1 415"), AUTH)
    assert encoded.status == 200 and encoded.headers["content-type"] == "application/json"
    payloads = encoded.json()["payloads"]
    assert len(payloads) == 2
    assert base64.b64decode(payloads[0]["metadata"]["encoding"]) == ENCODING
    assert base64.b64decode(payloads[0]["metadata"][KEY_ID]) == b"ui-1"
    assert b"ada@example.com" not in base64.b64decode(payloads[0]["data"])

    decoded = await http(server, "POST", "/decode", json.dumps(encoded.json()).encode(), AUTH)
    assert decoded.status == 200
    values = [json.loads(base64.b64decode(p["data"])) for p in decoded.json()["payloads"]]
    assert values == ["ada@example.com", "+1 415"]
    encodings = [base64.b64decode(p["metadata"]["encoding"]) for p in decoded.json()["payloads"]]
    assert encodings == [b"json/plain", b"json/plain"]


async def test_the_ui_endpoint_carries_the_token_in_its_path(server: CodecServer) -> None:
    """The dev server's UI sends no credentials: ``--ui-codec-endpoint`` holds the token."""
    assert server.ui_endpoint == f"{server.url}/{TOKEN}"
    ok = await http(server, "POST", f"/{TOKEN}/encode", body_of("x"), {"X-Namespace": "default"})
    assert ok.status == 200
    wrong = await http(server, "POST", "/not-the-token/encode", body_of("x"))
    assert wrong.status == 401


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}", "Bearer", ""],
)
async def test_a_request_without_the_token_gets_401(
    server: CodecServer, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json", "Origin": UI}
    if authorization is not None:
        headers["Authorization"] = authorization
    for action in ("encode", "decode"):
        reply = await http(server, "POST", f"/{action}", body_of("secret"), headers)
        assert reply.status == 401
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert b"secret" not in reply.body
        # The UI can still read why (CORS headers on the error too).
        assert reply.headers["access-control-allow-origin"] == UI


async def test_the_cors_preflight_allows_the_uis_origin_and_headers(server: CodecServer) -> None:
    preflight = {
        "Origin": UI,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    reply = await http(server, "OPTIONS", "/decode", None, preflight)
    assert reply.status == 204  # no token: browsers send preflights without credentials
    assert reply.headers["access-control-allow-origin"] == UI
    assert "POST" in reply.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in reply.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-namespace"} <= allowed
    assert reply.headers["access-control-allow-credentials"] == "true"
    # The same UI under localhost is the same UI; another origin is not allowed.
    twin = await http(
        server, "OPTIONS", "/decode", None, {**preflight, "Origin": "http://localhost:8233"}
    )
    assert twin.headers["access-control-allow-origin"] == "http://localhost:8233"
    other = await http(
        server, "OPTIONS", "/decode", None, {**preflight, "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"payloads": "nope"}',
        b'{"payloads": [{"data": "***not base64***"}]}',
        b'{"payloads": [{"metadata": {"encoding": 5}, "data": ""}]}',
        b'{"payloads": [7]}',
        b"[" * 10_000 + b"]" * 10_000,
    ],
)
async def test_a_malformed_body_gets_400(server: CodecServer, body: bytes) -> None:
    reply = await http(server, "POST", "/decode", body, AUTH)
    assert reply.status == 400, reply.body
    assert "error" in reply.json()


async def test_an_oversized_body_gets_413_unread(server: CodecServer) -> None:
    huge = body_of("x" * (server.max_bytes + 1))
    reply = await http(server, "POST", "/encode", huge, AUTH)
    assert reply.status == 413
    assert str(server.max_bytes) in reply.json()["error"]
    # Refused by its declared length, before a byte of it is read.
    head = (
        f"POST /encode HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {10**12}\r\n\r\n"
    ).encode()
    declared = await http(server, "POST", "/encode", raw_head=head)
    assert declared.status == 413


async def test_a_payload_it_cannot_open_gets_422_with_the_reason(server: CodecServer) -> None:
    foreign = EncryptionCodec(CodecKeyring.parse(new_key_entry("other-1")))
    sealed = foreign.seal(Payload(metadata={"encoding": b"json/plain"}, data=b'"x"'))
    body = json.dumps(
        {
            "payloads": [
                {
                    "metadata": {k: b64(v) for k, v in sealed.metadata.items()},
                    "data": b64(sealed.data),
                }
            ]
        }
    ).encode()
    reply = await http(server, "POST", "/decode", body, AUTH)
    assert reply.status == 422 and "other-1" in reply.json()["error"]


async def test_other_paths_and_methods_are_refused(server: CodecServer) -> None:
    assert (await http(server, "POST", "/", body_of("x"), AUTH)).status == 404
    assert (await http(server, "POST", "/a/b/decode", body_of("x"), AUTH)).status == 404
    assert (await http(server, "GET", "/decode", None, AUTH)).status == 405
    no_length = f"POST /decode HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    assert (await http(server, "POST", "/decode", raw_head=no_length)).status == 411
    garbage = await http(server, "POST", "/", raw_head=b"hello\r\n\r\n")
    assert garbage.status == 400
    # ...and the server still answers.
    assert (await http(server, "POST", "/encode", body_of("x"), AUTH)).status == 200


# --- as `keel dev` runs it -----------------------------------------------------------------


def fetch(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.mark.integration
async def test_keel_dev_starts_the_codec_server_and_points_its_ui_at_it(tmp_path: Path) -> None:
    ui = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "KEEL_UI_PORT": ui.rsplit(":", 1)[1],
        "KEEL_UI_URL": ui,
        **REVIEW_ENV,  # the test kit signs the reviews these processes take
        "KEEL_DATA_DIR": str(tmp_path / "data"),
        "KEEL_MODEL": "offline",
        "KEEL_SMTP_PORT": str(free_port()),
    }
    env.pop("KEEL_CODEC_KEYS", None)
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "keel"),
        "dev",
        "--no-worker",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    printed: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while b"keel dev:" not in (line := await proc.stdout.readline()):
                assert line, "keel dev exited before it was ready:\n" + b"".join(printed).decode()
                printed.append(line)
        note = next(line.decode() for line in printed if line.startswith(b"codec:"))
        found = re.search(r"codec server for the UI at (\S+) \(token (\S+)\)", note)
        assert found, note
        url, token = found[1], found[2]
        assert f"--codec-auth 'Bearer {token}'" in note  # how to pass it, spelled out
        # No key was configured: the dev stack generated one, kept for the next run.
        assert "codec-keys" in note and (tmp_path / "data/keys/codec-keys").exists()

        # The UI was told where the codec server is (with the token, as it sends none).
        status, _, body = await asyncio.to_thread(fetch, f"{ui}/api/v1/settings")
        assert status == 200
        assert json.loads(body)["Codec"]["Endpoint"] == f"{url}/{token}"

        # The codec server answers the UI's preflight, and refuses requests without the token.
        preflight = {
            "Origin": ui,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        }
        status, headers, _ = await asyncio.to_thread(
            fetch, f"{url}/{token}/decode", "OPTIONS", None, preflight
        )
        assert status == 204 and headers["Access-Control-Allow-Origin"] == ui
        status, _, _ = await asyncio.to_thread(fetch, f"{url}/encode", "POST", body_of("x"))
        assert status == 401
        bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        status, _, encoded = await asyncio.to_thread(
            fetch, f"{url}/encode", "POST", body_of("maya"), bearer
        )
        assert status == 200 and b"maya" not in encoded
        status, _, decoded = await asyncio.to_thread(
            fetch, f"{url}/decode", "POST", encoded, bearer
        )
        payload = json.loads(decoded)["payloads"][0]
        assert status == 200 and json.loads(base64.b64decode(payload["data"])) == "maya"
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), timeout=60) == 0
