# smtpbee/_procedures
#
# The session logic every transport needs, written once and still without I/O.
#
# Theory of operation
# -------------------
# A procedure is a generator. It yields *requests* (_requests: write these
# bytes, read some bytes, hand over what arrived unasked, do the TLS handshake
# now, give me the next piece of the body) and the transport answers each one
# by sending back the result. When the I/O fails, the transport throws the
# error in (SMTPTimeoutError, ConnectionLostError). A transport is a short loop:
#
#     request = next(proc)
#     while True:
#         try:   result = serve(request)       # its own sockets, its own await
#         except IO errors as exc: request = proc.throw(exc)
#         else:  request = proc.send(result)   # StopIteration carries the result
#
# so no protocol decision lives in a transport. ``Read.new_wait`` says whether a
# fresh deadline starts (a new reply is awaited) or the current one goes on (the
# reply so far is incomplete): a server dripping one byte at a time still times
# out within the phase's limit.
#
# Layers: this file (the session: greeting, EHLO with HELO fallback, STARTTLS
# policy, AUTH, small commands) -> _transaction (the mail transaction) ->
# _exchange (write, read, send a group, reply; failure rules) -> _connection.
#
# Policy lives here: TLS as the mode says (implicit from the first byte,
# STARTTLS required, opportunistic or none), AUTH only over verified TLS unless
# the caller opts in, replies turned into typed errors. Every procedure ends
# the session on a RemoteProtocolError, wherever it was raised (the connection,
# a SASL mechanism that caught the server cheating).
#
# Controls for testers (_control): a Stop ends the session at a chosen point
# (the session asks its SessionControls at each one), ``pipelining`` and
# ``bdat_chunk_size`` override what the server offered (the override is noted
# in the transcript after each EHLO). The unsafe path is not reachable from
# here: only quit() hands an already unchecked session to _unsafe.
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from ._auth import SASLMechanism
from ._commands import (
    Auth,
    AuthCancel,
    AuthResponse,
    Command,
    Ehlo,
    Expn,
    Helo,
    Help,
    Lhlo,
    Noop,
    Quit,
    Rset,
    StartTLS,
    Vrfy,
    Xclient,
)
from ._connection import Connection
from ._control import ControlPoint, SessionControls, Stop, check_controls
from ._errors import (
    AuthenticationRejected,
    ConnectionLostError,
    InsecureAuthenticationError,
    RemoteProtocolError,
    SMTPError,
    SMTPTimeoutError,
    TLSRequiredError,
    UnsupportedExtensionError,
    reply_error,
)
from ._events import (
    PAUSED,
    AuthChallengeReceived,
    ConnectionClosed,
    GreetingReceived,
    ReplyReceived,
)
from ._exchange import Exchange, ReplyEvent, Transcript
from ._extensions import Extensions
from ._proxy_header import ProxyHeader
from ._receivebuffer import ReplyLimits
from ._replies import Reply
from ._requests import Procedure, Timeouts, TLSMode, UpgradeTLS
from ._state import Phase, ReplyKind
from ._transaction import BodyInfo, MailJob, MailTransactions, SendResult
from ._unsafe import unchecked_quit

if TYPE_CHECKING:
    from ._session_log import SessionLog

__all__ = ["ClientSession"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _ends_on_violation(
    method: Callable[Concatenate[ClientSession, _P], Procedure[_T]],
) -> Callable[Concatenate[ClientSession, _P], Procedure[_T]]:
    """Whatever raised it, a RemoteProtocolError ends the session."""

    def guarded(self: ClientSession, /, *args: _P.args, **kwargs: _P.kwargs) -> Procedure[_T]:
        try:
            return (yield from method(self, *args, **kwargs))
        except RemoteProtocolError:
            self.conn.send_failed()
            raise

    functools.update_wrapper(guarded, method)
    return guarded


class ClientSession:
    """The session procedures on top of a Connection.

    Args:
        local_hostname: the name to give in EHLO/HELO/LHLO.
        tls: the TLS mode; IMPLICIT starts with the TLS handshake, before
            the greeting.
        lmtp: speak LMTP.
        timeouts: per-phase timeouts.
        limits: reply size limits.
        transcript: called with ("C" or "S", line) for every command and reply
            line, secrets redacted, server text escaped.
        stop: end the session at a control point (SessionStopped is raised).
        pipelining: None: as the server offers; True: group commands even
            when PIPELINING is not offered; False: lock-step even when it is.
        bdat_chunk_size: send the content with BDAT in chunks of exactly
            this many octets (the last one may be shorter), even when
            CHUNKING is not offered.
        proxy_header: a PROXY protocol header to write first, before the
            greeting is read and before any TLS (HAProxy's PROXY v1 or v2).
        session_log: records every write, reply and event of the session.

    Raises:
        InvalidInputError: a chunk size that is not a positive number, or a
            stop at DATA with BDAT forced (BDAT has no DATA command).

    Attributes:
        conn: the Connection the procedures drive.
        tls_mode: the TLS mode, as given.
        timeouts: the per-phase timeouts in force.
        greeting: the server's greeting reply, once received.
        extensions_before_tls: what the server offered before STARTTLS (None
            until STARTTLS is sent); ``conn.extensions`` is what it offers now.
        tls_verified: whether the TLS handshake proved the server's identity.

    Each method returns a procedure: a generator that yields the I/O requests
    of smtpbee's request contract (Write, Read, Poll, UpgradeTLS, PullBody)
    and returns its result; a transport, or your own loop, serves them. Every
    procedure ends the session on a RemoteProtocolError, wherever it was raised.
    """

    def __init__(
        self,
        *,
        local_hostname: str,
        tls: TLSMode = TLSMode.STARTTLS,
        lmtp: bool = False,
        timeouts: Timeouts | None = None,
        limits: ReplyLimits | None = None,
        transcript: Transcript | None = None,
        stop: Stop | None = None,
        pipelining: bool | None = None,
        bdat_chunk_size: int | None = None,
        proxy_header: ProxyHeader | None = None,
        session_log: SessionLog | None = None,
    ) -> None:
        check_controls(stop, bdat_chunk_size)
        self.local_hostname = local_hostname
        self.tls_mode = tls
        self.timeouts = timeouts or Timeouts()
        self.pipelining = pipelining
        self.bdat_chunk_size = bdat_chunk_size
        self.conn = Connection(
            lmtp=lmtp,
            tls=tls is TLSMode.IMPLICIT,
            limits=limits,
            pipelining=pipelining,
            chunking=bdat_chunk_size is not None,
        )
        self.tls_verified = False
        """Whether the TLS handshake proved the server's identity (however TLS began)."""
        self.greeting: Reply | None = None
        self.extensions_before_tls: Extensions | None = None
        self.proxy_header = proxy_header
        self.exchange = Exchange(self.conn, self.timeouts, transcript, session_log)
        self.controls = SessionControls(self.exchange, stop)
        self._transactions = MailTransactions(self.exchange, self.controls, bdat_chunk_size)

    # ------------------------------------------------------------------
    # Opening: TLS, greeting, EHLO/HELO, STARTTLS
    # ------------------------------------------------------------------

    @_ends_on_violation
    def open(self) -> Procedure[Extensions]:
        """Implicit TLS, the greeting, EHLO (HELO fallback), STARTTLS as the mode says.

        Returns the server's extensions.
        """
        exchange = self.exchange
        controls = self.controls
        implicit = self.tls_mode is TLSMode.IMPLICIT
        exchange.note("connect")
        if self.proxy_header is not None:
            yield from self._write_proxy_header(self.proxy_header)
        if controls.stops_after(ControlPoint.CONNECT):
            if implicit and controls.stop is not None and controls.stop.action == "quit":
                # QUIT waits for the greeting, and the greeting comes over TLS.
                yield from self._handshake()
            raise (yield from controls.end(None))
        if implicit:
            yield from self._handshake()
            yield from controls.reached(ControlPoint.TLS, None)
        event = yield from exchange.event()
        if isinstance(event, ConnectionClosed):
            raise exchange.fail(
                ConnectionLostError("the server closed the connection before its greeting")
            )
        assert isinstance(event, GreetingReceived)
        self.greeting = event.reply
        yield from controls.reached(ControlPoint.GREETING, event.reply)
        if not event.accepted:
            if event.kind is ReplyKind.PERMANENT:
                yield from self._quit_quietly()
            raise reply_error(event.reply, phase="greeting")
        yield from self.hello()
        mode = self.tls_mode
        if mode in (TLSMode.STARTTLS, TLSMode.OPPORTUNISTIC) and not self.conn.tls_active:
            if self.conn.extensions.starttls:
                yield from self.starttls()
            elif mode is TLSMode.STARTTLS:
                yield from self._quit_quietly()
                raise TLSRequiredError(
                    "TLS is required but the server does not offer STARTTLS;"
                    " nothing was sent in plaintext beyond EHLO"
                    ' (for a local test server without TLS, use tls="none")'
                )
        return self.conn.extensions

    def _write_proxy_header(self, header: ProxyHeader) -> Procedure[None]:
        data = header.to_bytes()
        if header.version == 1:
            self.exchange.log("C", data.decode("ascii").rstrip("\r\n"))
        else:
            self.exchange.log("C", f"<PROXY v2 header, {len(data)} octets>")
        yield from self.exchange.write(data, Phase.COMMAND)

    def _handshake(self) -> Procedure[None]:
        try:
            self.tls_verified = bool((yield UpgradeTLS(self.timeouts.tls_handshake)))
        except (SMTPTimeoutError, ConnectionLostError) as exc:
            # A failed handshake leaves the stream in an unknown state.
            raise self.exchange.fail(exc)  # noqa: B904 - fail() chose the cause
        self.exchange.handshake_done(self.tls_verified)

    @_ends_on_violation
    def hello(self) -> Procedure[Reply]:
        """EHLO (LHLO for LMTP); HELO if EHLO is refused. Returns the reply."""
        hello: Command = Lhlo(self.local_hostname) if self.conn.lmtp else Ehlo(self.local_hostname)
        event = yield from self._phase_command(hello, ControlPoint.EHLO)
        if event.accepted:
            self._note_overrides()
            return event.reply
        if self.conn.lmtp:
            raise reply_error(event.reply, command=hello.transcript_line(), phase="LHLO")
        if self.tls_mode is TLSMode.STARTTLS and not self.conn.tls_active:
            yield from self._quit_quietly()
            raise TLSRequiredError(
                f"the server refused EHLO ({event.reply.code}), so it cannot offer STARTTLS"
            )
        return (yield from self.exchange.checked(Helo(self.local_hostname), "HELO"))

    def _phase_command(self, command: Command, point: ControlPoint) -> Procedure[ReplyEvent]:
        """Send the command of a control point, stopping after it or its reply if asked."""
        yield from self.exchange.send([command])
        controls = self.controls
        controls.sent(point)
        event = yield from self.exchange.reply()
        yield from controls.reached(point, event.reply)
        return event

    def _note_overrides(self) -> None:
        """Say in the transcript where the session overrides what the server offers."""
        offered = self.conn.extensions
        if self.pipelining is True and not offered.pipelining and not self.conn.lmtp:
            self.exchange.log("C", "<PIPELINING forced on: the server does not offer it>")
        elif self.pipelining is False and (offered.pipelining or self.conn.lmtp):
            self.exchange.log("C", "<PIPELINING forced off: lock-step although offered>")
        if self.bdat_chunk_size is not None:
            forced = "" if offered.chunking else ", forced: the server does not offer CHUNKING"
            self.exchange.log("C", f"<BDAT in chunks of {self.bdat_chunk_size} octets{forced}>")

    @_ends_on_violation
    def starttls(self) -> Procedure[Reply]:
        """STARTTLS, the handshake, and EHLO again (RFC 3207). Returns the EHLO reply."""
        self.extensions_before_tls = self.conn.extensions
        yield from self.exchange.send([StartTLS()])
        controls = self.controls
        if controls.point is ControlPoint.TLS:
            controls.sent(ControlPoint.TLS)
        event = yield from self.exchange.reply()
        if not event.accepted:
            if self.tls_mode is TLSMode.OPPORTUNISTIC:
                return event.reply
            yield from self._quit_quietly()
            raise TLSRequiredError(f"the server refused STARTTLS: {event.reply}")
        if self.conn.next_event() is not PAUSED:  # pragma: no cover - the state table forbids it
            raise RemoteProtocolError("STARTTLS accepted but the session did not pause")
        yield from self._handshake()
        self.conn.tls_established()
        yield from controls.reached(ControlPoint.TLS, event.reply)
        return (yield from self.hello())

    @_ends_on_violation
    def xclient(self, attributes: Mapping[str, str]) -> Procedure[Reply]:
        """XCLIENT (Postfix), its 220 (a new greeting), then EHLO again.

        Returns the 220; ``conn.extensions`` is then what the new EHLO offered.

        Raises:
            UnsupportedExtensionError: XCLIENT (or one of the attributes) is
                not offered; nothing was sent.
            ReplyError: the server refused XCLIENT (501, 503, 550...).
        """
        command = Xclient(attributes)
        reply = yield from self.exchange.checked(command, "XCLIENT")
        yield from self.hello()
        return reply

    # ------------------------------------------------------------------
    # AUTH
    # ------------------------------------------------------------------

    @_ends_on_violation
    def authenticate(
        self, mechanism: SASLMechanism, *, allow_insecure: bool = False
    ) -> Procedure[Reply]:
        """Run one SASL exchange. Returns the 235 reply.

        Raises:
            InsecureAuthenticationError: not over verified TLS, and the
                caller did not pass ``allow_insecure``.
            AuthenticationRejected: 5xx (no other mechanism is tried).
            TransientReplyError: 4xx.
            AuthenticationIncomplete, InvalidChallengeError: the server broke
                SASL; the session is ended.
        """
        if not allow_insecure and not (self.conn.tls_active and self.tls_verified):
            if self.conn.tls_active:
                raise InsecureAuthenticationError(
                    "refusing AUTH: the server's TLS certificate was not verified"
                    " (give an ssl_context that verifies it, or allow_insecure=True)",
                    over="unverified TLS",
                )
            raise InsecureAuthenticationError(
                "refusing AUTH over plaintext: use TLS, or allow_insecure=True"
                " for a server you trust on a private network",
                over="plaintext",
            )
        exchange = self.exchange
        initial = mechanism.initial_response()
        auth = Auth(mechanism.name, initial)
        if len(auth.to_bytes()) > 512:
            auth = auth.without_initial_response()
        pending_initial = initial if auth.initial_response is None else None
        yield from exchange.send([auth])
        controls = self.controls
        if controls.point is ControlPoint.AUTH:
            controls.sent(ControlPoint.AUTH)
        while True:
            event = yield from exchange.reply()
            if not isinstance(event, AuthChallengeReceived):
                yield from controls.reached(ControlPoint.AUTH, event.reply)
            if isinstance(event, AuthChallengeReceived):
                if pending_initial is not None:
                    response: Command = AuthResponse(pending_initial)
                    pending_initial = None
                elif event.challenge is None:
                    yield from self._cancel_auth()
                    raise RemoteProtocolError("the AUTH challenge is not valid base64")
                else:
                    try:
                        response = AuthResponse(mechanism.respond(event.challenge))
                    except RemoteProtocolError:
                        yield from self._cancel_auth()
                        raise
                yield from exchange.send([response])
                continue
            if event.accepted:
                mechanism.success()
                return event.reply
            details = mechanism.failure_details
            phase = f"AUTH {mechanism.name}" + (f" ({details})" if details else "")
            if isinstance(event, ReplyReceived) and event.kind is ReplyKind.PERMANENT:
                raise AuthenticationRejected(
                    event.reply, command=auth.transcript_line(), phase=phase
                )
            raise reply_error(event.reply, command=auth.transcript_line(), phase=phase)

    def _cancel_auth(self) -> Procedure[None]:
        """Cancel with "*" and read the 501; the caller then ends the session."""
        yield from self.exchange.send([AuthCancel()])
        yield from self.exchange.reply()

    @_ends_on_violation
    def login(
        self,
        username: str,
        password: str,
        *,
        mechanism: str | None = None,
        allow_insecure: bool = False,
    ) -> Procedure[Reply]:
        """AUTH with a user name and password, the strongest offered mechanism by default."""
        offered = self.conn.extensions.auth_mechanisms
        if not offered:
            raise UnsupportedExtensionError("the server does not offer AUTH")
        names = offered if mechanism is None else [mechanism.upper()]
        from ._mechanisms import choose_mechanism  # SCRAM and friends load on first login

        chosen = choose_mechanism(names, username, password)
        return (yield from self.authenticate(chosen, allow_insecure=allow_insecure))

    # ------------------------------------------------------------------
    # The mail transaction (in _transaction)
    # ------------------------------------------------------------------

    @_ends_on_violation
    def sendmail(
        self,
        sender: str,
        recipients: Iterable[str],
        *,
        body: BodyInfo,
        smtputf8: bool = False,
        mail_options: Mapping[str, Any] | None = None,
        rcpt_options: Mapping[str, Any] | None = None,
    ) -> Procedure[SendResult]:
        """One mail transaction: MAIL, RCPT..., DATA or BDAT; the body is pulled.

        Pipelined when the server offers PIPELINING, chunked when it offers
        CHUNKING (a small message is then one round trip). The body is handed
        over piece by piece through PullBody requests, ending with b"" (a body
        given whole in ``BodyInfo.whole`` asks for none).

        Args:
            sender: the envelope sender; "" is the null sender ``<>``.
            recipients: the envelope recipients (a recipient named twice is
                sent once).
            body: what is known of the body before it is read (its size for
                SIZE=, whether it is 8-bit or binary).
            smtputf8: send as SMTPUTF8 even with ASCII addresses.
            mail_options: keyword arguments of Mail besides ``sender``
                (size, body, smtputf8, ret, envid, requiretls, mt_priority,
                auth, extra); size, body and smtputf8 are filled in when absent.
            rcpt_options: keyword arguments of Rcpt besides ``recipient``
                (notify, orcpt, extra), applied to every recipient.

        Returns:
            A SendResult, when at least one recipient got the message.

        Raises:
            ReplyError: MAIL refused, every recipient refused (``.recipients``
                holds each reply), or the content refused. The transaction is
                reset first, so the session can go on.
            LocalProtocolError: bad input or an option the server does not
                offer; nothing was sent.
            OutcomeUnknownError: the connection failed after content was
                written (``.recipients`` says who would have it).
        """
        return (
            yield from self._transactions.sendmail(
                MailJob(
                    sender=sender,
                    recipients=list(recipients),
                    body=body,
                    smtputf8=smtputf8,
                    mail_options=mail_options,
                    rcpt_options=rcpt_options,
                )
            )
        )

    @_ends_on_violation
    def send_batch(self, jobs: Iterable[MailJob]) -> Procedure[list[SendResult | SMTPError]]:
        """Several mail transactions on this session, each settled on its own.

        With PIPELINING (and DATA), consecutive transactions overlap as RFC 2920
        §3.1 allows: one message's terminator and the next envelope share a
        write. With CHUNKING too, up to 16 whole transactions (MAIL, RCPT...,
        BDAT LAST) are in flight before their replies are read. The bodies are
        pulled one after another, each ended by b"" (those given whole in
        ``BodyInfo.whole`` are not pulled).

        Returns:
            One entry per job, in order: its SendResult, or the SMTPError that
            ended it. When the session ends midway, the jobs settled before keep
            their results, the messages whose content was out get
            OutcomeUnknownError (or the server's 421), and every later job the
            error that ended the session.
        """
        return (yield from self._transactions.send_batch(jobs))

    # ------------------------------------------------------------------
    # Small commands and the end
    # ------------------------------------------------------------------

    @_ends_on_violation
    def command(self, command: Command) -> Procedure[Reply]:
        """Send one command and return its reply (refusals included)."""
        return (yield from self.exchange.command(command)).reply

    @_ends_on_violation
    def pipeline(self, commands: Sequence[Command]) -> Procedure[list[Reply]]:
        """Send commands in one write and return their replies, in order."""
        yield from self.exchange.send(commands)
        replies: list[Reply] = []
        for _ in commands:
            replies.append((yield from self.exchange.reply()).reply)
        return replies

    @_ends_on_violation
    def rset(self) -> Procedure[Reply]:
        """RSET; a refusal raises ReplyError."""
        return (yield from self.exchange.checked(Rset(), "RSET"))

    @_ends_on_violation
    def noop(self) -> Procedure[Reply]:
        """NOOP; a refusal raises ReplyError."""
        return (yield from self.exchange.checked(Noop(), "NOOP"))

    def vrfy(self, address: str) -> Procedure[Reply]:
        """VRFY; returns the reply, refusals included."""
        return self.command(Vrfy(address))

    def expn(self, address: str) -> Procedure[Reply]:
        """EXPN; returns the reply, refusals included."""
        return self.command(Expn(address))

    def help(self, topic: str = "") -> Procedure[Reply]:
        """HELP; returns the reply, refusals included."""
        return self.command(Help(topic))

    def quit(self) -> Procedure[Reply]:
        """QUIT and wait for the 221. Returns the reply.

        In a session the unsafe path made unchecked, QUIT is written as it
        is and its reply, whatever it says, ends the session.
        """
        if self.conn.unchecked:
            return unchecked_quit(self.exchange)
        return self.command(Quit())

    def _quit_quietly(self) -> Procedure[None]:
        with contextlib.suppress(SMTPError):
            yield from self.exchange.command(Quit())
