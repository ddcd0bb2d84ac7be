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
#   * the envelope of an email.message.Message (smtplib's rules, RFC 5322
#     §3.6.6 for Resent-* blocks) and body sources with their BodyInfo.
#
# Invariant: nothing here decides anything about the protocol; the procedures
# do. This module only translates between the user's Python values and them.
from __future__ import annotations

import copy
import email.generator
import email.message
import email.policy
import io
import ipaddress
import os
import ssl
import stat
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from email.utils import getaddresses
from typing import IO, Any, Protocol, Self, TextIO, TypeAlias

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
from smtpbee._transaction import BodyInfo, MailJob

__all__ = [
    "READ_SIZE",
    "Body",
    "ClientBase",
    "Deadline",
    "PoolBase",
    "PreparedMessage",
    "TLSInfo",
    "TLSVerificationError",
    "Transcript",
    "as_smtp_error",
    "body_source",
    "default_ssl_context",
    "describe",
    "is_verifying",
    "local_hostname_for",
    "prepare_message",
    "resolve_tls_mode",
    "step",
    "tls_info",
    "transcript_to",
]

READ_SIZE = 64 * 1024
"""Bytes asked of the socket per read, and per piece of a file body."""

Transcript: TypeAlias = Callable[[str, str], None]
Body: TypeAlias = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes]
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
# Messages and bodies


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """An email message as an envelope and the bytes to send."""

    sender: str
    recipients: list[str]
    data: bytes
    smtputf8: bool


def _resent_block(msg: email.message.Message) -> dict[str, list[str]] | None:
    # RFC 5322 §3.6.6: each resending prepends a block, so the topmost run of
    # Resent-* fields is the latest; a field seen twice starts an older block.
    block: dict[str, list[str]] = {}
    for name, value in msg.items():
        key = name.lower()
        if not key.startswith("resent-"):
            if block:
                break
            continue
        if key in block:
            break
        block[key] = [str(value)]
    return block or None


def _addresses(values: Iterable[str]) -> list[str]:
    return [address for _, address in getaddresses(list(values)) if address]


def prepare_message(
    msg: email.message.Message,
    *,
    sender: str | None,
    recipients: Sequence[str] | None,
    server: Extensions,
) -> PreparedMessage:
    """The envelope and bytes of a message, as smtplib.send_message would send them.

    The sender is Sender or From, the recipients To, Cc and Bcc; the latest
    Resent-* block replaces them when present. Bcc and Resent-Bcc are not sent.
    Non-ASCII headers go as UTF-8 when the server offers SMTPUTF8 (RFC 2047
    encoded otherwise); a non-ASCII address needs SMTPUTF8.
    """
    resent = _resent_block(msg)

    def values(name: str) -> list[str]:
        if resent is None:
            return [str(v) for v in msg.get_all(name, [])]
        return resent.get(f"resent-{name}", [])

    if sender is None:
        found = _addresses(values("sender") or values("from"))
        if not found:
            raise InvalidInputError("the message has no From or Sender: pass sender=")
        sender = found[0]
    if recipients is None:
        recipients = _addresses([*values("to"), *values("cc"), *values("bcc")])
    stripped = copy.copy(msg)
    del stripped["Bcc"]
    del stripped["Resent-Bcc"]
    international = not all(a.isascii() for a in (sender, *recipients))
    headers_8bit = any(not str(v).isascii() for v in stripped.values())
    utf8 = international or (headers_8bit and server.smtputf8)
    buffer = io.BytesIO()
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    generator: email.generator.BytesGenerator[Any]
    generator = email.generator.BytesGenerator(buffer, policy=policy)
    generator.flatten(stripped, linesep="\r\n")
    data = buffer.getvalue()
    header_end = data.find(b"\r\n\r\n")
    smtputf8 = utf8 and not data[: header_end if header_end >= 0 else len(data)].isascii()
    return PreparedMessage(sender, list(recipients), data, smtputf8 or international)


def _known_size(body: Any) -> int | None:
    try:
        mode = os.fstat(body.fileno()).st_mode
        if stat.S_ISREG(mode):
            return int(os.fstat(body.fileno()).st_size - body.tell())
    except (AttributeError, OSError, ValueError):
        pass
    try:
        if body.seekable():
            here = body.tell()
            end = body.seek(0, io.SEEK_END)
            body.seek(here)
            return int(end - here)
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _file_pieces(body: IO[bytes]) -> Iterator[bytes]:
    while piece := body.read(READ_SIZE):
        yield bytes(piece)


def body_source(body: Any) -> tuple[BodyInfo, Iterator[bytes] | AsyncIterable[bytes]]:
    """The BodyInfo of a body and the pieces to hand to PullBody.

    Bytes-like bodies are known whole; a binary file is read in READ_SIZE
    pieces (its size known when it is a regular or seekable file); any other
    iterable (or, for the async transports, async iterable) of bytes is
    streamed as given.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        return BodyInfo.of_bytes(data), iter((data,) if data else ())
    if isinstance(body, str):
        raise InvalidInputError("the body must be bytes, not str: encode it first")
    if hasattr(body, "read"):
        return BodyInfo(size=_known_size(body)), _file_pieces(body)
    if isinstance(body, AsyncIterable):
        return BodyInfo(), _non_empty_async(body)
    if isinstance(body, Iterable):
        return BodyInfo(), (bytes(piece) for piece in body if piece)
    raise InvalidInputError(f"cannot send a body of type {type(body).__name__}")


async def _non_empty_async(pieces: AsyncIterable[Any]) -> AsyncIterator[bytes]:
    # To PullBody b"" means the end: an empty piece must not cut a body short.
    async for piece in pieces:
        if piece:
            yield bytes(piece)


def batch_source(
    jobs: Iterable[tuple[str, str | Sequence[str], Any]],
) -> tuple[list[MailJob], Iterator[bytes]]:
    """The MailJobs of a batch and one stream of their bodies, each ended by b""."""
    mail_jobs: list[MailJob] = []
    sources: list[Iterator[bytes]] = []
    for sender, recipients, body in jobs:
        info, pieces = body_source(body)
        if not isinstance(pieces, Iterator):
            raise InvalidInputError("a batch takes bytes, files or iterables of bytes as bodies")
        rcpts = [recipients] if isinstance(recipients, str) else list(recipients)
        mail_jobs.append(MailJob(sender=sender, recipients=rcpts, body=info))
        sources.append(pieces)

    def bodies() -> Iterator[bytes]:
        for pieces in sources:
            yield from pieces
            yield b""

    return mail_jobs, bodies()


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
        self.ssl_context = ssl_context or default_ssl_context()
        self.server_hostname = server_hostname or host
        needs_name = self.tls_mode is not TLSMode.NONE and self.ssl_context.check_hostname
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


# ----------------------------------------------------------------------------
# The connection pool of the async transports


class _AsyncClient(Protocol):
    @property
    def usable(self) -> bool: ...
    async def connect(self) -> Extensions: ...
    async def login(self, *args: Any, **kwargs: Any) -> Any: ...
    async def send_message(self, *args: Any, **kwargs: Any) -> Any: ...
    async def sendmail(self, *args: Any, **kwargs: Any) -> Any: ...
    async def quit(self) -> Any: ...
    async def close(self) -> None: ...


class PoolBase:
    """Up to ``size`` connections to one server, reused across messages.

    A connection goes back to the pool after each message while its session
    can go on (a refusal is reset by the procedures); one the server or an
    error ended is dropped, and the next message opens a new one.

    Args:
        host: the server.
        port: its port.
        size: the most connections open (and messages in flight) at once.
        username: log in with this user name on every new connection.
        password: and this password.
        allow_insecure: allow that login over plaintext or unverified TLS.
        **client_kwargs: passed on to each client.
    """

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        size: int = 4,
        username: str | None = None,
        password: str | None = None,
        allow_insecure: bool = False,
        **client_kwargs: Any,
    ) -> None:
        if size < 1:
            raise InvalidInputError("a pool needs at least one connection")
        self.host = host
        self.port = port
        self.size = size
        self._login = (username, password or "", allow_insecure)
        self._client_kwargs = client_kwargs
        self._idle: list[_AsyncClient] = []

    def _new_client(self) -> _AsyncClient:
        raise NotImplementedError

    def _slot(self) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def _run_all(self, jobs: list[Callable[[], Awaitable[None]]]) -> None:
        raise NotImplementedError

    async def _borrow(self) -> _AsyncClient:
        while self._idle:
            client = self._idle.pop()
            if client.usable:
                return client
            await client.close()
        client = self._new_client()
        await client.connect()
        username, password, allow_insecure = self._login
        if username is not None:
            await client.login(username, password, allow_insecure=allow_insecure)
        return client

    async def _with_client(self, job: Callable[[_AsyncClient], Awaitable[Any]]) -> Any:
        async with self._slot():
            client = await self._borrow()
            try:
                return await job(client)
            finally:
                if client.usable:
                    self._idle.append(client)
                else:
                    await client.close()

    async def send_message(self, msg: email.message.Message, **options: Any) -> Any:
        """Send one message over a pooled connection (options as for send_message)."""
        return await self._with_client(lambda client: client.send_message(msg, **options))

    async def sendmail(self, sender: str, recipients: Any, body: Any, **options: Any) -> Any:
        """Send one body over a pooled connection (arguments as for sendmail)."""
        return await self._with_client(
            lambda client: client.sendmail(sender, recipients, body, **options)
        )

    async def send_many(self, messages: Sequence[email.message.Message]) -> list[Any]:
        """Send messages over the pool; each result is a SendResult or the exception."""
        results: list[Any] = [None] * len(messages)

        def job(index: int, msg: email.message.Message) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                try:
                    results[index] = await self.send_message(msg)
                except Exception as exc:
                    results[index] = exc

            return run

        await self._run_all([job(i, m) for i, m in enumerate(messages)])
        return results

    async def aclose(self) -> None:
        """QUIT and close every idle connection."""
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except SMTPError:
                pass
            finally:
                await client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
