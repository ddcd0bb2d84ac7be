# smtpbee/_procedures
#
# The session logic every transport needs, written once and still without I/O.
#
# Theory of operation
# -------------------
# A procedure is a generator. It yields *requests* — write these bytes, read
# some bytes, do the TLS handshake now, give me the next piece of the body —
# and the transport answers each one by sending back the result:
#
#     Write(data, phase)     -> None
#     Read(phase, timeout, new_wait) -> bytes (b"" when the server closed)
#     UpgradeTLS()           -> bool: whether the certificate was verified
#     PullBody()             -> bytes (b"" at the end of the body)
#
# When the I/O fails, the transport throws the error into the generator
# (SMTPTimeoutError, ConnectionLostError); the procedure then marks the
# session dead and re-raises — as OutcomeUnknownError when the failure came
# after the content was handed over, because the message may have been
# accepted. A transport is a short loop:
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
# Policy lives here too: EHLO with HELO fallback, STARTTLS (none / opportunistic
# / required), AUTH only over verified TLS unless the caller opts in, the mail
# transaction pipelined and chunked when the server allows (MAIL, every RCPT and
# BDAT LAST in one write: one round trip), RSET after a failed transaction, and
# replies turned into typed errors.
from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ._auth import SASLMechanism, choose_mechanism
from ._commands import (
    Auth,
    AuthCancel,
    AuthResponse,
    Bdat,
    Command,
    Data,
    Ehlo,
    EndOfData,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTLS,
    Vrfy,
)
from ._connection import Connection
from ._data import LineEndingNormalizer
from ._errors import (
    AuthenticationRejected,
    ConnectionLostError,
    InsecureAuthenticationError,
    InvalidInputError,
    LocalProtocolError,
    OutcomeUnknownError,
    ProtocolError,
    RemoteProtocolError,
    ReplyError,
    SMTPError,
    SMTPTimeoutError,
    TLSRequiredError,
    UnsupportedExtensionError,
    reply_error,
)
from ._events import (
    NEED_DATA,
    PAUSED,
    AuthChallengeReceived,
    ConnectionClosed,
    GreetingReceived,
    Phase,
    ReplyReceived,
)
from ._extensions import Extensions
from ._receivebuffer import ReplyLimits
from ._replies import Reply
from ._state import State
from ._validation import parse_reverse_path

__all__ = [
    "BodyInfo",
    "ClientSession",
    "MailJob",
    "Procedure",
    "PullBody",
    "Read",
    "Request",
    "SendResult",
    "TLSMode",
    "Timeouts",
    "UpgradeTLS",
    "Write",
]


@dataclass(frozen=True, slots=True)
class Write:
    """Write these bytes (all of them) to the server."""

    data: bytes = field(repr=False)
    phase: Phase
    timeout: float


@dataclass(frozen=True, slots=True)
class Read:
    """Read whatever the server sends next (at least one byte, or b"" at EOF).

    Attributes:
        phase: what is awaited.
        timeout: seconds allowed for the whole reply.
        new_wait: True when a new reply is awaited (start a new deadline);
            False when the reply so far is incomplete (keep the deadline).
    """

    phase: Phase
    timeout: float
    new_wait: bool


@dataclass(frozen=True, slots=True)
class UpgradeTLS:
    """Do the TLS handshake on the connection now (STARTTLS was accepted)."""


@dataclass(frozen=True, slots=True)
class PullBody:
    """Hand over the next piece of the message body (b"" at its end)."""


Request: TypeAlias = Write | Read | UpgradeTLS | PullBody
Procedure: TypeAlias = Generator[Request, Any, Any]


class TLSMode(enum.Enum):
    """How the session gets (or does not get) TLS."""

    NONE = "none"
    OPPORTUNISTIC = "opportunistic"
    STARTTLS = "starttls"
    IMPLICIT = "implicit"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Seconds allowed for each phase (RFC 5321 §4.5.3.2 defaults).

    ``Timeouts.uniform(30)`` is the one knob that sets them all.
    """

    greeting: float = Phase.GREETING.default_timeout
    mail: float = Phase.MAIL.default_timeout
    rcpt: float = Phase.RCPT.default_timeout
    data_initiation: float = Phase.DATA_INITIATION.default_timeout
    data_block: float = Phase.DATA_BLOCK.default_timeout
    data_termination: float = Phase.DATA_TERMINATION.default_timeout
    command: float = Phase.COMMAND.default_timeout

    @classmethod
    def uniform(cls, seconds: float) -> Timeouts:
        return cls(**{name: seconds for name in cls.__dataclass_fields__})

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"timeout {name} must be a positive number, not {value!r}")

    def for_phase(self, phase: Phase) -> float:
        return float(getattr(self, phase.name.lower()))


@dataclass(frozen=True, slots=True)
class BodyInfo:
    """What is known of a body before it is read.

    Attributes:
        size: its length in octets, if known (for SIZE=).
        eight_bit: whether it has 8-bit octets; None if unknown (streamed).
        binary: whether it must go as BINARYMIME (unnormalised octets).
    """

    size: int | None = None
    eight_bit: bool | None = None
    binary: bool = False

    @classmethod
    def of_bytes(cls, body: bytes) -> BodyInfo:
        return cls(size=len(body), eight_bit=not body.isascii())


@dataclass(slots=True)
class SendResult:
    """The outcome of one mail transaction.

    Attributes:
        recipients: every recipient's reply to RCPT, accepted or not.
        data: the server's final reply to the content.
        delivery: with LMTP, each accepted recipient's final reply.
    """

    recipients: dict[str, Reply]
    data: Reply | None = None
    delivery: dict[str, Reply] = field(default_factory=dict)

    @property
    def refused(self) -> dict[str, Reply]:
        """Recipients refused at RCPT time (or, with LMTP, at delivery)."""
        refused = {a: r for a, r in self.recipients.items() if not r.is_success}
        refused.update({a: r for a, r in self.delivery.items() if not r.is_success})
        return refused

    @property
    def accepted(self) -> list[str]:
        """Recipients the message went to."""
        return [a for a in self.recipients if a not in self.refused]


@dataclass(frozen=True, slots=True, kw_only=True)
class MailJob:
    """One message for ClientSession.send_many: its envelope and what is known of its body."""

    sender: str
    recipients: Sequence[str]
    body: BodyInfo
    smtputf8: bool = False
    mail_options: Mapping[str, Any] | None = None
    rcpt_options: Mapping[str, Any] | None = None


Transcript = Callable[[str, str], None]
_CHUNK_SIZE = 1 << 20
_WRITE_SIZE = 1 << 16


class ClientSession:
    """The session procedures on top of a Connection.

    Args:
        local_hostname: the name to give in EHLO/HELO/LHLO.
        tls: the TLS mode; IMPLICIT means the transport wraps before the
            greeting.
        lmtp: speak LMTP.
        timeouts: per-phase timeouts.
        limits: reply size limits.
        transcript: called with ("C" or "S", line) for every command and reply
            line, secrets redacted.
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
    ) -> None:
        self.local_hostname = local_hostname
        self.tls_mode = tls
        self.timeouts = timeouts or Timeouts()
        self.conn = Connection(lmtp=lmtp, tls=tls is TLSMode.IMPLICIT, limits=limits)
        self.tls_verified = False
        self.greeting: Reply | None = None
        self.extensions_before_tls: Extensions | None = None
        self._transcript = transcript

    # ------------------------------------------------------------------
    # The building blocks: write, read one event, run commands
    # ------------------------------------------------------------------

    def _log(self, direction: str, line: str) -> None:
        if self._transcript is not None:
            self._transcript(direction, line)

    def _write(self, data: bytes, phase: Phase, *, ends_content: bool = False) -> Procedure:
        try:
            yield Write(data, phase, self.timeouts.for_phase(phase))
        except (SMTPTimeoutError, ConnectionLostError) as exc:
            self.conn.send_failed()
            if ends_content:
                # Some or all of the terminator may have reached the server.
                raise OutcomeUnknownError(
                    f"{exc} while ending the content: the message may have been accepted"
                ) from exc
            raise

    def _event(self) -> Procedure:
        """The next event from the server, reading as needed."""
        conn = self.conn
        new_wait = True
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                phase = conn.waiting_for or Phase.COMMAND
                try:
                    data = yield Read(phase, self.timeouts.for_phase(phase), new_wait)
                except (SMTPTimeoutError, ConnectionLostError) as exc:
                    conn.send_failed()
                    if phase is Phase.DATA_TERMINATION:
                        raise OutcomeUnknownError(
                            f"{exc}; the message may have been accepted: do not resend blindly"
                        ) from exc
                    raise
                conn.receive_data(data)
                new_wait = False
                continue
            if event is PAUSED:  # pragma: no cover - handled by _starttls
                raise RemoteProtocolError("unexpected pause")
            if isinstance(event, GreetingReceived | ReplyReceived | AuthChallengeReceived):
                self._log_reply(event.reply)
            return event

    def _log_reply(self, reply: Reply) -> None:
        if self._transcript is None:
            return
        code = str(reply.code)
        last = len(reply.lines) - 1
        for i, line in enumerate(reply.lines):
            text = line.decode("utf-8", "replace")
            if reply.is_intermediate and reply.code == 334:
                text = "<challenge>" if text else ""
            sep = " " if i == last else "-"
            self._log("S", f"{code}{sep}{text}".rstrip())

    def _reply(self) -> Procedure:
        """The next reply to a command; a closed connection is an error."""
        phase = self.conn.waiting_for
        event = yield from self._event()
        if isinstance(event, ConnectionClosed):
            error = ConnectionLostError("the server closed the connection")
            if phase is Phase.DATA_TERMINATION:
                raise OutcomeUnknownError(
                    "the connection closed before the final reply to the content:"
                    " the message may have been accepted"
                ) from error
            raise error
        if (
            isinstance(event, ReplyReceived)
            and event.reply.code == 421
            and not isinstance(event.command, Quit)
        ):
            # The server is closing: whatever was asked, nothing more can follow.
            command = event.command.transcript_line() if event.command is not None else None
            raise reply_error(event.reply, command=command, phase="service closing")
        return event

    def _send(self, commands: Sequence[Command]) -> Procedure:
        data = self.conn.send_all(list(commands))
        for command in commands:
            self._log("C", command.transcript_line())
        content = any(isinstance(c, MessageData | Bdat | EndOfData) for c in commands)
        ends_content = any(
            isinstance(c, EndOfData) or (isinstance(c, Bdat) and c.last) for c in commands
        )
        phase = Phase.DATA_BLOCK if content else Phase.COMMAND
        yield from self._write(data, phase, ends_content=ends_content)

    def command(self, command: Command) -> Procedure:
        """Send one command and return its reply (a Reply; refusals included)."""
        yield from self._send([command])
        event = yield from self._reply()
        return event.reply

    def pipeline(self, commands: Sequence[Command]) -> Procedure:
        """Send commands in one write and return their replies, in order."""
        yield from self._send(commands)
        replies: list[Reply] = []
        for _ in commands:
            event = yield from self._reply()
            replies.append(event.reply)
        return replies

    def _checked(self, command: Command, phase: str) -> Procedure:
        reply = yield from self.command(command)
        if not reply.is_success:
            raise reply_error(reply, command=command.transcript_line(), phase=phase)
        return reply

    # ------------------------------------------------------------------
    # Opening: greeting, EHLO/HELO, STARTTLS
    # ------------------------------------------------------------------

    def open(self) -> Procedure:
        """Greeting, EHLO (HELO fallback) and STARTTLS as the TLS mode says.

        Returns the server's extensions.
        """
        event = yield from self._event()
        if isinstance(event, ConnectionClosed):
            raise ConnectionLostError("the server closed the connection before its greeting")
        self.greeting = event.reply
        if event.reply.code != 220:
            if self.conn.state is State.REFUSED:
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
                )
        return self.conn.extensions

    def hello(self) -> Procedure:
        """EHLO (LHLO for LMTP); HELO if EHLO is refused. Returns the reply."""
        if self.conn.lmtp:
            return (yield from self._checked(Lhlo(self.local_hostname), "LHLO"))
        reply = yield from self.command(Ehlo(self.local_hostname))
        if reply.is_success:
            return reply
        if self.tls_mode is TLSMode.STARTTLS and not self.conn.tls_active:
            yield from self._quit_quietly()
            raise TLSRequiredError(
                f"the server refused EHLO ({reply.code}), so it cannot offer STARTTLS"
            )
        return (yield from self._checked(Helo(self.local_hostname), "HELO"))

    def starttls(self) -> Procedure:
        """STARTTLS, the handshake, and EHLO again (RFC 3207)."""
        self.extensions_before_tls = self.conn.extensions
        reply = yield from self.command(StartTLS())
        if not reply.is_success:
            if self.tls_mode is TLSMode.OPPORTUNISTIC:
                return reply
            yield from self._quit_quietly()
            raise TLSRequiredError(f"the server refused STARTTLS: {reply}")
        if self.conn.next_event() is not PAUSED:  # pragma: no cover - the state table forbids it
            raise RemoteProtocolError("STARTTLS accepted but the session did not pause")
        try:
            self.tls_verified = bool((yield UpgradeTLS()))
        except BaseException:
            # A failed handshake leaves the stream in an unknown state.
            self.conn.send_failed()
            raise
        self.conn.tls_established()
        self._log("C", "<TLS handshake done>")
        return (yield from self.hello())

    # ------------------------------------------------------------------
    # AUTH
    # ------------------------------------------------------------------

    def authenticate(self, mechanism: SASLMechanism, *, allow_insecure: bool = False) -> Procedure:
        """Run one SASL exchange. Returns the 235 reply.

        Raises:
            InsecureAuthenticationError: not over verified TLS, and the
                caller did not pass ``allow_insecure``.
            AuthenticationRejected: 5xx (no other mechanism is tried).
            TransientReplyError: 4xx.
        """
        if not allow_insecure and not (self.conn.tls_active and self.tls_verified):
            why = "unverified TLS" if self.conn.tls_active else "plaintext"
            raise InsecureAuthenticationError(
                f"refusing AUTH over {why}; pass allow_insecure=True to allow it"
            )
        initial = mechanism.initial_response()
        auth = Auth(mechanism.name, initial)
        if len(auth.to_bytes()) > 512:
            auth = auth.without_initial_response()
        pending_initial = initial if auth.initial_response is None else None
        yield from self._send([auth])
        while True:
            event = yield from self._reply()
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
                yield from self._send([response])
                continue
            reply = event.reply
            if reply.is_success:
                mechanism.success()
                return reply
            details = mechanism.failure_details
            phase = f"AUTH {mechanism.name}" + (f" ({details})" if details else "")
            if reply.is_permanent:
                raise AuthenticationRejected(reply, command=auth.transcript_line(), phase=phase)
            raise reply_error(reply, command=auth.transcript_line(), phase=phase)

    def _cancel_auth(self) -> Procedure:
        """Cancel with "*", read the 501, and end the session: the server broke SASL."""
        yield from self._send([AuthCancel()])
        yield from self._reply()
        self.conn.send_failed()

    def login(
        self,
        username: str,
        password: str,
        *,
        mechanism: str | None = None,
        allow_insecure: bool = False,
    ) -> Procedure:
        """AUTH with a user name and password, the strongest offered mechanism by default."""
        offered = self.conn.extensions.auth_mechanisms
        if not offered:
            raise UnsupportedExtensionError("the server does not offer AUTH")
        if mechanism is None:
            chosen = choose_mechanism(offered, username, password)
        else:
            chosen = choose_mechanism([mechanism.upper()], username, password)
        return (yield from self.authenticate(chosen, allow_insecure=allow_insecure))

    # ------------------------------------------------------------------
    # The mail transaction
    # ------------------------------------------------------------------

    def send_mail(
        self,
        sender: str,
        recipients: Iterable[str],
        *,
        body: BodyInfo,
        smtputf8: bool = False,
        mail_options: Mapping[str, Any] | None = None,
        rcpt_options: Mapping[str, Any] | None = None,
    ) -> Procedure:
        """One mail transaction: MAIL, RCPT..., DATA or BDAT; the body is pulled.

        Pipelined when the server offers PIPELINING, chunked when it offers
        CHUNKING (then a small message is one round trip). Returns a
        SendResult when at least one recipient got the message.

        Raises:
            ReplyError: MAIL refused, every recipient refused (``.recipients``
                holds each reply), or the content refused. The transaction is
                reset first, so the session can go on.
            LocalProtocolError: bad input; nothing was sent.
            OutcomeUnknownError: the connection failed after the content.
        """
        mail, rcpts, chunked = self._prepare(
            sender, recipients, body, smtputf8, mail_options, rcpt_options
        )
        return (yield from self._transaction(mail, rcpts, body, chunked))

    def _prepare(
        self,
        sender: str,
        recipients: Iterable[str],
        body: BodyInfo,
        smtputf8: bool,
        mail_options: Mapping[str, Any] | None,
        rcpt_options: Mapping[str, Any] | None,
    ) -> tuple[Mail, list[Rcpt], bool]:
        """The MAIL and RCPT commands for a message, checked; whether to use BDAT."""
        # A recipient named twice would get two RCPTs but one entry in the
        # result, and LMTP would then answer more often than counted.
        recipients = list(dict.fromkeys(recipients))
        if not recipients:
            raise InvalidInputError("at least one recipient is needed")
        ext = self.conn.extensions
        rcpts = [Rcpt(recipient=r, **dict(rcpt_options or {})) for r in recipients]
        sender_path = parse_reverse_path(sender)
        needs_utf8 = (
            smtputf8
            or (sender_path is not None and sender_path.needs_smtputf8)
            or any(r.needs_smtputf8 for r in rcpts)
        )
        mail_args: dict[str, Any] = dict(mail_options or {})
        mail_args.setdefault("smtputf8", needs_utf8)
        if body.binary:
            mail_args.setdefault("body", "BINARYMIME")
        elif body.eight_bit or (body.eight_bit is None and ext.eightbitmime):
            if ext.eightbitmime:
                mail_args.setdefault("body", "8BITMIME")
            elif not needs_utf8:
                raise UnsupportedExtensionError(
                    "the message has 8-bit content and the server does not offer 8BITMIME"
                )
        if body.size is not None and ext.supports_size:
            mail_args.setdefault("size", body.size)
        mail = Mail(sender=sender, **mail_args)
        chunked = ext.chunking and (self.conn.pipelining or body.binary)
        return mail, rcpts, chunked

    def _transaction(
        self, mail: Mail, rcpts: list[Rcpt], body: BodyInfo, chunked: bool
    ) -> Procedure:
        if self.conn.pipelining:
            return (yield from self._pipelined_transaction(mail, rcpts, body, chunked))
        return (yield from self._lockstep_transaction(mail, rcpts, body, chunked))

    def send_many(self, jobs: Iterable[MailJob]) -> Procedure:
        """Several mail transactions on this session, each settled on its own.

        With PIPELINING (and DATA), consecutive transactions overlap as RFC 2920
        §3.1 allows: the end of one message's content, its terminator, and the
        next MAIL, RCPTs and DATA go out in one write, so each message costs one
        round trip. With CHUNKING each message is already one round trip.

        Returns a list with one entry per job, in order: its SendResult, the
        SMTPError that ended it (a refusal, bad input, or — for the message
        whose final reply was lost — OutcomeUnknownError), or None for jobs
        never tried because the session ended first.
        """
        jobs = list(jobs)
        results: list[SendResult | SMTPError | None] = [None] * len(jobs)
        # With CHUNKING a message is one round trip already; LMTP's replies per
        # recipient make overlapping more trouble than it saves.
        ext = self.conn.extensions
        overlap = self.conn.pipelining and not self.conn.lmtp and not ext.chunking
        carry: list[Command] = []
        awaiting: tuple[int, SendResult] | None = None
        index = -1
        try:
            for index, job in enumerate(jobs):
                try:
                    mail, rcpts, chunked = self._prepare(
                        job.sender,
                        job.recipients,
                        job.body,
                        job.smtputf8,
                        job.mail_options,
                        job.rcpt_options,
                    )
                except LocalProtocolError as exc:
                    results[index] = exc
                    yield from self._skip_body()
                    continue
                if not overlap:
                    try:
                        results[index] = yield from self._transaction(
                            mail, rcpts, job.body, chunked
                        )
                    except ReplyError as exc:
                        results[index] = exc
                    continue
                yield from self._send_content([*carry, mail, *rcpts, Data()])
                carry = []
                if awaiting is not None:
                    results[awaiting[0]] = yield from self._settle(awaiting[1])
                    awaiting = None
                result, data_reply, failure = yield from self._envelope_replies(mail, rcpts)
                if failure is not None or data_reply.code != 354:
                    results[index] = yield from self._abandon(failure, data_reply)
                    yield from self._skip_body()
                    continue
                carry = yield from self._stream_content([EndOfData()], write_last=False)
                awaiting = (index, result)
            if awaiting is not None:
                yield from self._send_content(carry)
                results[awaiting[0]] = yield from self._settle(awaiting[1])
        except (ConnectionLostError, SMTPTimeoutError, OutcomeUnknownError, ProtocolError) as exc:
            # The session is over. The message whose content was handed over may
            # have been delivered; the one whose envelope was on its way was not.
            if awaiting is not None:
                results[awaiting[0]] = _outcome_unknown(exc)
            if results[index] is None:
                results[index] = _envelope_lost(exc) if awaiting is not None else exc
        return results

    def _envelope_replies(self, mail: Mail, rcpts: list[Rcpt]) -> Procedure:
        """The replies to MAIL, each RCPT and DATA; the envelope's failure, if any."""
        mail_reply = (yield from self._reply()).reply
        result = SendResult(recipients={})
        for rcpt in rcpts:
            result.recipients[rcpt.recipient] = (yield from self._reply()).reply
        data_reply = (yield from self._reply()).reply
        return result, data_reply, _envelope_failure(mail, mail_reply, result)

    def _abandon(self, failure: ReplyError | None, data_reply: Reply) -> Procedure:
        """End a transaction whose envelope or DATA was refused; return the error."""
        if data_reply.code == 354:
            # RFC 2920 §3.1: DATA accepted with no recipient: end it at once.
            yield from self._send([EndOfData()])
            yield from self._reply()
        yield from self._reset()
        return failure or reply_error(data_reply, command="DATA", phase="DATA")

    def _settle(self, result: SendResult) -> Procedure:
        """Read the final reply of an overlapped transaction.

        No RSET on failure: the transaction is over, and the next one is
        already on its way.
        """
        reply = (yield from self._reply()).reply
        result.data = reply
        if reply.is_success:
            return result
        return reply_error(reply, phase="DATA (end of content)")

    def _skip_body(self) -> Procedure:
        """Consume a job's body unsent, so the next job's body comes next."""
        while (yield PullBody()):
            pass

    def _pipelined_transaction(
        self, mail: Mail, rcpts: list[Rcpt], body: BodyInfo, chunked: bool
    ) -> Procedure:
        normalizer = None if body.binary else LineEndingNormalizer()
        opener: Bdat | Data
        if chunked:
            data, last = yield from self._next_chunk(normalizer)
            opener = Bdat(data, last=last)
        else:
            opener = Data()
        yield from self._send([mail, *rcpts, opener])
        result, opener_reply, failure = yield from self._envelope_replies(mail, rcpts)
        if failure is not None:
            raise (yield from self._abandon(failure, opener_reply))
        if isinstance(opener, Bdat):
            return (yield from self._chunks(result, opener, opener_reply, normalizer))
        return (yield from self._data_content(result, opener_reply))

    def _lockstep_transaction(
        self, mail: Mail, rcpts: list[Rcpt], body: BodyInfo, chunked: bool
    ) -> Procedure:
        mail_reply = yield from self.command(mail)
        result = SendResult(recipients={})
        if mail_reply.is_success:
            for rcpt in rcpts:
                result.recipients[rcpt.recipient] = yield from self.command(rcpt)
        failure = _envelope_failure(mail, mail_reply, result)
        if failure is not None:
            yield from self._reset()
            raise failure
        if chunked:
            normalizer = None if body.binary else LineEndingNormalizer()
            data, last = yield from self._next_chunk(normalizer)
            opener = Bdat(data, last=last)
            opener_reply = yield from self.command(opener)
            return (yield from self._chunks(result, opener, opener_reply, normalizer))
        data_reply = yield from self.command(Data())
        return (yield from self._data_content(result, data_reply))

    def _stream_content(self, trailer: list[Command], *, write_last: bool = True) -> Procedure:
        """Pull the body and send it as DATA content, then ``trailer`` (EndOfData...).

        Small pieces are gathered up to _WRITE_SIZE, and the last piece goes in
        the same write as the trailer: a small message is one write. With
        ``write_last=False`` that last group is returned instead of written, so
        the caller can put the next transaction's envelope behind it.
        """
        held: list[bytes] = []
        held_size = 0
        while True:
            piece = yield PullBody()
            if piece:
                held.append(piece)
                held_size += len(piece)
                if held_size < _WRITE_SIZE:
                    continue
            group: list[Command] = [MessageData(b"".join(held))] if held else []
            held, held_size = [], 0
            if not piece:
                group += trailer
                if not write_last:
                    return group
            yield from self._send_content(group)
            if not piece:
                return []

    def _send_content(self, group: list[Command]) -> Procedure:
        try:
            yield from self._send(group)
        except LocalProtocolError:
            # Ending the content now would deliver a truncated message,
            # and DATA has no other way out: the session must die.
            self.conn.send_failed()
            raise

    def _data_content(self, result: SendResult, data_reply: Reply) -> Procedure:
        if data_reply.code != 354:
            raise (yield from self._abandon(None, data_reply))
        yield from self._stream_content([EndOfData()])
        return (yield from self._final_replies(result, "DATA"))

    def _chunks(
        self,
        result: SendResult,
        chunk: Bdat,
        reply: Reply,
        normalizer: LineEndingNormalizer | None,
    ) -> Procedure:
        """Go on with BDAT after the first chunk was answered."""
        while True:
            if self.conn.lmtp and chunk.last:
                return (yield from self._lmtp_delivery(result, reply, "BDAT"))
            if not reply.is_success:
                yield from self._reset()
                raise reply_error(reply, command=chunk.transcript_line(), phase="BDAT")
            if chunk.last:
                result.data = reply
                return result
            data, last = yield from self._next_chunk(normalizer)
            chunk = Bdat(data, last=last)
            try:
                reply = yield from self.command(chunk)
            except LocalProtocolError:
                # Nothing of the chunk went out: abandon the transaction.
                yield from self._reset()
                raise

    def _final_replies(self, result: SendResult, phase: str) -> Procedure:
        first = (yield from self._reply()).reply
        if self.conn.lmtp:
            return (yield from self._lmtp_delivery(result, first, phase))
        result.data = first
        if not first.is_success:
            yield from self._reset()
            raise reply_error(first, phase=f"{phase} (end of content)")
        return result

    def _lmtp_delivery(self, result: SendResult, first: Reply, phase: str) -> Procedure:
        # RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
        accepted = [a for a, r in result.recipients.items() if r.is_success]
        reply = first
        for index, address in enumerate(accepted):
            if index:
                reply = (yield from self._reply()).reply
            result.delivery[address] = reply
        result.data = reply
        if not any(r.is_success for r in result.delivery.values()):
            yield from self._reset()
            error = reply_error(reply, phase=f"{phase} (LMTP delivery to every recipient failed)")
            error.recipients = dict(result.delivery)
            raise error
        return result

    def _next_chunk(self, normalizer: LineEndingNormalizer | None) -> Procedure:
        """The next BDAT chunk, up to about _CHUNK_SIZE, and whether it is the last."""
        parts: list[bytes] = []
        size = 0
        while size < _CHUNK_SIZE:
            piece = yield PullBody()
            if not piece:
                if normalizer is not None:
                    parts.append(normalizer.end())
                return b"".join(parts), True
            if normalizer is not None:
                piece = normalizer.encode(piece)
            parts.append(piece)
            size += len(piece)
        return b"".join(parts), False

    def _reset(self) -> Procedure:
        """RSET after a failed transaction.

        Only reached while the session is alive: a 421, a closed connection
        or an I/O error has already raised out of _reply.
        """
        yield from self.command(Rset())

    # ------------------------------------------------------------------
    # Small commands and the end
    # ------------------------------------------------------------------

    def rset(self) -> Procedure:
        return (yield from self._checked(Rset(), "RSET"))

    def noop(self) -> Procedure:
        return (yield from self._checked(Noop(), "NOOP"))

    def vrfy(self, address: str) -> Procedure:
        return (yield from self.command(Vrfy(address)))

    def expn(self, address: str) -> Procedure:
        return (yield from self.command(Expn(address)))

    def help(self, topic: str = "") -> Procedure:
        return (yield from self.command(Help(topic)))

    def quit(self) -> Procedure:
        """QUIT and wait for the 221. Returns the reply."""
        return (yield from self.command(Quit()))

    def _quit_quietly(self) -> Procedure:
        with contextlib.suppress(SMTPError):
            yield from self.command(Quit())


def _envelope_failure(mail: Mail, mail_reply: Reply, result: SendResult) -> ReplyError | None:
    """The error that ends a transaction whose MAIL or every RCPT was refused."""
    if not mail_reply.is_success:
        return reply_error(mail_reply, command=mail.transcript_line(), phase="MAIL")
    replies = list(result.recipients.values())
    if any(r.is_success for r in replies):
        return None
    permanent = [r for r in replies if r.is_permanent]
    error = reply_error((permanent or replies)[0], phase="RCPT (every recipient refused)")
    error.recipients = dict(result.recipients)
    return error


def _outcome_unknown(exc: SMTPError) -> OutcomeUnknownError:
    if isinstance(exc, OutcomeUnknownError):
        return exc
    unknown = OutcomeUnknownError(f"{exc}: the message may have been accepted")
    unknown.__cause__ = exc
    return unknown


def _envelope_lost(exc: SMTPError) -> SMTPError:
    if not isinstance(exc, OutcomeUnknownError):
        return exc
    lost = ConnectionLostError("the session ended before this message's content was sent")
    lost.__cause__ = exc
    return lost
