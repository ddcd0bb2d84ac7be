# smtpbee/_exchange
#
# The I/O building blocks every procedure is made of: write bytes, read the
# next event, send a group of commands, read a reply, log. The session
# (_procedures) and the mail transaction (_transaction) are built on this
# layer and on nothing else of each other: procedures -> transaction ->
# exchange -> connection.
#
# Theory of operation
# -------------------
# Each block is a generator that yields requests (_requests) and is driven by
# a transport. Three rules live here, once:
#
#   * Failures are final. An I/O failure thrown in by the transport, a
#     closed connection where a reply was due, or a RemoteProtocolError from
#     the connection marks the session failed before it propagates, so a late
#     reply can never be paired with a later command.
#   * Once any byte of a message's content has been written, a failure before
#     that transaction is answered leaves its outcome unknown: the server may
#     have delivered it (RFC 5321 §4.5.3.2, duplicate deliveries). Such a
#     failure becomes OutcomeUnknownError, whatever failed first: a write, a
#     read, a timeout while the MAIL reply of a pipelined group was awaited.
#   * A reply is only taken as the answer to a command sent before it
#     arrived: before a group is written while nothing is pending, what the
#     server already sent is collected (Poll) and judged by the connection,
#     which refuses it (a 421 is the one reply that may come unasked).
#
# Server text reaches the transcript escaped: a reply can carry ANSI escapes
# or a lone CR meant to forge a "C:" line.
#
# With a SessionLog attached, every write (its exact bytes, unless it carries
# an AUTH secret), every reply (the exact bytes it was parsed from), the end
# of the connection and every failure are recorded too. Without one, each
# path pays a single ``is not None`` test.
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

from ._commands import Auth, AuthResponse, Command, Quit
from ._connection import Connection
from ._errors import (
    ConnectionLostError,
    OutcomeUnknownError,
    RemoteProtocolError,
    SMTPError,
    SMTPTimeoutError,
    reply_error,
)
from ._events import (
    NEED_DATA,
    PAUSED,
    AuthChallengeReceived,
    ConnectionClosed,
    ContentRequested,
    Event,
    GreetingReceived,
    ReplyReceived,
)
from ._replies import Reply, escape_text
from ._requests import Poll, Procedure, Read, Timeouts, Write
from ._state import Phase, ReplyKind, State, Verb

if TYPE_CHECKING:
    from ._session_log import Detail, SessionLog

__all__ = ["Exchange", "ReplyEvent", "Transcript"]

Transcript: TypeAlias = Callable[[str, str], None]
ReplyEvent: TypeAlias = ReplyReceived | ContentRequested | AuthChallengeReceived

_CONTENT_VERBS = frozenset({Verb.MESSAGE_DATA, Verb.END_OF_DATA, Verb.BDAT, Verb.BDAT_LAST})
_CONTENT_STATES = frozenset({State.DATA, State.BDAT})
_CLOSING = ReplyKind.CLOSING
_POLL = Poll()
_COMMAND = Phase.COMMAND
_DATA_BLOCK = Phase.DATA_BLOCK
_REPLY_EVENTS = (GreetingReceived, ReplyReceived, AuthChallengeReceived, ContentRequested)
# Mechanisms whose server challenges tell nothing about the password (a
# SCRAM challenge carries the salt, and its last one the server's signature).
_OPEN_CHALLENGES = frozenset({"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"})


class Exchange:
    """Writes, reads and replies over one Connection, for the procedures.

    Args:
        conn: the connection.
        timeouts: per-phase timeouts.
        transcript: called with ("C" or "S", line) for every command and reply
            line; secrets redacted, server text escaped.
        session_log: records every write, reply, TLS handshake and close.
    """

    def __init__(
        self,
        conn: Connection,
        timeouts: Timeouts,
        transcript: Transcript | None = None,
        session_log: SessionLog | None = None,
    ) -> None:
        self.conn = conn
        self.timeouts = timeouts
        # Every write and read asks for its phase's seconds: looked up once;
        # and a Read is a value, so each possible one is built once.
        self._seconds = {phase: timeouts.for_phase(phase) for phase in Phase}
        self._reads = {
            (phase, new_wait): Read(phase, seconds, new_wait)
            for phase, seconds in self._seconds.items()
            for new_wait in (True, False)
        }
        self._transcript = transcript
        self._session_log = session_log
        # Content has been written for a transaction not yet answered.
        self._content_out = False
        # With a log: the bytes received that no logged reply has taken yet,
        # and the mechanism of the last AUTH sent.
        self._received = bytearray()
        self._mechanism = ""

    @property
    def session_log(self) -> SessionLog | None:
        """The SessionLog this exchange records into, if any."""
        return self._session_log

    def log(self, direction: str, line: str) -> None:
        """A transcript line: ``"C"`` (a command), ``"C!"`` (an unsafe write) or ``"S"``."""
        if self._transcript is not None:
            self._transcript(direction, line)

    def note(self, event: str, *, data: str = "", **details: Detail) -> None:
        """Record an event in the session log, if one is attached.

        For what the exchange cannot see: ``"connect"``, a ``"close"`` by the
        client, a ``"stopped"`` control point (``details`` become keys of the
        record, e.g. ``point="RCPT"``).
        """
        if self._session_log is not None:
            conn = self.conn
            self._session_log.event(
                event, tls=conn.tls_active, state=conn.state.name, data=data, details=details
            )

    def handshake_done(self, verified: bool) -> None:
        """The TLS handshake succeeded: a transcript line and a ``tls-handshake`` record."""
        self.log("C", "<TLS handshake done>")
        if self._session_log is not None:
            state = self.conn.state.name
            details = {"verified": verified}
            self._session_log.event("tls-handshake", tls=True, state=state, details=details)

    def fail(self, exc: SMTPError, *, answered: bool = False) -> SMTPError:
        """End the session for a failure; what to raise.

        OutcomeUnknownError when content is out, unless the server answered
        (a 421 aborts the transaction: nothing was delivered; the session is
        then CLOSING, as the server said, rather than failed).
        """
        if answered:
            return exc
        self.conn.send_failed()
        if self._content_out and not isinstance(exc, OutcomeUnknownError):
            unknown = OutcomeUnknownError(
                f"{exc}: the message may have been accepted; do not resend it blindly"
            )
            unknown.__cause__ = exc
            exc = unknown
        if self._session_log is not None:
            self._log_end("error", data=str(exc), error=type(exc).__name__)
        return exc

    def write(self, data: bytes, phase: Phase, *, unsafe: bool = False) -> Procedure[None]:
        """Write bytes as they are (recorded as an unsafe write when ``unsafe``)."""
        if self._session_log is not None:
            conn = self.conn
            self._session_log.sent(data, tls=conn.tls_active, state=conn.state.name, unsafe=unsafe)
        try:
            yield Write((data,), phase, self._seconds[phase])
        except (SMTPTimeoutError, ConnectionLostError) as exc:
            raise self.fail(exc)  # noqa: B904 - fail() chose the cause

    def event(self) -> Procedure[Event]:
        """The next event from the server, reading as needed."""
        event = self._next_event()
        if event is None:
            new_wait = True
            while event is None:
                yield from self._read(new_wait)
                new_wait = False
                event = self._next_event()
        return event

    def _next_event(self) -> Event | None:
        """The next event from what was received, or None when more must be read."""
        try:
            event = self.conn.next_event()
        except RemoteProtocolError as exc:
            raise self.fail(exc)  # noqa: B904 - fail() chose the cause
        if event is NEED_DATA:
            return None
        if event is PAUSED:  # pragma: no cover - only starttls() reaches TLS_HANDSHAKE
            raise self.fail(RemoteProtocolError("the session paused for a TLS handshake"))
        assert isinstance(event, Event)
        if self._transcript is not None and isinstance(event, _REPLY_EVENTS):
            hidden = isinstance(event, AuthChallengeReceived)
            log_reply(self._transcript, event.reply, hide_text=hidden)
        if self._session_log is not None:
            self._log_event(event)
        # The content's transaction is answered once no content command
        # awaits a reply (a closed connection answers nothing).
        if self._content_out and isinstance(event, _REPLY_EVENTS):
            self._content_out = self._content_pending()
        return event

    def _read(self, new_wait: bool) -> Procedure[None]:
        """Read more from the server into the connection."""
        conn = self.conn
        phase = conn.waiting_for or Phase.COMMAND
        try:
            data = yield self._reads[phase, new_wait]
        except (SMTPTimeoutError, ConnectionLostError) as exc:
            raise self.fail(exc)  # noqa: B904 - fail() chose the cause
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if self._session_log is not None:
            self._received += data

    def _log_event(self, event: Event) -> None:
        log = self._session_log
        assert log is not None
        conn = self.conn
        if isinstance(event, _REPLY_EVENTS):
            reply = event.reply
            raw = self._take_reply_bytes(reply)
            hidden = (
                isinstance(event, AuthChallengeReceived)
                and self._mechanism not in _OPEN_CHALLENGES
                and reply.lines != (b"",)
            )
            state = conn.state.name
            log.received(raw, reply, tls=conn.tls_active, state=state, redacted=hidden)
        else:  # the one other event: ConnectionClosed
            self._log_end("close", by="server")

    def _log_end(self, event: str, *, data: str = "", **details: Detail) -> None:
        """An end of the session; bytes that made no reply (a partial one) go with it."""
        log = self._session_log
        assert log is not None
        raw = bytes(self._received) if self._received else None
        self._received.clear()
        conn = self.conn
        state = conn.state.name
        log.event(event, tls=conn.tls_active, state=state, data=data, raw=raw, details=details)

    def _take_reply_bytes(self, reply: Reply) -> bytes:
        """The bytes a reply was parsed from: its lines, each up to its LF, in order."""
        received = self._received
        end = -1
        for _ in reply.lines:
            end = received.find(b"\n", end + 1)
            if end < 0:
                # Bytes were fed to the connection around the exchange: the
                # reply's wire form is the best account left.
                received.clear()
                return reply.to_bytes()
        raw = bytes(received[: end + 1])
        del received[: end + 1]
        return raw

    def _content_pending(self) -> bool:
        conn = self.conn
        return conn.state in _CONTENT_STATES or conn.awaiting_any(_CONTENT_VERBS)

    def reply(self) -> Procedure[ReplyEvent]:
        """The next reply to a command.

        Raises:
            ConnectionLostError: the server closed the connection instead.
            TransientReplyError: the server is closing (421, or 221 to
                anything but QUIT): nothing more can follow.
            OutcomeUnknownError: either of those while content was out.
        """
        # event() unrolled: a transaction reads a reply per command, most of
        # them already received, and this spares each a generator of its own.
        event = self._next_event()
        if event is None:
            new_wait = True
            while event is None:
                yield from self._read(new_wait)
                new_wait = False
                event = self._next_event()
        return self._answer(event)

    def _answer(self, event: Event) -> ReplyEvent:
        """The event as the reply to a command; a closed or closing session raises."""
        if isinstance(event, ReplyReceived):
            if event.kind is not _CLOSING or isinstance(event.command, Quit):
                return event
            answering = (
                f" (in answer to {event.command.transcript_line()})" if event.command else ""
            )
            error = reply_error(event.reply, phase=f"service closing{answering}")
            raise self.fail(error, answered=True)
        if isinstance(event, ConnectionClosed):
            raise self.fail(ConnectionLostError("the server closed the connection"))
        if not isinstance(event, ContentRequested | AuthChallengeReceived):
            raise AssertionError(f"{event} answers nothing")  # pragma: no cover - one greeting
        return event

    def send(self, commands: Sequence[Command]) -> Procedure[None]:
        """Write commands as one group (a single write)."""
        conn = self.conn
        if not conn.awaiting_replies and conn.open:
            # What the server sent while nothing was asked is judged first.
            # Bytes that came in the same segment as the last reply are
            # already held: asking the transport for more would leave them
            # unjudged.
            unasked = conn.unread
            if not unasked:
                try:
                    data = yield _POLL
                except (SMTPTimeoutError, ConnectionLostError) as exc:
                    raise self.fail(exc)  # noqa: B904 - fail() chose the cause
                if data is not None:
                    self._receive(data)
                    unasked = True
            if unasked:
                yield from self._refuse_unasked()
        try:
            buffers = conn.send_buffers(commands)
        except RemoteProtocolError as exc:  # pragma: no cover - held bytes were judged above
            raise self.fail(exc)  # noqa: B904 - fail() chose the cause
        transcript = self._transcript
        if transcript is not None:
            for command in commands:
                transcript("C", command.transcript_line())
        phase = _COMMAND
        for command in commands:
            if command.verb in _CONTENT_VERBS:
                self._content_out = True
                phase = _DATA_BLOCK
                break
        if self._session_log is not None:
            # The log keeps the exact bytes; only then are the pieces joined.
            self._log_group(commands, b"".join(buffers))
        try:
            yield Write(buffers, phase, self._seconds[phase])
        except (SMTPTimeoutError, ConnectionLostError) as exc:
            raise self.fail(exc)  # noqa: B904 - fail() chose the cause

    def _log_group(self, commands: Sequence[Command], data: bytes) -> None:
        log = self._session_log
        assert log is not None
        secret = False
        for command in commands:
            if isinstance(command, Auth):
                self._mechanism = command.mechanism
                secret = secret or command.initial_response is not None
            elif isinstance(command, AuthResponse):
                secret = True
        text = "\n".join(escape_text(command.transcript_line()) for command in commands)
        conn = self.conn
        log.sent(None if secret else data, text, tls=conn.tls_active, state=conn.state.name)

    def _refuse_unasked(self) -> Procedure[None]:
        """The server closed, or spoke while nothing was asked: raise for it.

        reply() reads the reply to its end and raises for each (a 421 is a
        closing, anything else a protocol violation): there is no command
        it could answer.
        """
        yield from self.reply()
        raise AssertionError("an unasked reply was taken as an answer")  # pragma: no cover

    def command(self, command: Command) -> Procedure[ReplyEvent]:
        """Send one command and return the event of its reply."""
        yield from self.send([command])
        return (yield from self.reply())

    def checked(self, command: Command, phase: str) -> Procedure[Reply]:
        """Send one command; its reply, or the ReplyError of a refusal."""
        event = yield from self.command(command)
        if isinstance(event, ReplyReceived) and event.accepted:
            return event.reply
        raise reply_error(event.reply, command=command.transcript_line(), phase=phase)


def log_reply(transcript: Transcript, reply: Reply, *, hide_text: bool = False) -> None:
    """Each line of a reply as an ``S`` transcript line, escaped (AUTH challenges hidden)."""
    code = str(reply.code)
    last = len(reply.lines) - 1
    for i, line in enumerate(reply.lines):
        text = escape_text(line.decode("utf-8", "replace"))
        if hide_text:
            text = "<challenge>" if text else ""
        transcript("S", f"{code}{' ' if i == last else '-'}{text}".rstrip())
