# smtpbee/transports/_common
#
# Everything the three transports share that is not I/O.
#
# Theory of operation
# -------------------
# A transport owns a byte stream and nothing else. It runs a session procedure
# (smtpbee._procedures, smtpbee._transaction) by answering its requests
# (smtpbee._requests), and everything around that loop that does not touch a
# socket lives here, once:
#
#   * ClientBase: the constructor every client has, the choice of TLS mode from
#     the port, the default SSL context, the ClientSession built once the local
#     address is known, and the procedures behind each public method
#     (``_plan_*``), so a transport method is "plan, then run".
#   * step(): one turn of a procedure (send a result or throw an error in), so
#     the transport loops hold no generator bookkeeping.
#   * as_smtp_error(): the one mapping of I/O failures to the errors the
#     procedures understand (SMTPTimeoutError, ConnectionLostError). A failed
#     certificate check becomes TLSVerificationError, a ConnectionLostError with
#     the ssl error as its cause, so it is caught as a broken connection but
#     reads as what it is.
#   * Deadline: Read.new_wait starts a fresh deadline, otherwise the running one
#     is kept, so a server dripping one byte at a time still times out.
#
# The envelope and bytes of a message and the sources of bodies are in
# _message; the connection pool of the async transports is in _pool.
#
# Invariant: nothing here decides anything about the protocol; the procedures
# do. This module only translates between the user's Python values and them.
from __future__ import annotations

import email.message
import ipaddress
import ssl
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO, TypeAlias

from smtpbee._auth import SASLMechanism
from smtpbee._commands import Command
from smtpbee._errors import (
    ConnectionLostError,
    InvalidInputError,
    LocalProtocolError,
    SMTPError,
    SMTPTimeoutError,
)
from smtpbee._extensions import Extensions
from smtpbee._procedures import ClientSession
from smtpbee._receivebuffer import ReplyLimits
from smtpbee._requests import Procedure, Read, Request, Timeouts, TLSMode, UpgradeTLS, Write
from smtpbee._state import State
from smtpbee.transports._message import batch_source, body_source, prepare_message

__all__ = [
    "ClientBase",
    "Deadline",
    "TLSInfo",
    "TLSVerificationError",
    "Transcript",
    "as_smtp_error",
    "default_ssl_context",
    "describe",
    "is_verifying",
    "local_hostname_for",
    "resolve_tls_mode",
    "step",
    "tls_info",
    "transcript_to",
]

Transcript: TypeAlias = Callable[[str, str], None]
_DEAD_STATES = frozenset({State.CLOSING, State.CLOSED, State.ERROR})


class TLSVerificationError(ConnectionLostError):
    """The server's certificate failed verification; the cause is the ssl error."""


# ----------------------------------------------------------------------------
# TLS


def resolve_tls_mode(tls: TLSMode | str | None, port: int) -> TLSMode:
    """The TLS mode: implicit on port 465, required STARTTLS elsewhere, unless named."""
    if tls is None:
        return TLSMode.IMPLICIT if port == 465 else TLSMode.STARTTLS
    try:
        return TLSMode(tls.value if isinstance(tls, TLSMode) else tls.lower())
    except ValueError:
        names = ", ".join(m.value for m in TLSMode)
        raise InvalidInputError(f"tls must be one of {names}, not {tls!r}") from None


def default_ssl_context() -> ssl.SSLContext:
    """The system's trust store, TLS >= 1.2, host names checked."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def is_verifying(context: ssl.SSLContext) -> bool:
    """Whether a handshake with this context proves the server's identity."""
    return context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


class _TLSObject(Protocol):
    def version(self) -> str | None: ...
    def cipher(self) -> tuple[str, str, int] | None: ...
    def getpeercert(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What the TLS layer of a connection is.

    Attributes:
        version: e.g. "TLSv1.3".
        cipher: the cipher suite's name.
        verified: whether the certificate was checked against the host name.
        peer_subject: the certificate's subject, e.g. "CN=localhost", when verified.
    """

    version: str | None
    cipher: str | None
    verified: bool
    peer_subject: str | None


def tls_info(tls: _TLSObject, verified: bool) -> TLSInfo:
    """TLSInfo from an ssl.SSLObject, ssl.SSLSocket or trio.SSLStream."""
    cipher = tls.cipher()
    cert = tls.getpeercert() or {}
    subject = ",".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn) or None
    return TLSInfo(tls.version(), cipher[0] if cipher else None, verified, subject)


# ----------------------------------------------------------------------------
# Errors, deadlines and the procedure loop


def _certificate_refusal(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    # trio wraps ssl errors (BrokenResourceError from SSLError): look down the chain.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        cause = cause.__cause__
    return None


def as_smtp_error(exc: BaseException, what: str) -> SMTPError | None:
    """The error to throw into a procedure for an I/O failure, or None if it is not one."""
    if isinstance(exc, SMTPError):
        return exc
    if isinstance(exc, TimeoutError):
        error: SMTPError = SMTPTimeoutError(f"timed out {what}")
    elif (refusal := _certificate_refusal(exc)) is not None:
        error = TLSVerificationError(f"the server's certificate was refused: {refusal}")
        exc = refusal
    elif isinstance(exc, OSError | EOFError):
        error = ConnectionLostError(f"connection lost {what}: {exc or type(exc).__name__}")
    else:
        return None
    error.__cause__ = exc
    return error


def describe(request: Request) -> str:
    """What a request waits for, for error messages."""
    if isinstance(request, Read):
        return f"waiting for {request.phase.description} ({request.timeout:g} s)"
    if isinstance(request, Write):
        return f"sending {len(request.data)} bytes ({request.timeout:g} s)"
    return "during the TLS handshake" if isinstance(request, UpgradeTLS) else "reading the body"


class Deadline:
    """The deadline of a Read: a new one per reply, kept while a reply is incomplete."""

    __slots__ = ("_at",)

    def __init__(self) -> None:
        self._at = 0.0

    def remaining(self, request: Read, now: float) -> float:
        if request.new_wait:
            self._at = now + request.timeout
        return self._at - now


def step(
    proc: Procedure, value: Any = None, error: BaseException | None = None
) -> tuple[bool, Any]:
    """Advance a procedure: (False, next request) or (True, its result)."""
    try:
        request = proc.send(value) if error is None else proc.throw(error)
    except StopIteration as stop:
        return True, stop.value
    return False, request


# ----------------------------------------------------------------------------
# Local host name and transcripts


def local_hostname_for(sockname: Any) -> str:
    """The address literal of the local address: "[192.0.2.1]" or "[IPv6:2001:db8::1]"."""
    try:
        address = ipaddress.ip_address(str(sockname[0]).partition("%")[0])
    except (ValueError, TypeError, IndexError):
        return "localhost"
    if address.version == 6:
        mapped = address.ipv4_mapped
        return f"[{mapped}]" if mapped else f"[IPv6:{address}]"
    return f"[{address}]"


def transcript_to(stream: TextIO) -> Transcript:
    """A transcript callable writing "C: ..." and "S: ..." lines to a text stream."""

    def write(direction: str, line: str) -> None:
        stream.write(f"{direction}: {line}\n")

    return write


# ----------------------------------------------------------------------------
# The client: configuration, session and the procedures behind each method


class ClientBase:
    """What every transport's client has in common (configuration and plans)."""

    def __init__(
        self,
        host: str | None = None,
        port: int = 25,
        *,
        tls: TLSMode | str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        local_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        sock: Any = None,
        timeout: float | None = None,
        timeouts: Timeouts | None = None,
        connect_timeout: float = 30.0,
        lmtp: bool = False,
        limits: ReplyLimits | None = None,
        transcript: Transcript | None = None,
    ) -> None:
        if host is None and sock is None:
            raise InvalidInputError("give a host (or a connected sock)")
        self.host = host
        self.port = port
        self.tls_mode = resolve_tls_mode(tls, port)
        # Building the default context loads the system's CA store (tens of
        # milliseconds): only done when TLS is actually used.
        self._ssl_context = ssl_context
        self.server_hostname = server_hostname or host
        checks_name = ssl_context is None or ssl_context.check_hostname
        needs_name = self.tls_mode is not TLSMode.NONE and checks_name
        if needs_name and self.server_hostname is None:
            raise InvalidInputError("TLS with host name checking needs server_hostname")
        self.local_hostname = local_hostname
        self.source_address = source_address
        self._sock_given = sock
        self.timeouts = timeouts or (Timeouts.uniform(timeout) if timeout else Timeouts())
        self.connect_timeout = min(connect_timeout, timeout) if timeout else connect_timeout
        self.lmtp = lmtp
        self.limits = limits
        self.transcript = transcript
        self._session: ClientSession | None = None
        self.tls_info: TLSInfo | None = None
        """The TLS layer of the connection, or None while it is plaintext."""

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context for TLS: the one given, or a verifying default."""
        if self._ssl_context is None:
            self._ssl_context = default_ssl_context()
        return self._ssl_context

    @property
    def verified_context(self) -> bool:
        return is_verifying(self.ssl_context)

    @property
    def session(self) -> ClientSession:
        """The core session (for low-level use); exists once connected."""
        if self._session is None:
            raise LocalProtocolError("not connected: call connect() first")
        return self._session

    @property
    def extensions(self) -> Extensions:
        """What the server advertised in its last EHLO."""
        return self.session.conn.extensions

    @property
    def usable(self) -> bool:
        """Whether the session can take another command."""
        return self._session is not None and self._session.conn.state not in _DEAD_STATES

    def _refuse_early_bytes(self, data: bytes) -> None:
        # Bytes already here when the handshake is due were not protected by
        # TLS: the core decides (StartTLSInjectionError), the transport only shows it.
        if data:
            self.session.conn.receive_data(data)
            self.session.conn.next_event()

    def _new_session(self, sockname: Any) -> ClientSession:
        self._session = ClientSession(
            local_hostname=self.local_hostname or local_hostname_for(sockname),
            tls=self.tls_mode,
            lmtp=self.lmtp,
            timeouts=self.timeouts,
            limits=self.limits,
            transcript=self.transcript,
        )
        return self._session

    def _plan_sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        body: Any,
        mail_options: Mapping[str, Any] | None,
        rcpt_options: Mapping[str, Any] | None,
        smtputf8: bool,
    ) -> tuple[Procedure, Iterator[bytes] | AsyncIterable[bytes]]:
        info, pieces = body_source(body)
        if isinstance(recipients, str):
            recipients = [recipients]
        proc = self.session.send_mail(
            sender,
            recipients,
            body=info,
            smtputf8=smtputf8,
            mail_options=mail_options,
            rcpt_options=rcpt_options,
        )
        return proc, pieces

    def _plan_sendmail_many(
        self, jobs: Iterable[tuple[str, str | Sequence[str], Any]]
    ) -> tuple[Procedure, Iterator[bytes]]:
        mail_jobs, bodies = batch_source(jobs)
        return self.session.send_many(mail_jobs), bodies

    def _plan_message(
        self,
        msg: email.message.Message,
        sender: str | None,
        recipients: Sequence[str] | None,
        mail_options: Mapping[str, Any] | None,
        rcpt_options: Mapping[str, Any] | None,
    ) -> tuple[Procedure, Iterator[bytes] | AsyncIterable[bytes]]:
        server = self.extensions
        prepared = prepare_message(msg, sender=sender, recipients=recipients, server=server)
        return self._plan_sendmail(
            prepared.sender,
            prepared.recipients,
            prepared.data,
            mail_options,
            rcpt_options,
            prepared.smtputf8,
        )

    def _plan_login(
        self, username: str, password: str, mechanism: str | None, allow_insecure: bool
    ) -> Procedure:
        return self.session.login(
            username, password, mechanism=mechanism, allow_insecure=allow_insecure
        )

    def _plan_auth(self, mechanism: SASLMechanism, allow_insecure: bool) -> Procedure:
        return self.session.authenticate(mechanism, allow_insecure=allow_insecure)

    def _plan_command(self, command: Command) -> Procedure:
        return self.session.command(command)
