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
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

from ._commands import Command, Quit
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
from ._state import Phase, State, Verb

__all__ = ["Exchange", "ReplyEvent", "Transcript"]

Transcript: TypeAlias = Callable[[str, str], None]
ReplyEvent: TypeAlias = ReplyReceived | ContentRequested | AuthChallengeReceived

_CONTENT_VERBS = frozenset({Verb.MESSAGE_DATA, Verb.END_OF_DATA, Verb.BDAT, Verb.BDAT_LAST})
_CONTENT_STATES = frozenset({State.DATA, State.BDAT})
_REPLY_EVENTS = (GreetingReceived, ReplyReceived, AuthChallengeReceived, ContentRequested)


class Exchange:
    """Writes, reads and replies over one Connection, for the procedures.

    Args:
        conn: the connection.
        timeouts: per-phase timeouts.
        transcript: called with ("C" or "S", line) for every command and reply
            line; secrets redacted, server text escaped.
    """

    def __init__(
        self, conn: Connection, timeouts: Timeouts, transcript: Transcript | None = None
    ) -> None:
        self.conn = conn
        self.timeouts = timeouts
        self._transcript = transcript
        # Content has been written for a transaction not yet answered.
        self._content_out = False

    def log(self, direction: str, line: str) -> None:
        if self._transcript is not None:
            self._transcript(direction, line)

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
            return unknown
        return exc

    def write(self, data: bytes, phase: Phase) -> Procedure[None]:
        try:
            yield Write(data, phase, self.timeouts.for_phase(phase))
        except (SMTPTimeoutError, ConnectionLostError) as exc:
            raise self.fail(exc)  # noqa: B904 - fail() chose the cause

    def event(self) -> Procedure[Event]:
        """The next event from the server, reading as needed."""
        conn = self.conn
        new_wait = True
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                raise self.fail(exc)  # noqa: B904 - fail() chose the cause
            if event is NEED_DATA:
                phase = conn.waiting_for or Phase.COMMAND
                try:
                    data = yield Read(phase, self.timeouts.for_phase(phase), new_wait)
                except (SMTPTimeoutError, ConnectionLostError) as exc:
                    raise self.fail(exc)  # noqa: B904 - fail() chose the cause
                conn.receive_data(data)
                new_wait = False
                continue
            if event is PAUSED:  # pragma: no cover - only starttls() reaches TLS_HANDSHAKE
                raise self.fail(RemoteProtocolError("the session paused for a TLS handshake"))
            assert isinstance(event, Event)
            if self._transcript is not None and isinstance(event, _REPLY_EVENTS):
                hidden = isinstance(event, AuthChallengeReceived)
                log_reply(self._transcript, event.reply, hide_text=hidden)
            # The content's transaction is answered once no content command
            # awaits a reply (a closed connection answers nothing).
            if self._content_out and isinstance(event, _REPLY_EVENTS):
                self._content_out = self._content_pending()
            return event

    def _content_pending(self) -> bool:
        conn = self.conn
        return conn.state in _CONTENT_STATES or any(
            command.verb in _CONTENT_VERBS for command in conn.pending
        )

    def reply(self) -> Procedure[ReplyEvent]:
        """The next reply to a command.

        Raises:
            ConnectionLostError: the server closed the connection instead.
            TransientReplyError: the server is closing (421, or 221 to
                anything but QUIT): nothing more can follow.
            OutcomeUnknownError: either of those while content was out.
        """
        event = yield from self.event()
        if isinstance(event, ConnectionClosed):
            raise self.fail(ConnectionLostError("the server closed the connection"))
        if not isinstance(event, ReplyReceived | ContentRequested | AuthChallengeReceived):
            raise AssertionError(f"{event} answers nothing")  # pragma: no cover - one greeting
        if (
            isinstance(event, ReplyReceived)
            and event.closing
            and not isinstance(event.command, Quit)
        ):
            answering = (
                f" (in answer to {event.command.transcript_line()})" if event.command else ""
            )
            error = reply_error(event.reply, phase=f"service closing{answering}")
            raise self.fail(error, answered=True)
        return event

    def send(self, commands: Sequence[Command]) -> Procedure[None]:
        """Write commands as one group (a single write)."""
        conn = self.conn
        if not conn.pending and conn.open:
            yield from self._collect_unasked()
        try:
            data = conn.send_all(commands)
        except RemoteProtocolError as exc:  # pragma: no cover - _collect_unasked judged held bytes
            raise self.fail(exc)  # noqa: B904 - fail() chose the cause
        transcript = self._transcript
        content = False
        for command in commands:
            if transcript is not None:
                transcript("C", command.transcript_line())
            content = content or command.verb in _CONTENT_VERBS
        if content:
            self._content_out = True
        yield from self.write(data, Phase.DATA_BLOCK if content else Phase.COMMAND)

    def _collect_unasked(self) -> Procedure[None]:
        """Judge what the server sent while nothing was asked, before a new group."""
        # Bytes that came in the same segment as the last reply are already
        # held: asking the transport for more would leave them unjudged.
        if not self.conn.unread:
            try:
                data = yield Poll()
            except (SMTPTimeoutError, ConnectionLostError) as exc:
                raise self.fail(exc)  # noqa: B904 - fail() chose the cause
            if data is None:
                return
            self.conn.receive_data(data)
        # The server closed, or spoke unasked: reply() reads the reply to its
        # end and raises for each (a 421 is a closing, anything else a
        # protocol violation); there is no command it could answer.
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
