# tests/servers: the real SMTP servers that the transport and CLI tests talk to.
#
# Two kinds, both on loopback only (127.0.0.1 or ::1), both bounded in time (the
# scripted server, for the behaviour no real server shows on demand, is
# smtpbee.testing; the `scripted_server` fixture of conftest.py starts it):
#
# - `AiosmtpdServer`: aiosmtpd running its own asyncio loop in a background thread, so a
#   blocking, asyncio or trio test can use it alike. It records every accepted message
#   exactly as received (after un-stuffing), refuses chosen recipients or messages, knows
#   AUTH PLAIN/LOGIN users, and comes plain, with STARTTLS or with implicit TLS. The
#   listening socket is bound here (port 0) and handed to aiosmtpd, so the port is known
#   before the controller's own readiness probe runs and no port can be stolen between.
#
# - `PostfixServer`: the facts about the private Postfix instance that .ci/postfix-start
#   runs on 127.0.0.1:8025 (STARTTLS) and 127.0.0.1:8465 (implicit TLS), with its AUTH
#   test account, and a bounded poll of its maildir.
"""SMTP test servers on loopback: aiosmtpd in a thread, and Postfix."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "DEFAULT_TIMEOUT",
    "AiosmtpdServer",
    "LoopbackCA",
    "PostfixServer",
    "ReceivedMessage",
    "TLSAiosmtpdServer",
    "start_aiosmtpd",
]

DEFAULT_TIMEOUT = 10.0
"""Seconds any single socket operation of a test server may take."""

_LOOPBACK = frozenset({"127.0.0.1", "::1"})
_TLSMode = Literal["none", "starttls", "implicit"]


def _require_loopback(host: str) -> None:
    # The workplace forbids traffic to anything but this machine.
    if host not in _LOOPBACK:
        raise ValueError(f"test servers listen on 127.0.0.1 or ::1 only, not {host!r}")


def _bind_loopback(host: str) -> socket.socket:
    _require_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(8)
    except BaseException:
        sock.close()
        raise
    return sock


# --------------------------------------------------------------------------------------
# Test certificates


class LoopbackCA:
    """A throwaway CA and a server certificate for localhost, 127.0.0.1 and ::1.

    Attributes:
        ca: The trustme CA.
        cert: The server's leaf certificate.
        cafile: Path of the CA certificate in PEM, for clients that want a file.
    """

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA(organization_name="smtpbee tests")
        self.cert = self.ca.issue_cert("localhost", "127.0.0.1", "::1")
        path = directory / "smtpbee-test-ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        self.cafile = str(path)

    def server_context(self) -> ssl.SSLContext:
        """Return a new server-side context presenting the test certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Return a new client context that verifies hosts against the test CA only."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
        return context


# --------------------------------------------------------------------------------------
# aiosmtpd in a thread


@dataclass(frozen=True)
class ReceivedMessage:
    """One message an `AiosmtpdServer` accepted (or refused at the end of DATA).

    Attributes:
        mail_from: The reverse path, decoded by aiosmtpd.
        rcpt_tos: The accepted recipients, in order.
        content: The message bytes as received, dot-stuffing removed, ending with the
            CRLF before the final dot.
        mail_options: MAIL FROM parameters; aiosmtpd upper-cases them (``"SIZE=12"``).
        rcpt_options: RCPT TO parameters (aiosmtpd refuses any with 555, so empty).
        tls: Whether the session was encrypted (STARTTLS or implicit TLS).
        auth_login: The login that authenticated the session, or None.
        ehlo_name: The name the client gave in EHLO or HELO.
    """

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    rcpt_options: list[str]
    tls: bool
    auth_login: str | None
    ehlo_name: str | None


class _RecordingHandler:
    # aiosmtpd finds hooks by name; each runs on the server's loop thread.

    def __init__(self, owner: AiosmtpdServer) -> None:
        self._owner = owner

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> Any:
        if address in self._owner.reject_recipients:
            return f"550 5.1.1 <{address}>: Recipient address rejected"
        return MISSING

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        transport = server.transport
        encrypted = transport is not None and transport.get_extra_info("ssl_object") is not None
        auth = session.auth_data
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            content=bytes(envelope.original_content or b""),
            mail_options=list(envelope.mail_options),
            rcpt_options=list(envelope.rcpt_options),
            tls=encrypted,
            auth_login=auth.login.decode("utf-8", "surrogateescape")
            if isinstance(auth, LoginPassword)
            else None,
            ehlo_name=session.host_name,
        )
        if self._owner.reject_message:
            self._owner.rejected.append(message)
            return "554 5.6.0 Message rejected by the test server"
        self._owner.messages.append(message)
        return "250 2.0.0 OK: queued"


class _LoopbackController(Controller):
    # Serves on a socket bound before start(), so port 0 works and the readiness probe
    # that aiosmtpd makes in start() already knows the real port.

    def __init__(self, listener: socket.socket, **kwargs: Any) -> None:
        host, port = listener.getsockname()[:2]
        super().__init__(kwargs.pop("handler"), hostname=host, port=port, **kwargs)
        self._listener = listener
        self.connections = 0

    def factory(self) -> SMTP:
        self.connections += 1
        return SMTP(self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(
            self._factory_invoker, sock=self._listener, ssl=self.ssl_context
        )


class AiosmtpdServer:
    """An aiosmtpd server on loopback running in a background thread.

    Attributes:
        host: The address it listens on.
        port: The port it listens on.
        messages: Accepted messages, in arrival order.
        rejected: Messages refused because `reject_message` was set.
        reject_recipients: Addresses that RCPT refuses with 550 5.1.1.
        reject_message: When true, the end of DATA gets 554 5.6.0.
        auth_users: Login -> password for AUTH PLAIN and LOGIN.
        tls_mode: ``"none"``, ``"starttls"`` or ``"implicit"``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        tls_mode: _TLSMode = "none",
        server_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        auth_require_tls: bool | None = None,
        auth_users: dict[str, str] | None = None,
        data_size_limit: int = 80 * 1024 * 1024,
        timeout: float = 30.0,
    ) -> None:
        if (tls_mode == "none") != (server_context is None):
            raise ValueError("a server context goes with starttls or implicit, and only there")
        self.host = host
        self.tls_mode = tls_mode
        self.messages: list[ReceivedMessage] = []
        self.rejected: list[ReceivedMessage] = []
        self.reject_recipients: set[str] = set()
        self.reject_message = False
        self.auth_users: dict[str, str] = dict(auth_users or {})
        # AUTH over plaintext stays offered on the plain server so a test can see the
        # client refuse it; under implicit TLS aiosmtpd would not know it is encrypted.
        if auth_require_tls is None:
            auth_require_tls = tls_mode == "starttls"
        listener = _bind_loopback(host)
        self.port: int = listener.getsockname()[1]
        self._controller = _LoopbackController(
            listener,
            handler=_RecordingHandler(self),
            ready_timeout=10.0,
            ssl_context=server_context if tls_mode == "implicit" else None,
            server_hostname="localhost",
            tls_context=server_context if tls_mode == "starttls" else None,
            require_starttls=require_starttls,
            auth_require_tls=auth_require_tls,
            authenticator=self._authenticate,
            enable_SMTPUTF8=True,
            decode_data=False,
            data_size_limit=data_size_limit,
            timeout=timeout,
        )
        self._started = False

    @property
    def connections(self) -> int:
        """Number of client connections so far (the readiness probe not counted)."""
        return self._controller.connections

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "surrogateescape")
            password = auth_data.password.decode("utf-8", "surrogateescape")
            if login in self.auth_users and self.auth_users[login] == password:
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    def start(self) -> None:
        """Start the loop thread; return once the server has answered a probe."""
        self._controller.start()
        self._controller.connections = 0
        self._started = True

    def stop(self) -> None:
        """Stop the loop thread and close the listening socket."""
        if self._started:
            self._started = False
            self._controller.stop()


class TLSAiosmtpdServer(AiosmtpdServer):
    """An `AiosmtpdServer` with STARTTLS or implicit TLS.

    Attributes:
        client_context: A client context that trusts the test CA.
        cafile: The test CA in PEM, for clients that take a file.
    """

    def __init__(self, ca: LoopbackCA, **kwargs: Any) -> None:
        super().__init__(server_context=ca.server_context(), **kwargs)
        self.client_context = ca.client_context()
        self.cafile = ca.cafile


def start_aiosmtpd(
    ca: LoopbackCA | None = None, *, tls_mode: _TLSMode = "none", **kwargs: Any
) -> AiosmtpdServer:
    """Build and start an aiosmtpd server; the caller stops it.

    Args:
        ca: The test CA; required unless ``tls_mode`` is ``"none"``.
        tls_mode: ``"none"``, ``"starttls"`` or ``"implicit"``.
        **kwargs: Passed on to `AiosmtpdServer` (``require_starttls``, ``auth_users`` ...).
    """
    server: AiosmtpdServer
    if tls_mode == "none":
        server = AiosmtpdServer(**kwargs)
    else:
        if ca is None:
            raise ValueError("a TLS server needs the test CA")
        server = TLSAiosmtpdServer(ca, tls_mode=tls_mode, **kwargs)
    server.start()
    return server


# --------------------------------------------------------------------------------------
# Postfix

_TRACE_HEADERS = (b"return-path:", b"x-original-to:", b"delivered-to:", b"received:")
_POSTFIX_REQUIRED_FACTS = (
    "SMTPBEE_POSTFIX_HOST",
    "SMTPBEE_POSTFIX_PORT",
    "SMTPBEE_POSTFIX_SMTPS_PORT",
    "SMTPBEE_POSTFIX_USER",
    "SMTPBEE_POSTFIX_PASSWORD",
    "SMTPBEE_POSTFIX_MAILDIR",
    "SMTPBEE_POSTFIX_CAFILE",
)


@dataclass
class PostfixServer:
    """The private Postfix instance that .ci/postfix-start runs.

    Attributes:
        host: Where it listens (127.0.0.1).
        port: Its port with STARTTLS (8025); AUTH is offered there only after STARTTLS.
        smtps_port: Its implicit-TLS port (8465, RFC 8314): TLS from the first byte,
            same certificate, AUTH offered at once.
        username: The SASL login of its test account (``smtpbee@example.test``), good
            for PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1 and SCRAM-SHA-256.
        password: That account's password (plain ASCII, nothing a shell would change).
        maildir: The maildir every ``@example.test`` recipient is delivered to.
        cafile: PEM of the CA that signed its certificate (localhost, 127.0.0.1, ::1).
        domain: The domain it accepts mail for (``example.test``).
        reject_address: The recipient it refuses with 550 5.1.1.
        client_context: A client context trusting ``cafile``.
    """

    host: str
    port: int
    smtps_port: int
    username: str
    password: str = field(repr=False)
    maildir: Path
    cafile: str
    domain: str = "example.test"
    reject_address: str = "reject@example.test"
    client_context: ssl.SSLContext = field(init=False, repr=False)
    _serial: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        _require_loopback(self.host)
        self.client_context = ssl.create_default_context(cafile=self.cafile)

    @classmethod
    def from_env_file(cls, path: Path) -> PostfixServer:
        """Read the KEY=VALUE file that .ci/postfix-start writes.

        Raises:
            ValueError: A fact is missing, e.g. the file is from an older script that
                knew no implicit-TLS port or account (start the instance again).
        """
        facts: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                facts[key.strip()] = value.strip()
        missing = [key for key in _POSTFIX_REQUIRED_FACTS if not facts.get(key)]
        if missing:
            raise ValueError(
                f"{path} lacks {', '.join(missing)}; run .ci/postfix-start again to rewrite it"
            )
        return cls(
            host=facts["SMTPBEE_POSTFIX_HOST"],
            port=int(facts["SMTPBEE_POSTFIX_PORT"]),
            smtps_port=int(facts["SMTPBEE_POSTFIX_SMTPS_PORT"]),
            username=facts["SMTPBEE_POSTFIX_USER"],
            password=facts["SMTPBEE_POSTFIX_PASSWORD"],
            maildir=Path(facts["SMTPBEE_POSTFIX_MAILDIR"]),
            cafile=facts["SMTPBEE_POSTFIX_CAFILE"],
            domain=facts.get("SMTPBEE_POSTFIX_DOMAIN", "example.test"),
            reject_address=facts.get("SMTPBEE_POSTFIX_REJECT", "reject@example.test"),
        )

    def greeting(self, timeout: float = 5.0) -> bytes:
        """Connect, read the greeting line, say QUIT; raises OSError if it is down."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            line = sock.makefile("rb").readline(1024)
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
        return line

    def new_address(self, tag: str = "rcpt") -> str:
        """Return a recipient no other test in this run uses, e.g. ``rcpt-3-…@example.test``."""
        self._serial += 1
        return f"{tag}-{self._serial}-{time.time_ns()}@{self.domain}"

    def delivered(self) -> list[Path]:
        """Every message file in the maildir, oldest first by name."""
        files: list[Path] = []
        for sub in ("new", "cur"):
            directory = self.maildir / sub
            if directory.is_dir():
                files.extend(p for p in directory.iterdir() if p.is_file())
        return sorted(files, key=lambda p: p.name)

    def wait_for_message(
        self, match: str | Callable[[bytes], bool], timeout: float = 30.0
    ) -> bytes:
        """Poll the maildir until a delivered message matches; return its bytes.

        Args:
            match: A Message-ID (with or without angle brackets), matched against the
                Message-ID header, or a predicate over the delivered bytes.
            timeout: Seconds to keep polling.

        Returns:
            The delivered file as Postfix wrote it: LF line endings, with Return-Path,
            X-Original-To, Delivered-To and Received prepended (see `original_bytes`).

        Raises:
            TimeoutError: Nothing matched in time.
        """
        predicate = _message_id_matcher(match) if isinstance(match, str) else match
        deadline = time.monotonic() + timeout
        # A delivered file never changes, so each poll reads only the new arrivals.
        checked: set[str] = set()
        while True:
            for path in self.delivered():
                if path.name in checked:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    content = path.read_bytes()
                    if predicate(content):
                        return content
                    checked.add(path.name)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no delivered message matched within {timeout}s "
                    f"({len(checked)} checked in {self.maildir})"
                )
            time.sleep(0.05)

    @staticmethod
    def original_bytes(delivered: bytes) -> bytes:
        """Undo what delivery added: drop the leading trace headers, restore CRLF."""
        lines = delivered.split(b"\n")
        index = 0
        while index < len(lines) and lines[index].lower().startswith(_TRACE_HEADERS):
            index += 1
            while index < len(lines) and lines[index][:1] in (b" ", b"\t"):
                index += 1
        return b"\r\n".join(lines[index:])


def _message_id_matcher(message_id: str) -> Callable[[bytes], bool]:
    bare = message_id.strip().removeprefix("<").removesuffix(">").encode("utf-8")
    pattern = re.compile(
        rb"^message-id:[ \t]*<" + re.escape(bare) + rb">[ \t]*$", re.IGNORECASE | re.MULTILINE
    )

    def matches(content: bytes) -> bool:
        headers = content.split(b"\n\n", 1)[0]
        return pattern.search(headers) is not None

    return matches
