# smtpbee/_procedures
#
# The session logic every transport needs, written once and still without I/O.
#
# Theory of operation
# -------------------
# A procedure is a generator. It yields *requests* (_requests: write these
# bytes, read some bytes, do the TLS handshake now, give me the next piece of
# the body) and the transport answers each one by sending back the result.
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
# / required), AUTH only over verified TLS unless the caller opts in, and
# replies turned into typed errors. The mail transaction itself (pipelined,
# chunked, overlapped) is in _transaction, built on this file's building blocks.
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ._auth import SASLMechanism, choose_mechanism
from ._commands import (
    Auth,
    AuthCancel,
    AuthResponse,
    Bdat,
    Command,
    Ehlo,
    EndOfData,
    Expn,
    Helo,
    Help,
    Lhlo,
    MessageData,
    Noop,
    Quit,
    Rset,
    StartTLS,
    Vrfy,
)
from ._connection import Connection
from ._errors import (
    AuthenticationRejected,
    ConnectionLostError,
    InsecureAuthenticationError,
    OutcomeUnknownError,
    RemoteProtocolError,
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
from ._requests import Procedure, Read, Timeouts, TLSMode, UpgradeTLS, Write
from ._state import State, Verb
from ._transaction import BodyInfo, MailJob, MailTransactions

__all__ = ["ClientSession"]

_REPLY_EVENTS = (GreetingReceived, ReplyReceived, AuthChallengeReceived)
_CONTENT_TYPES = (MessageData, Bdat, EndOfData)
_CONTENT_END_VERBS = frozenset({Verb.END_OF_DATA, Verb.BDAT_LAST})


Transcript = Callable[[str, str], None]


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
        self._transactions = MailTransactions(self)

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
            if self._transcript is not None and isinstance(event, _REPLY_EVENTS):
                _log_reply(self._transcript, event.reply)
            return event

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
        data = self.conn.send_all(commands)
        if self._transcript is not None:
            for command in commands:
                self._transcript("C", command.transcript_line())
        content = ends_content = False
        for command in commands:
            if isinstance(command, _CONTENT_TYPES):
                content = True
                ends_content = ends_content or command.verb in _CONTENT_END_VERBS
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

    # ------------------------------------------------------------------
    # The mail transaction (in _transaction)
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
        """One mail transaction; see MailTransactions.send_mail."""
        return self._transactions.send_mail(
            sender,
            recipients,
            body=body,
            smtputf8=smtputf8,
            mail_options=mail_options,
            rcpt_options=rcpt_options,
        )

    def send_many(self, jobs: Iterable[MailJob]) -> Procedure:
        """Several transactions, overlapped; see MailTransactions.send_many."""
        return self._transactions.send_many(jobs)

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


def _log_reply(transcript: Transcript, reply: Reply) -> None:
    """Each line of a reply as an ``S`` transcript line; AUTH challenges hidden."""
    code = str(reply.code)
    last = len(reply.lines) - 1
    for i, line in enumerate(reply.lines):
        text = line.decode("utf-8", "replace")
        if reply.code == 334:
            text = "<challenge>" if text else ""
        transcript("S", f"{code}{' ' if i == last else '-'}{text}".rstrip())
