# smtpbee/_connection
#
# Connection: the client side of one SMTP (or LMTP) session, with no I/O.
#
# Theory of operation
# -------------------
# Bytes in, events out; commands in, bytes out:
#
#     conn.receive_data(data)      store what the socket gave (b"" = EOF)
#     conn.next_event()            one event, NEED_DATA, or PAUSED
#     conn.send(command) -> bytes  what to write for a command
#
# The connection never writes on its own: HELO after a refused EHLO, RSET after
# a failure, the answer to an AUTH challenge — all are the caller's decisions
# (the session procedures in _procedures.py make the usual ones).
#
# Two views of the state. ``state`` is what the server has confirmed. The
# *projection* is the state the session will reach if every command still
# awaiting a reply succeeds; ``send`` checks legality against it, which is what
# makes pipelining (RFC 2920) natural: MAIL, RCPT, RCPT, DATA each fit the
# state the previous one projects. A success reply does not move the
# projection; a refusal recomputes it from the confirmed state and the commands
# still pending, and when those no longer fit (MAIL refused, RCPTs pipelined
# behind it) the projection is unknown and nothing new may be sent until the
# pending replies have drained.
#
# Replies are matched to the pending commands strictly in order. Each reply is
# judged against the command it answers (RFC 5321 §4.3.2, by first digit): a
# 3xx is only meaningful after DATA and during AUTH; a 421 answers anything and
# means the server is closing; any other 4xx/5xx is an ordinary event. A reply
# whose state change the table does not know (a 250 to RCPT after MAIL was
# refused) is a remote protocol error.
#
# Failure is absorbing: a RemoteProtocolError from next_event, or send_failed()
# from the transport, moves the session to ERROR and nothing more can be sent
# or received, so a late reply can never be paired with a later command. A
# LocalProtocolError from send leaves everything as it was.
from __future__ import annotations

import base64
import binascii
from collections import deque
from collections.abc import Mapping, Sequence

from ._commands import (
    Auth,
    AuthResponse,
    Bdat,
    Command,
    Data,
    EndOfData,
    Mail,
    MessageData,
    Quit,
    Rcpt,
    Rset,
    StartTLS,
)
from ._data import DataEncoder
from ._errors import (
    LocalProtocolError,
    RemoteProtocolError,
    StartTLSInjectionError,
    UnsupportedExtensionError,
)
from ._events import (
    NEED_DATA,
    PAUSED,
    AuthChallengeReceived,
    ConnectionClosed,
    Event,
    GreetingReceived,
    Phase,
    ReplyReceived,
    Sentinel,
)
from ._extensions import EMPTY_EXTENSIONS, Extensions
from ._offers import check_auth, check_content, check_mail, check_rcpt, offer_problem
from ._receivebuffer import ReplyLimits, ReplyReader
from ._replies import Reply
from ._state import ALLOWED_COMMANDS, SUCCESS_TRIGGERS, TRANSITIONS, State, Trigger, Verb
from ._validation import check_command_line

__all__ = ["Connection"]

_V = Verb

# Reading an enum member through its class costs several times a global lookup
# (EnumType defines __getattr__, which puts every attribute lookup on the class
# on a slow path), so the per-command and per-reply paths use these names.
_ERROR = State.ERROR
_CLOSED = State.CLOSED
_GREETING = State.GREETING
_TLS_HANDSHAKE = State.TLS_HANDSHAKE
_EHLO = _V.EHLO
_HELO = _V.HELO
_LHLO = _V.LHLO
_MAIL = _V.MAIL
_DATA = _V.DATA
_END_OF_DATA = _V.END_OF_DATA
_STARTTLS = _V.STARTTLS

# RFC 2920 §3.1: these must end a pipelined group, since what may follow
# depends on their outcome; so must anything not named as pipelinable.
_PIPELINABLE = frozenset(
    {_V.MAIL, _V.RCPT, _V.RSET, _V.BDAT, _V.BDAT_LAST, _V.END_OF_DATA, _V.MESSAGE_DATA}
)

_PHASES = {
    _V.MAIL: Phase.MAIL,
    _V.RCPT: Phase.RCPT,
    _V.DATA: Phase.DATA_INITIATION,
    _V.BDAT: Phase.DATA_BLOCK,
    _V.BDAT_LAST: Phase.DATA_TERMINATION,
    _V.END_OF_DATA: Phase.DATA_TERMINATION,
}

_HELLO_VERBS = frozenset({_V.EHLO, _V.HELO, _V.LHLO})
_AUTH_VERBS = frozenset({_V.AUTH, _V.AUTH_RESPONSE})
_CONTENT_END_VERBS = frozenset({_V.END_OF_DATA, _V.BDAT_LAST})
# The only 3xx replies that mean anything: 354 to DATA, 334 during AUTH.
_INTERMEDIATE_CODES = {_V.DATA: 354, _V.AUTH: 334, _V.AUTH_RESPONSE: 334}
# Commands after which no transaction is being written any more.
_ENDS_SENT_MAIL = _CONTENT_END_VERBS | _HELLO_VERBS | {_V.RSET}
# Exact command classes with no argument to check: _admit skips its chain of
# isinstance() tests for them (a subclass still goes through it).
_NOTHING_TO_CHECK = frozenset({Data, EndOfData, Rset, Quit, StartTLS})
# The verbs whose legality depends on what the server offers or on the
# session's mode (see _offer_problem); every other verb needs only the state.
_OFFER_DEPENDENT = frozenset(
    {_V.EHLO, _V.HELO, _V.LHLO, _V.STARTTLS, _V.AUTH, _V.BDAT, _V.BDAT_LAST, _V.DATA}
)

# (state, verb) -> the state a success reply to that verb leads to, derived
# from the two tables in _state.py so that they stay the one source of truth:
# one lookup per command on the hot paths instead of two.
_AFTER_SUCCESS: Mapping[tuple[State, Verb], State] = {
    (state, verb): TRANSITIONS[state, trigger]
    for state in State
    for verb, trigger in SUCCESS_TRIGGERS.items()
    if (state, trigger) in TRANSITIONS
}


class _PendingReply:
    """A command waiting for its reply (or, with LMTP, its replies)."""

    __slots__ = ("command", "replies_left", "verb")

    def __init__(self, command: Command, verb: Verb) -> None:
        self.command = command
        # Asked once: Command.verb is a property, and every reply consults it.
        self.verb = verb
        self.replies_left: int | None = None


class Connection:
    """The client side of one SMTP or LMTP session, as a state machine.

    Args:
        lmtp: speak LMTP (RFC 2033): LHLO instead of EHLO, pipelining always
            on, one reply per accepted recipient after the content.
        tls: the transport is already encrypted (implicit TLS, RFC 8314).
        limits: size limits for the server's replies.
    """

    def __init__(
        self, *, lmtp: bool = False, tls: bool = False, limits: ReplyLimits | None = None
    ) -> None:
        self.lmtp = lmtp
        self._limits = limits or ReplyLimits()
        self._reader = ReplyReader(self._limits)
        # The reader's line limit, mirrored: it changes only around AUTH.
        self._line_limit = self._limits.max_line_length
        self._state = State.GREETING
        self._projected: State | None = State.GREETING
        self._pending: deque[_PendingReply] = deque()
        self._eof = False
        self._tls = tls
        self._set_extensions(EMPTY_EXTENSIONS)
        self._esmtp = False
        self._authenticated = False
        # Send side: the transaction being written (may run ahead of replies).
        self._sent_mail: Mail | None = None
        self._encoder: DataEncoder | None = None
        self._content_octets = 0
        # Reply side: recipients the server accepted in the current transaction.
        self._accepted: list[str] = []
        self._accepted_for_content: list[str] = []

    # ------------------------------------------------------------------
    # What the caller can look at
    # ------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The state the server's replies have confirmed."""
        return self._state

    @property
    def extensions(self) -> Extensions:
        """What the server advertised in its last EHLO/LHLO reply (empty after HELO)."""
        return self._extensions

    @property
    def tls_active(self) -> bool:
        """Whether the connection is encrypted (implicit TLS or after STARTTLS)."""
        return self._tls

    @property
    def esmtp(self) -> bool:
        """Whether the server accepted EHLO (or LHLO) in this session."""
        return self._esmtp

    @property
    def authenticated(self) -> bool:
        """Whether AUTH succeeded in this session."""
        return self._authenticated

    @property
    def pipelining(self) -> bool:
        """Whether several commands may be sent before their replies."""
        return self.lmtp or self._offers_pipelining

    @property
    def pending(self) -> tuple[Command, ...]:
        """The commands sent and not yet answered, oldest first."""
        return tuple(p.command for p in self._pending)

    @property
    def accepted_recipients(self) -> tuple[str, ...]:
        """Recipients the server accepted in the current mail transaction."""
        return tuple(self._accepted)

    @property
    def waiting_for(self) -> Phase | None:
        """What a reply is awaited for now (for the timeout), or None if nothing is."""
        if self._state is _GREETING:
            return Phase.GREETING
        if not self._pending:
            return None
        return _PHASES.get(self._pending[0].verb, Phase.COMMAND)

    def allowed_commands(self) -> frozenset[Verb]:
        """The verbs that can be sent right now."""
        return frozenset(verb for verb in Verb if self.why_not(verb) is None)

    def why_not(self, verb: Verb) -> str | None:
        """Why a command with this verb cannot be sent now, or None if it can.

        This looks at the state, pipelining and what the server offers; the
        command's own arguments can still be refused by send().
        """
        problem = self._problem(verb)
        return None if problem is None else str(problem)

    def _problem(self, verb: Verb) -> LocalProtocolError | None:
        projected = self._projected
        if projected is None:
            return LocalProtocolError(
                "earlier pipelined commands failed: wait for all their replies first"
            )
        allowed = ALLOWED_COMMANDS[projected]
        if verb not in allowed:
            names = ", ".join(v.value for v in Verb if v in allowed) or "nothing"
            return LocalProtocolError(
                f"{verb.value} is not allowed in state {projected.name}"
                f" ({projected.value}); allowed: {names}"
            )
        if self._pending:
            last = self._pending[-1].verb
            if not (self.lmtp or self._offers_pipelining):
                return LocalProtocolError(
                    f"the server does not offer PIPELINING: wait for the reply to {last.value}"
                )
            if last not in _PIPELINABLE:
                return LocalProtocolError(
                    f"{last.value} ends a pipelined group: wait for its reply"
                )
        if verb not in _OFFER_DEPENDENT:
            return None
        return offer_problem(
            verb,
            self._extensions,
            lmtp=self.lmtp,
            tls=self._tls,
            authenticated=self._authenticated,
            sent_mail=self._sent_mail,
        )

    # ------------------------------------------------------------------
    # Commands in, bytes out
    # ------------------------------------------------------------------

    def send(self, command: Command) -> bytes:
        """Check a command against the session and return its bytes.

        Raises:
            LocalProtocolError: (or a subclass) if the command is not legal now
                or not offered by the server; nothing changes.
        """
        data = self._admit(command)
        return self._encode(command) if data is None else data

    def send_all(self, commands: Sequence[Command]) -> bytes:
        """Send several commands as one pipelined group: all of them, or none.

        If any command is refused, the connection is left exactly as it was,
        so nothing of the group is half-sent.
        """
        if len(commands) == 1:
            # One command is already all-or-nothing.
            return self.send(commands[0])
        pending = len(self._pending)
        saved = (self._projected, self._sent_mail, self._content_octets)
        try:
            admitted = [self._admit(command) for command in commands]
        except LocalProtocolError:
            while len(self._pending) > pending:
                self._pending.pop()
            self._projected, self._sent_mail, self._content_octets = saved
            raise
        # The content is encoded only now that the whole group is admitted: the
        # encoder remembers where a line starts, and content encoded for a
        # group that is then dropped would shift where the next dot is stuffed
        # (a "." line could end the content early).
        return b"".join(
            [
                self._encode(command) if data is None else data
                for command, data in zip(commands, admitted, strict=True)
            ]
        )

    def _admit(self, command: Command) -> bytes | None:
        """Check command and record it as sent.

        Returns its bytes, or None for content (MessageData, EndOfData), which
        _encode turns into bytes.
        """
        if self._state is _ERROR:
            raise LocalProtocolError("the session ended with an error: nothing more can be sent")
        verb = command.verb
        problem = self._problem(verb)
        if problem is not None:
            raise problem
        if type(command) in _NOTHING_TO_CHECK:
            pass
        elif isinstance(command, MessageData):
            self._admit_content(command.data)
            return None
        elif isinstance(command, Mail):
            check_mail(command, self._extensions, tls=self._tls, size_limit=self._size_limit)
        elif isinstance(command, Rcpt):
            check_rcpt(command, self._extensions, sent_mail=self._sent_mail)
        elif isinstance(command, Auth):
            check_auth(command, self._extensions)
        elif isinstance(command, Bdat):
            self._check_chunk(command.data)
        elif command.needs_smtputf8 and not self._offers_smtputf8:
            raise UnsupportedExtensionError(
                f"{verb.value} with a non-ASCII argument needs SMTPUTF8,"
                " which the server does not offer"
            )
        if verb is _END_OF_DATA:
            self._record_sent(command, verb)
            return None
        data = self._serialize(command)
        self._record_sent(command, verb)
        return data

    def _encode(self, command: Command) -> bytes:
        """The bytes of admitted content: a piece of it, or its end."""
        encoder = self._encoder
        assert encoder is not None
        if isinstance(command, MessageData):
            return encoder.encode(command.data)
        return encoder.end()

    def _serialize(self, command: Command) -> bytes:
        # The checks before this one refused every non-ASCII argument that
        # SMTPUTF8 does not cover, so the encoding cannot fail.
        data = command.to_bytes(smtputf8=self._offers_smtputf8)
        if not isinstance(command, (Bdat, AuthResponse)):
            check_command_line(data)
        return data

    def _record_sent(self, command: Command, verb: Verb) -> None:
        self._pending.append(_PendingReply(command, verb))
        if isinstance(command, Mail):
            self._sent_mail = command
            self._content_octets = 0
        elif isinstance(command, Bdat):
            self._content_octets += len(command.data)
        if verb in _ENDS_SENT_MAIL:
            self._sent_mail = None
        if verb in SUCCESS_TRIGGERS and self._projected is not None:
            self._projected = _AFTER_SUCCESS.get((self._projected, verb))

    def _check_chunk(self, data: bytes) -> None:
        check_content(
            data,
            sent_mail=self._sent_mail,
            octets_so_far=self._content_octets,
            size_limit=self._size_limit,
        )

    def _admit_content(self, data: bytes) -> None:
        if not self._accepted_for_content:
            raise LocalProtocolError(
                "no recipient was accepted: end the content at once (EndOfData) and RSET"
            )
        self._check_chunk(data)
        self._content_octets += len(data)

    def tls_established(self) -> None:
        """Tell the connection that the TLS handshake after STARTTLS succeeded.

        Everything learned before is forgotten (RFC 3207 §4.2): the extensions
        must be asked for again with EHLO.
        """
        if self._state is not State.TLS_HANDSHAKE:
            raise LocalProtocolError(f"no TLS handshake is due in state {self._state.name}")
        if self._reader.buffered:
            self._fail()
            raise StartTLSInjectionError(
                "data arrived before the TLS handshake: possible STARTTLS response injection"
            )
        self._fire(Trigger.TLS_ESTABLISHED)
        self._tls = True
        self._set_extensions(EMPTY_EXTENSIONS)
        self._esmtp = False
        self._authenticated = False
        self._projected = self._state

    def send_failed(self) -> None:
        """Tell the connection that bytes from send() could not be written.

        The session is then over: the server's view is unknown.
        """
        self._fail()

    # ------------------------------------------------------------------
    # Bytes in, events out
    # ------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Store bytes from the server; ``b""`` means the server closed the connection.

        Raises:
            LocalProtocolError: if called with data after the end of the stream.
        """
        if self._eof:
            if data:
                raise LocalProtocolError("received data after the end of the stream")
            return
        if data:
            self._reader.feed(data)
        else:
            self._eof = True

    def next_event(self) -> Event | Sentinel:
        """The next thing the server said, NEED_DATA, or PAUSED.

        Raises:
            RemoteProtocolError: the server broke the protocol; the session is
                over (state ERROR).
            LocalProtocolError: called after the session ended with an error.
        """
        if self._state is _ERROR:
            raise LocalProtocolError("the session ended with an error")
        if self._state is _CLOSED:
            return ConnectionClosed()
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._fail()
            raise

    def _next_event(self) -> Event | Sentinel:
        if self._state is _TLS_HANDSHAKE:
            if self._reader.buffered:
                raise StartTLSInjectionError(
                    "data arrived before the TLS handshake: possible STARTTLS response injection"
                )
            return PAUSED
        head = self._pending[0] if self._pending else None
        line_limit = (
            self._limits.max_auth_challenge
            if head is not None and head.verb in _AUTH_VERBS
            else self._limits.max_line_length
        )
        if line_limit != self._line_limit:
            self._reader.line_limit = self._line_limit = line_limit
        reply = self._reader.next_reply()
        if reply is None:
            if self._eof:
                return self._closed()
            return NEED_DATA
        if self._state is _GREETING:
            return self._greeting(reply)
        if reply.code == 421:
            unanswered = head.command if head is not None else None
            self._pending.clear()
            self._fire(Trigger.SERVICE_CLOSING)
            self._projected = self._state
            return ReplyReceived(command=unanswered, reply=reply)
        if head is None:
            raise RemoteProtocolError(f"reply {reply.code} arrived with no command pending")
        return self._answer(head, reply)

    def _closed(self) -> ConnectionClosed:
        unanswered = self.pending
        partial = self._reader.buffered > 0
        self._pending.clear()
        self._fire(Trigger.CONNECTION_CLOSED)
        self._projected = self._state
        return ConnectionClosed(unanswered=unanswered, partial_reply=partial)

    def _greeting(self, reply: Reply) -> GreetingReceived:
        if reply.code == 220:
            self._fire(Trigger.GREETING_ACCEPTED)
        elif reply.code == 421 or reply.is_transient:
            self._fire(Trigger.SERVICE_CLOSING)
        elif reply.is_permanent:
            self._fire(Trigger.GREETING_REFUSED)
        else:
            raise RemoteProtocolError(f"the greeting must be 220 or 554, not {reply.code}")
        self._projected = self._state
        return GreetingReceived(reply=reply)

    def _answer(self, head: _PendingReply, reply: Reply) -> Event:
        command = head.command
        verb = head.verb
        code = reply.code
        if 300 <= code < 400 and code != _INTERMEDIATE_CODES.get(verb):
            raise RemoteProtocolError(f"{code} is not a valid reply to {verb.value}")
        if verb in _CONTENT_END_VERBS and self.lmtp:
            return self._lmtp_content_reply(head, reply)
        self._pending.popleft()
        if 200 <= code < 300:
            # The common case, kept short: a success follows the projection,
            # so the projection stands.
            self._succeeded(command, verb, reply)
            return ReplyReceived(command=command, reply=reply)
        trigger = self._trigger_for(verb, reply)
        if trigger is not None:
            self._fire(trigger)
        if verb is _DATA and code < 400:
            self._encoder = DataEncoder()
            self._accepted_for_content = list(self._accepted)
            self._content_octets = 0
        self._projected = self._project()
        if code < 400 and verb is not _DATA:
            return AuthChallengeReceived(reply=reply, challenge=_decode_challenge(reply))
        return ReplyReceived(command=command, reply=reply)

    def _succeeded(self, command: Command, verb: Verb, reply: Reply) -> None:
        """Apply a 2xx reply to command: the state it leads to, what it teaches."""
        if verb is _DATA:
            raise RemoteProtocolError(f"{reply.code} to DATA: the server must say 354 first")
        if verb in SUCCESS_TRIGGERS:
            new_state = _AFTER_SUCCESS.get((self._state, verb))
            if new_state is None:
                self._fire(SUCCESS_TRIGGERS[verb])  # raises, naming the trigger
            else:
                self._state = new_state
        if verb in (_EHLO, _LHLO):
            self._set_extensions(Extensions.from_reply(reply))
            self._esmtp = True
        elif verb is _HELO:
            self._set_extensions(EMPTY_EXTENSIONS)
            self._esmtp = False
        elif verb is _MAIL:
            self._accepted = []
        elif isinstance(command, Rcpt):
            self._accepted.append(str(command.mailbox))
        elif verb in _AUTH_VERBS:
            self._authenticated = True
        elif verb is _STARTTLS and self._reader.buffered:
            raise StartTLSInjectionError(
                "data arrived after the 220 to STARTTLS, before the TLS handshake:"
                " possible STARTTLS response injection"
            )

    def _trigger_for(self, verb: Verb, reply: Reply) -> Trigger | None:
        """The trigger of a reply that is not a success (those go to _succeeded)."""
        if reply.is_intermediate:
            return Trigger.DATA_ACCEPTED if verb is _V.DATA else Trigger.AUTH_CHALLENGED
        if verb in _AUTH_VERBS:
            return Trigger.AUTH_ENDED
        if verb is _V.END_OF_DATA:
            return Trigger.CONTENT_ANSWERED
        if verb in (_V.BDAT, _V.BDAT_LAST):
            return Trigger.BDAT_REFUSED
        return None

    def _lmtp_content_reply(self, head: _PendingReply, reply: Reply) -> Event:
        # RFC 2033 §4.2: one reply per recipient accepted, in RCPT order.
        if head.replies_left is None:
            head.replies_left = max(1, len(self._accepted))
        index = max(1, len(self._accepted)) - head.replies_left
        recipient = self._accepted[index] if self._accepted else None
        head.replies_left -= 1
        if head.replies_left == 0:
            self._pending.popleft()
            refused_outright = not self._accepted and not reply.is_success
            if head.command.verb is _V.BDAT_LAST and refused_outright:
                self._fire(Trigger.BDAT_REFUSED)
            else:
                self._fire(Trigger.CONTENT_ANSWERED)
            # A refusal may leave the state off the projected path (BDAT LAST
            # refused after every RCPT was): project again from what is known.
            self._projected = self._project()
        return ReplyReceived(command=head.command, reply=reply, recipient=recipient)

    def _fire(self, trigger: Trigger) -> None:
        new_state = TRANSITIONS.get((self._state, trigger))
        if new_state is None:
            raise RemoteProtocolError(
                f"{trigger.value} makes no sense in state {self._state.name} ({self._state.value})"
            )
        self._state = new_state

    def _project(self) -> State | None:
        state: State | None = self._state
        for pending in self._pending:
            trigger = SUCCESS_TRIGGERS.get(pending.command.verb)
            if trigger is not None and state is not None:
                state = TRANSITIONS.get((state, trigger))
        return state

    def _set_extensions(self, extensions: Extensions) -> None:
        # What every command consults is read from the Extensions once, here:
        # its properties look keywords up (SIZE parses a number) on each call.
        self._extensions = extensions
        self._offers_pipelining = extensions.pipelining
        self._offers_smtputf8 = extensions.smtputf8
        self._size_limit = extensions.size_limit

    def _fail(self) -> None:
        self._state = State.ERROR
        self._projected = None
        self._pending.clear()


def _decode_challenge(reply: Reply) -> bytes | None:
    if len(reply.lines) != 1:
        return None
    try:
        return base64.b64decode(reply.lines[0].strip(), validate=True)
    except binascii.Error:
        return None
