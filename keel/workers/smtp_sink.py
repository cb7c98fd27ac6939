"""A local SMTP server that keeps what it receives: the demo's and the tests' mail provider.

``SmtpSink`` listens on 127.0.0.1 (a free port unless one is given) in a thread of its own,
accepts every message (unless told to refuse), and keeps each one in memory and, when a
mailbox path is given, as one JSON line appended to that file before the server answers
250, so another process can count what was accepted (``read_mailbox``)::

    with SmtpSink(mailbox=tmp / "mailbox.jsonl") as sink:
        ...  # send to 127.0.0.1:sink.port
        assert sink.count(message_id) == 1

With ``tls=True`` it offers STARTTLS with a self-signed certificate made at start (for
``localhost`` and ``127.0.0.1``; clients verify it with ``sink.ca_file``), and with
``credentials`` it requires AUTH (PLAIN or LOGIN, only after STARTTLS when TLS is on) with
one of those user names and passwords, so a client's real STARTTLS and AUTH code is tested
against it; a wrong password gets ``535 5.7.8 Authentication credentials invalid``.

Run it on its own with ``python -m keel.workers.smtp_sink --port 2525 --mailbox
mail.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import tempfile
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import BaseModel

ACCEPTED = "250 Message accepted for delivery"


class ReceivedMail(BaseModel):
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message_id: str | None
    subject: str | None
    headers: list[tuple[str, str]]
    """Every header, in order."""
    body: str
    """The plain-text content (the whole decoded payload of a single-part message)."""
    received_at: datetime
    peer: str


def _body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content = part.get_content()
    return content if isinstance(content, str) else repr(content)


def read_mailbox(path: str | Path) -> list[ReceivedMail]:
    """The messages a sink appended to the JSONL ``path`` (none if it does not exist)."""
    file = Path(path)
    if not file.exists():
        return []
    return [
        ReceivedMail.model_validate_json(line)
        for line in file.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def count_mail(messages: list[ReceivedMail], message_id: str | None = None) -> int:
    """How many of ``messages`` there are, or how many carry ``message_id``."""
    return sum(1 for m in messages if message_id is None or m.message_id == message_id)


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self.sink.refuse_with
        if refusal is not None:
            return refusal
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        # SMTP lines end in CRLF; keep the message as a mailbox would, with LF.
        parsed = message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            message_id=parsed["Message-ID"],
            subject=parsed["Subject"],
            headers=[(name, str(value)) for name, value in parsed.items()],
            body=_body(parsed),
            received_at=datetime.now(UTC),
            peer=str(session.peer),
        )
        self.sink._keep(mail)
        return ACCEPTED


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A new key and a self-signed certificate for ``localhost`` and ``127.0.0.1``, written
    to ``directory`` as ``sink-key.pem`` and ``sink-cert.pem`` (the key mode 0600)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Keel SMTP sink")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "sink-key.pem", directory / "sink-cert.pem"
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class _Authenticator:
    """AUTH PLAIN and LOGIN against fixed credentials (aiosmtpd's authenticator protocol)."""

    def __init__(self, credentials: Mapping[str, str]) -> None:
        self.credentials = dict(credentials)

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode(errors="replace")
        expected = self.credentials.get(login)
        ok = expected is not None and data.password == expected.encode()
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)


class _Controller(Controller):
    """aiosmtpd's threaded controller, able to bind port 0 (its readiness probe needs the
    real port)."""

    def _trigger_server(self) -> None:
        if self.port == 0 and isinstance(self.server, asyncio.Server):
            self.port = int(self.server.sockets[0].getsockname()[1])
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpSink:
    """A local SMTP server keeping every message it accepts.

    Args:
        port: port on 127.0.0.1; 0 picks a free one (read ``.port`` after ``start()``).
        mailbox: JSONL file every accepted message is appended to (created if missing).
        hostname: address to listen on.

        tls: offer STARTTLS (self-signed certificate; ``ca_file`` verifies it).
        credentials: user name -> password; set, AUTH is required before MAIL.

    Set ``refuse_with`` to an SMTP reply (``"451 4.3.0 try again later"``, ``"550 5.1.1 no
    such user"``) to refuse messages at DATA instead of keeping them; ``None`` accepts.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        mailbox: str | Path | None = None,
        hostname: str = "127.0.0.1",
        tls: bool = False,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        self.hostname = hostname
        self.tls = tls
        self.credentials = dict(credentials) if credentials else None
        self._cert_dir: tempfile.TemporaryDirectory[str] | None = None
        self.mailbox = Path(mailbox) if mailbox is not None else None
        self.refuse_with: str | None = None
        self._requested_port = port
        self._messages: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._controller: _Controller | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hostname}:{self._port_text()}, {self.count()} kept)"

    def _port_text(self) -> str:
        return str(self.port) if self._controller is not None else "stopped"

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._controller is None:
            raise RuntimeError("the SMTP sink is not running")
        return int(self._controller.port)

    @property
    def ca_file(self) -> Path:
        """The certificate (PEM) a client verifies STARTTLS with (``tls=True`` only)."""
        if self._cert_dir is None:
            raise RuntimeError("the SMTP sink offers no TLS (start it with tls=True)")
        return Path(self._cert_dir.name) / "sink-cert.pem"

    @property
    def messages(self) -> list[ReceivedMail]:
        """The messages accepted so far, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    def count(self, message_id: str | None = None) -> int:
        """How many messages were accepted, or how many with ``message_id``."""
        return count_mail(self.messages, message_id)

    def _keep(self, mail: ReceivedMail) -> None:
        with self._lock:
            if self.mailbox is not None:
                with self.mailbox.open("a", encoding="utf-8") as file:
                    file.write(mail.model_dump_json() + "\n")
                    file.flush()
            self._messages.append(mail)

    def start(self) -> SmtpSink:
        """Start serving in a background thread."""
        if self._controller is not None:
            raise RuntimeError("the SMTP sink is already running")
        if self.mailbox is not None:
            self.mailbox.parent.mkdir(parents=True, exist_ok=True)
            self.mailbox.touch()
        controller = _Controller(
            _Handler(self),
            hostname=self.hostname,
            port=self._requested_port,
            **self._smtp_options(),
        )
        controller.start()
        self._controller = controller
        return self

    def _smtp_options(self) -> dict[str, Any]:
        """The SMTP server's options for STARTTLS and AUTH, as configured."""
        options: dict[str, Any] = {}
        if self.tls:
            self._cert_dir = tempfile.TemporaryDirectory(prefix="keel-smtp-sink-")
            key, cert = self_signed_certificate(Path(self._cert_dir.name))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            options |= {"tls_context": context, "require_starttls": self.credentials is not None}
        if self.credentials is not None:
            options |= {
                "authenticator": _Authenticator(self.credentials),
                "auth_required": True,
                "auth_require_tls": self.tls,
            }
        return options

    def stop(self) -> None:
        """Stop serving."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
        if self._cert_dir is not None:
            self._cert_dir.cleanup()
            self._cert_dir = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m keel.workers.smtp_sink``: run the server until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--mailbox", type=Path, default=None)
    parser.add_argument("--starttls", action="store_true", help="offer STARTTLS (self-signed)")
    parser.add_argument(
        "--auth", metavar="USER:PASSWORD", help="require AUTH with these credentials"
    )
    args = parser.parse_args(argv)
    credentials = None
    if args.auth:
        user, colon, password = args.auth.partition(":")
        if not colon or not user or not password:
            parser.error("--auth takes USER:PASSWORD")
        credentials = {user: password}
    with SmtpSink(
        args.port, mailbox=args.mailbox, tls=args.starttls, credentials=credentials
    ) as sink:
        where = f", appending to {args.mailbox}" if args.mailbox else ""
        print(f"SMTP sink on 127.0.0.1:{sink.port}{where}; Ctrl-C stops it", flush=True)
        if args.starttls:
            print(f"STARTTLS certificate (ca_file): {sink.ca_file}", flush=True)
        seen = 0
        try:
            while True:
                time.sleep(0.5)
                fresh = sink.messages[seen:]
                for mail in fresh:
                    print(f"{mail.received_at:%H:%M:%S} {mail.message_id} -> {mail.rcpt_tos}")
                seen += len(fresh)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
