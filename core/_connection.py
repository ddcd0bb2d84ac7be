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
#     conn.send_buffers(commands)  a group's bytes as pieces, none copied
#
# The connection never writes on its own: HELO after a refused EHLO, RSET after
# a failure, the answer to an AUTH challenge — all are the caller's decisions
# (the session procedures in _session.py make the usual ones).
#
# It decides nothing itself: it interprets the declarations of _state (what
# each reply code means for each command, which trigger it fires, which
# commands end a pipelined group) and of _offers (what the server's offer
# allows), compiled at import into the lookups below.
#
# Two views of the state. ``state`` is what the server has confirmed. The
# *projection* is the state the session will reach if every command still
# awaiting a reply succeeds; ``send`` checks legality against it, which is what
# makes pipelining (RFC 2920) natural: MAIL, RCPT, RCPT, DATA each fit the
# state the previous one projects. A success does not move the projection; a
# refusal recomputes it from the confirmed state and the commands still
# pending, and when those no longer fit (MAIL refused, RCPTs pipelined behind
# it) the projection is unknown and nothing new may be sent until the pending
# replies have drained.
#
# Replies are matched to the pending commands strictly in order, and only to
# commands sent before they arrived: bytes buffered while nothing is pending
# are refused before a new command is produced (they would answer it), except
# a 421, which may come at any time and is left for next_event().
#
# Failure is absorbing: a RemoteProtocolError from next_event or send, or
# send_failed() from the caller, moves the session to ERROR and nothing more
# can be sent or received, so a late reply can never be paired with a later
# command. A LocalProtocolError from send leaves everything as it was.
#
# Testers can override what the server offered: ``pipelining`` forces grouping
# on or off, ``chunking`` allows BDAT without CHUNKING; every other check stays.
# And the unsafe path (_unsafe) can put the session in *unchecked* mode: bytes
# the state machine never saw went out, so it no longer knows where the
# session is. From then on every command is refused (only the unsafe path's
# QUIT goes on) and replies are read without being matched to commands.
from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from ._commands import Bdat, Command, Ehlo, Helo, Lhlo, Mail, MessageData, Rcpt
from ._data import DataEncoder
from ._errors import LocalProtocolError, RemoteProtocolError, StartTLSInjectionError
from ._events import (
    NEED_DATA,
    PAUSED,
    AuthChallengeReceived,
    ConnectionClosed,
    ContentRequested,
    Event,
    GreetingReceived,
    ReplyReceived,
    Sentinel,
)
from ._extensions import EMPTY_EXTENSIONS, Extensions
from ._offers import ARGUMENT_CHECKS, VERB_CHECKS, SessionFacts
from ._receivebuffer import ReplyLimits, ReplyReader
from ._replies import Reply
from ._state import (
    ALLOWED_COMMANDS,
    GREETING_RULE,
    REPLY_RULES,
    TRANSITIONS,
    Phase,
    ReplyCell,
    ReplyKind,
    State,
    Trigger,
    Verb,
    compile_reply_cells,
)
from ._validation import strict_b64decode

__all__ = ["Connection"]

# Reading an enum member through its class costs several times a global lookup
# (EnumType defines __getattr__), so the per-command and per-reply paths use
# these names.
_ERROR = State.ERROR
_CLOSED = State.CLOSED
_GREETING = State.GREETING
_TLS_HANDSHAKE = State.TLS_HANDSHAKE
_SUCCESS = ReplyKind.SUCCESS
_CLOSING = ReplyKind.CLOSING
_INTERMEDIATE = ReplyKind.INTERMEDIATE
_VIOLATION = ReplyKind.VIOLATION
_DATA_ACCEPTED = Trigger.DATA_ACCEPTED
_SERVICE_CLOSING = Trigger.SERVICE_CLOSING
_MESSAGE_DATA = Verb.MESSAGE_DATA
_END_OF_DATA = Verb.END_OF_DATA
_STARTTLS = Verb.STARTTLS
_MAIL = Verb.MAIL
_RCPT = Verb.RCPT
_AUTH_VERBS = frozenset({Verb.AUTH, Verb.AUTH_RESPONSE})
# The verbs whose success teaches something beyond the state (see _learn).
# Commands whose success starts the session over (XCLIENT's 220): what EHLO
# and AUTH taught is void.
_RESTARTS = frozenset(verb for verb, rule in REPLY_RULES.items() if rule.restarts_session)
_LEARNING = (
    frozenset({Verb.EHLO, Verb.HELO, Verb.LHLO, Verb.AUTH, Verb.AUTH_RESPONSE, _STARTTLS})
    | _RESTARTS
)

# The declarations, compiled: one lookup per reply and per command. Plain
# dicts: a lookup through a read-only mappingproxy costs twice as much.
_TRANSITIONS = dict(TRANSITIONS)
_VERB_CHECKS = dict(VERB_CHECKS)
_ARGUMENT_CHECKS = dict(ARGUMENT_CHECKS)
_CELLS: Mapping[Verb, Mapping[int, ReplyCell]] = {
    verb: compile_reply_cells(rule) for verb, rule in REPLY_RULES.items()
}
_GREETING_CELLS = compile_reply_cells(GREETING_RULE)
_ENDS_GROUP = frozenset(verb for verb, rule in REPLY_RULES.items() if rule.ends_group)
_PHASES = {verb: rule.phase for verb, rule in REPLY_RULES.items()}
_LMTP_FINAL = {verb: rule.lmtp_final for verb, rule in REPLY_RULES.items() if rule.lmtp_final}
# Commands after which no transaction is being written any more.
_ENDS_SENT_MAIL = frozenset(
    {Verb.END_OF_DATA, Verb.BDAT_LAST, Verb.EHLO, Verb.HELO, Verb.LHLO, Verb.RSET}
)


def _going_ahead(verb: Verb) -> Trigger | None:
    """The trigger a command fires when the server goes ahead with it.

    Its success, or for DATA the 354 that lets the content follow.
    """
    rule = REPLY_RULES[verb]
    triggers = {t for t in rule.success.values() if t} or set(rule.intermediate.values())
    assert len(triggers) <= 1, f"{verb}: going ahead must lead to one state"
    return triggers.pop() if triggers else None


# (state, verb) -> the state the server going ahead with verb leads to (None
# where the table has no way there): what the pipelining projection assumes.
_GOING_AHEAD = {verb: _going_ahead(verb) for verb in REPLY_RULES}
_AFTER_SUCCESS: Mapping[tuple[State, Verb], State | None] = {
    (state, verb): state if trigger is None else TRANSITIONS.get((state, trigger))
    for state in State
    for verb, trigger in _GOING_AHEAD.items()
}


def _group_path(state: State, verbs: tuple[Verb, ...]) -> tuple[bool, State | None]:
    """Whether the table allows these verbs as one group from state; where it leads.

    The table's part of _problem() for each command in turn (allowed where
    the commands before it lead, none but the last ending a group); the
    pipelining and what-the-server-offers parts are the connection's.
    """
    projected: State | None = state
    for index, verb in enumerate(verbs):
        if projected is None or verb not in ALLOWED_COMMANDS[projected]:
            return False, None
        if verb in _ENDS_GROUP and index < len(verbs) - 1:
            return False, None
        projected = _AFTER_SUCCESS[projected, verb]
    return True, projected


# (projected state, verbs of a group) -> _group_path(): a bulk sender's groups
# come in a few shapes, each compiled once; a bound keeps odd shapes from piling up.
_GROUP_PATHS: dict[tuple[State, tuple[Verb, ...]], tuple[bool, State | None]] = {}
_GROUP_PATHS_KEPT = 256


class _PendingReply:
    """A command waiting for its reply (or, with LMTP, its replies)."""

    __slots__ = ("cells", "command", "line_limit", "replies_left", "verb")

    def __init__(self, command: Command, verb: Verb, line_limit: int) -> None:
        self.command = command
        # Asked once: Command.verb is a property, and every reply consults it.
        self.verb = verb
        self.cells = _CELLS[verb]
        # The longest reply line allowed: an AUTH challenge may be longer.
        self.line_limit = line_limit
        self.replies_left: int | None = None


class Connection:
    """The client side of one SMTP or LMTP session, as a state machine.

    Args:
        lmtp: speak LMTP (RFC 2033): LHLO instead of EHLO, pipelining always
            on, one reply per accepted recipient after the content.
        tls: the transport is already encrypted (implicit TLS, RFC 8314).
        limits: size limits for the server's replies.
        pipelining: None: pipeline as the server offers; True: group commands
            even when PIPELINING is not offered; False: never group them.
        chunking: allow BDAT even when CHUNKING is not offered.
    """

    def __init__(
        self,
        *,
        lmtp: bool = False,
        tls: bool = False,
        limits: ReplyLimits | None = None,
        pipelining: bool | None = None,
        chunking: bool = False,
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
        self._pipelining_choice = pipelining
        self._verb_checks = _VERB_CHECKS
        if chunking:
            self._verb_checks = {
                verb: check
                for verb, check in _VERB_CHECKS.items()
                if verb not in (Verb.BDAT, Verb.BDAT_LAST)
            }
        self._unchecked = False
        self._facts = SessionFacts(lmtp=lmtp, tls=tls)
        if pipelining is not None:
            self._facts.pipelining = pipelining
        self._esmtp = False
        self._encoder: DataEncoder | None = None
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
        return self._facts.extensions

    @property
    def tls_active(self) -> bool:
        """Whether the connection is encrypted (implicit TLS or after STARTTLS)."""
        return self._facts.tls

    @property
    def esmtp(self) -> bool:
        """Whether the server accepted EHLO (or LHLO) in this session."""
        return self._esmtp

    @property
    def authenticated(self) -> bool:
        """Whether AUTH succeeded in this session."""
        return self._facts.authenticated

    @property
    def pipelining(self) -> bool:
        """Whether several commands may be sent before their replies."""
        return self._facts.pipelining

    @property
    def unchecked(self) -> bool:
        """Whether the unsafe path was used: the state machine no longer knows the session."""
        return self._unchecked

    @property
    def open(self) -> bool:
        """Whether the session can still take commands (not closing, closed or failed)."""
        return self._state not in (State.CLOSING, _CLOSED, _ERROR)

    @property
    def pending(self) -> tuple[Command, ...]:
        """The commands sent and not yet answered, oldest first."""
        return tuple(p.command for p in self._pending)

    @property
    def awaiting_replies(self) -> bool:
        """Whether any command sent still awaits its reply (``pending``, without the tuple)."""
        return bool(self._pending)

    def awaiting_any(self, verbs: frozenset[Verb]) -> bool:
        """Whether a command with one of these verbs still awaits its reply."""
        # From the newest: content ends a group, so it is found at once while
        # a transaction's replies drain (the oldest first). A loop, not any():
        # asked after each reply while content is out, a generator costs more.
        for pending in reversed(self._pending):  # noqa: SIM110
            if pending.verb in verbs:
                return True
        return False

    @property
    def accepted_recipients(self) -> tuple[str, ...]:
        """Recipients the server accepted in the current (or last) mail transaction."""
        return tuple(self._accepted)

    @property
    def waiting_for(self) -> Phase | None:
        """What a reply is awaited for now (for the timeout), or None if nothing is."""
        if self._state is _GREETING:
            return Phase.GREETING
        if not self._pending:
            return None
        return _PHASES[self._pending[0].verb]

    @property
    def unread(self) -> bool:
        """Whether bytes from the server are held that no event has reported yet."""
        return self._reader.buffered > 0

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
            if self._unchecked:
                return LocalProtocolError(
                    "the session went unchecked (the unsafe path was used): only QUIT"
                    " (through the unsafe path) and closing are left"
                )
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
            if not self._facts.pipelining:
                return LocalProtocolError(
                    f"the server does not offer PIPELINING: wait for the reply to {last.value}"
                )
            if last in _ENDS_GROUP:
                return LocalProtocolError(
                    f"{last.value} ends a pipelined group: wait for its reply"
                )
        check = self._verb_checks.get(verb)
        return None if check is None else check(self._facts)

    # ------------------------------------------------------------------
    # Commands in, bytes out
    # ------------------------------------------------------------------

    def send(self, command: Command) -> bytes:
        """Check a command against the session and return its bytes.

        Raises:
            LocalProtocolError: (or a subclass) if the command is not legal now
                or not offered by the server; nothing changes.
            RemoteProtocolError: the server sent a reply nothing asked for,
                which would be taken as this command's answer; the session
                is over (state ERROR) and nothing is produced.
        """
        data = self._admit(command)
        if data is None:
            return self._encode(command)
        return data + command.data if type(command) is Bdat else data

    def send_all(self, commands: Sequence[Command]) -> bytes:
        """Send several commands as one pipelined group: all of them, or none.

        If any command is refused, the connection is left exactly as it was,
        so nothing of the group is half-sent.
        """
        if len(commands) == 1:
            # One command is already all-or-nothing.
            return self.send(commands[0])
        return b"".join(self.send_buffers(commands))

    def send_buffers(self, commands: Sequence[Command]) -> list[bytes]:
        """send_all(), with the bytes left in the pieces they are held in.

        Joined, the pieces are exactly what send_all() returns; apart, a BDAT
        chunk and content that needs no stuffing are the caller's own
        objects, so a transport that writes the pieces in order (sendmsg,
        writelines) sends a large body without copying it.
        """
        if len(commands) == 1:
            # One command is already all-or-nothing.
            command = commands[0]
            data = self._admit(command)
            if data is None:
                return [self._encode(command)]
            return [data, command.data] if type(command) is Bdat and command.data else [data]
        pending = len(self._pending)
        facts = self._facts
        saved = (self._projected, facts.sent_mail, facts.content_octets)
        try:
            admitted = self._admit_group(commands)
        except LocalProtocolError:
            while len(self._pending) > pending:
                self._pending.pop()
            self._projected, facts.sent_mail, facts.content_octets = saved
            raise
        # The content is encoded only now that the whole group is admitted: the
        # encoder remembers where a line starts, and content encoded for a
        # group that is then dropped would shift where the next dot is stuffed
        # (a "." line could end the content early).
        pieces: list[bytes] = []
        for command, data in zip(commands, admitted, strict=True):
            if data is None:
                pieces.append(self._encode(command))
            elif type(command) is Bdat and command.data:
                pieces += (data, command.data)
            else:
                pieces.append(data)
        return pieces

    def _admit(self, command: Command) -> bytes | None:
        """Check command and record it as sent.

        Returns its bytes (of a BDAT, its command line: the chunk follows as
        it is), or None for content (MessageData, EndOfData), which _encode
        turns into bytes.
        """
        if self._state is _ERROR:
            raise LocalProtocolError("the session ended with an error: nothing more can be sent")
        verb = command.verb
        problem = self._problem(verb)
        if problem is not None:
            raise problem
        if not self._pending and self._reader.buffered:
            self._refuse_unsolicited()
        if verb is _MESSAGE_DATA and not self._accepted_for_content:
            raise LocalProtocolError(
                "no recipient was accepted: end the content at once (EndOfData) and RSET"
            )
        check = _ARGUMENT_CHECKS.get(verb)
        if check is not None:
            check(self._facts, command)
        data = self._record_sent(command, verb)
        projected = self._projected
        assert projected is not None, "_problem() refuses commands while it is unknown"
        self._projected = _AFTER_SUCCESS[projected, verb]
        return data

    def _admit_group(self, commands: Sequence[Command]) -> list[bytes | None]:
        """_admit() for each command of a group, with the table consulted once.

        Where the session stands and the verbs in order decide whether the
        table allows the group (legal in turn, nothing but its last command
        ending a group, pipelining on) and where it leads: one lookup,
        compiled on first use. The checks on what the server offers and on
        each command's arguments still run command by command, in order, as
        each reads what the commands before it changed. When the table
        refuses the group, the commands go through _admit() one by one, so
        the error is the one that names the first command it refuses.
        """
        verbs = tuple(command.verb for command in commands)
        pending = self._pending
        projected = self._projected
        if (
            self._state is _ERROR
            or projected is None
            or not self._facts.pipelining
            or (pending and pending[-1].verb in _ENDS_GROUP)
            or (not pending and self._reader.buffered)
            or (_MESSAGE_DATA in verbs and not self._accepted_for_content)
        ):
            return [self._admit(command) for command in commands]
        key = (projected, verbs)
        path = _GROUP_PATHS.get(key)
        if path is None:
            path = _group_path(projected, verbs)
            if len(_GROUP_PATHS) >= _GROUP_PATHS_KEPT:
                _GROUP_PATHS.clear()
            _GROUP_PATHS[key] = path
        fits, after = path
        if not fits:
            return [self._admit(command) for command in commands]
        facts = self._facts
        verb_checks = self._verb_checks
        admitted: list[bytes | None] = []
        for command, verb in zip(commands, verbs, strict=True):
            offered = verb_checks.get(verb)
            if offered is not None:
                problem = offered(facts)
                if problem is not None:
                    raise problem
            check = _ARGUMENT_CHECKS.get(verb)
            if check is not None:
                check(facts, command)
            admitted.append(self._record_sent(command, verb))
        self._projected = after
        return admitted

    def _refuse_unsolicited(self) -> None:
        if b"421".startswith(self._reader.peek(3)):
            raise LocalProtocolError(
                "the server sent a reply (421: closing?) that nothing asked for:"
                " read it with next_event() first"
            )
        self._fail()
        raise RemoteProtocolError(
            "the server sent a reply nothing asked for; it would have been taken"
            " as the answer to the next command"
        )

    def _encode(self, command: Command) -> bytes:
        """The bytes of admitted content: a piece of it, or its end."""
        encoder = self._encoder
        assert encoder is not None
        if isinstance(command, MessageData):
            return encoder.encode(command.data)
        return encoder.end()

    def _record_sent(self, command: Command, verb: Verb) -> bytes | None:
        """Record an admitted command as sent (but for the projection); its bytes.

        Of a BDAT, its command line (the chunk follows as it is); None for
        content (MessageData, EndOfData), which _encode turns into bytes.
        """
        facts = self._facts
        if verb is _MESSAGE_DATA:
            assert isinstance(command, MessageData)
            facts.content_octets += len(command.data)
            return None
        if verb is _END_OF_DATA:
            data = None
        elif type(command) is Bdat:
            data = command.header()
            facts.content_octets += len(command.data)
        else:
            # The checks before this one refused every non-ASCII argument that
            # SMTPUTF8 does not cover, so the encoding cannot fail.
            data = command.checked_bytes(smtputf8=facts.smtputf8)
        limits = self._limits
        line_limit = limits.max_auth_challenge if verb in _AUTH_VERBS else limits.max_line_length
        self._pending.append(_PendingReply(command, verb, line_limit))
        if verb is _MAIL:
            assert isinstance(command, Mail)
            facts.sent_mail = command
            facts.content_octets = 0
        elif verb in _ENDS_SENT_MAIL:
            facts.sent_mail = None
        return data

    def tls_established(self) -> None:
        """Tell the connection that the TLS handshake after STARTTLS succeeded.

        Everything learned before is forgotten (RFC 3207 §4.2): the extensions
        must be asked for again with EHLO.

        Raises:
            LocalProtocolError: no handshake is due, or the server closed the
                connection (next_event() reports it).
            StartTLSInjectionError: bytes arrived before the handshake.
        """
        if self._state is not _TLS_HANDSHAKE:
            raise LocalProtocolError(f"no TLS handshake is due in state {self._state.name}")
        if self._reader.buffered:
            self._fail()
            raise StartTLSInjectionError(
                "data arrived before the TLS handshake: possible STARTTLS response injection"
            )
        if self._eof:
            raise LocalProtocolError("the server closed the connection: no handshake was done")
        self._fire(Trigger.TLS_ESTABLISHED)
        facts = self._facts
        facts.tls = True
        self._set_extensions(EMPTY_EXTENSIONS)
        facts.authenticated = False
        self._esmtp = False
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
        pending = self._pending
        if self._state is _TLS_HANDSHAKE:
            if self._reader.buffered:
                raise StartTLSInjectionError(
                    "data arrived before the TLS handshake: possible STARTTLS response injection"
                )
            return self._closed() if self._eof else PAUSED
        head = pending[0] if pending else None
        line_limit = self._limits.max_line_length if head is None else head.line_limit
        if line_limit != self._line_limit:
            self._reader.line_limit = self._line_limit = line_limit
        reply = self._reader.next_reply()
        if reply is None:
            return self._closed() if self._eof else NEED_DATA
        if self._state is _GREETING:
            return self._greeting(reply)
        if head is None:
            if reply.code == 421:
                return self._closing(None, reply)
            raise RemoteProtocolError(f"the server sent a reply ({reply.code}) nothing asked for")
        cell = head.cells[reply.code]
        kind = cell.kind
        if kind is _CLOSING:
            return self._closing(head.command, reply)
        if kind is _VIOLATION:
            rule = REPLY_RULES[head.verb]
            raise RemoteProtocolError(
                f"{reply.code} is not a valid reply to {head.verb.value} ({rule.source})"
            )
        verb = head.verb
        if self.lmtp and verb in _LMTP_FINAL:
            return self._lmtp_content_reply(head, reply, cell)
        pending.popleft()
        if kind is _SUCCESS:
            # The common case, kept short: a success follows the projection,
            # so the projection stands.
            trigger = cell.trigger
            if trigger is not None:
                new_state = _TRANSITIONS.get((self._state, trigger))
                if new_state is None:
                    self._fire(trigger)  # raises, naming the trigger and the state
                else:
                    self._state = new_state
            command = head.command
            if verb is _RCPT:
                assert isinstance(command, Rcpt)
                self._accepted.append(str(command.mailbox))
            elif verb is _MAIL:
                self._accepted = []
            elif verb in _LEARNING:
                self._learn(command, verb, reply)
            return ReplyReceived(command=command, reply=reply, kind=kind)
        trigger = cell.trigger
        if trigger is not None:
            self._fire(trigger)
        self._projected = self._project()
        if kind is _INTERMEDIATE:
            if trigger is _DATA_ACCEPTED:
                self._encoder = DataEncoder()
                self._accepted_for_content = list(self._accepted)
                self._facts.content_octets = 0
                return ContentRequested(command=head.command, reply=reply)
            return AuthChallengeReceived(reply=reply, challenge=_decode_challenge(reply))
        return ReplyReceived(command=head.command, reply=reply, kind=kind)

    def _closed(self) -> ConnectionClosed:
        unanswered = self.pending
        partial = self._reader.buffered > 0
        self._pending.clear()
        self._fire(Trigger.CONNECTION_CLOSED)
        self._projected = self._state
        return ConnectionClosed(unanswered=unanswered, partial_reply=partial)

    def _closing(self, unanswered: Command | None, reply: Reply) -> ReplyReceived:
        self._pending.clear()
        self._fire(_SERVICE_CLOSING)
        self._projected = self._state
        return ReplyReceived(command=unanswered, reply=reply, kind=_CLOSING)

    def _greeting(self, reply: Reply) -> GreetingReceived:
        cell = _GREETING_CELLS[reply.code]
        if cell.trigger is None:
            raise RemoteProtocolError(
                f"the greeting must be 220 (or 554, or 421), not {reply.code}"
            )
        self._fire(cell.trigger)
        self._projected = self._state
        return GreetingReceived(reply=reply, kind=cell.kind)

    def _learn(self, command: Command, verb: Verb, reply: Reply) -> None:
        """What a success to EHLO, LHLO, HELO, AUTH or STARTTLS teaches beyond the state."""
        facts = self._facts
        if isinstance(command, (Ehlo, Lhlo)):
            self._set_extensions(Extensions.from_reply(reply))
            self._esmtp = True
        elif isinstance(command, Helo):
            self._set_extensions(EMPTY_EXTENSIONS)
            self._esmtp = False
        elif verb in _AUTH_VERBS:
            facts.authenticated = True
        elif verb in _RESTARTS:
            self._set_extensions(EMPTY_EXTENSIONS)
            facts.authenticated = False
            self._esmtp = False
        elif verb is _STARTTLS and self._reader.buffered:
            raise StartTLSInjectionError(
                "data arrived after the 220 to STARTTLS, before the TLS handshake:"
                " possible STARTTLS response injection"
            )

    def _lmtp_content_reply(self, head: _PendingReply, reply: Reply, cell: ReplyCell) -> Event:
        # RFC 2033 §4.2: one reply per recipient accepted, in RCPT order. With
        # none accepted, the one reply is read by the command's own rule.
        accepted = self._accepted
        if head.replies_left is None:
            head.replies_left = max(1, len(accepted))
        index = max(1, len(accepted)) - head.replies_left
        recipient = accepted[index] if accepted else None
        head.replies_left -= 1
        if head.replies_left == 0:
            self._pending.popleft()
            trigger = _LMTP_FINAL[head.verb] if accepted else cell.trigger
            assert trigger is not None, "every reply to the content ends it"
            self._fire(trigger)
            # A refusal may leave the state off the projected path (BDAT LAST
            # refused after every RCPT was): project again from what is known.
            self._projected = self._project()
        return ReplyReceived(command=head.command, reply=reply, kind=cell.kind, recipient=recipient)

    def _set_extensions(self, extensions: Extensions) -> None:
        facts = self._facts
        facts.set_extensions(extensions)
        if self._pipelining_choice is not None:
            facts.pipelining = self._pipelining_choice

    # ------------------------------------------------------------------
    # The unchecked mode of the unsafe path
    # ------------------------------------------------------------------

    def go_unchecked(self) -> None:
        """Enter unchecked mode, for bytes the state machine will not see.

        Raises:
            LocalProtocolError: the session is over, or replies are pending.
        """
        if not self.open:
            raise LocalProtocolError("the session is over: nothing more can be sent")
        if self._pending:
            raise LocalProtocolError("commands await their replies: read them first")
        self._unchecked = True
        self._projected = None

    def next_unchecked_reply(self) -> Reply | ConnectionClosed | Sentinel:
        """The next reply, matched to nothing (unchecked mode), NEED_DATA, or ConnectionClosed.

        Raises:
            RemoteProtocolError: a reply that breaks the syntax or the limits;
                the session is over.
            LocalProtocolError: not in unchecked mode, or the session failed.
        """
        if not self._unchecked or self._state is _ERROR:
            raise LocalProtocolError("replies are read unchecked only in unchecked mode")
        # The limit for any reply (not an AUTH challenge's).
        self._reader.line_limit = self._line_limit = self._limits.max_line_length
        try:
            reply = self._reader.next_reply()
        except RemoteProtocolError:
            self._fail()
            raise
        if reply is not None:
            return reply
        if not self._eof:
            return NEED_DATA
        self._state = _CLOSED
        return ConnectionClosed(partial_reply=self._reader.buffered > 0)

    def judge(self, verb: Verb, reply: Reply) -> ReplyKind:
        """What the table says ``reply`` means as the answer to ``verb`` (no state changes)."""
        return _CELLS[verb][reply.code].kind

    def end_unchecked(self) -> None:
        """The unchecked session was ended (QUIT answered): nothing more can be sent."""
        self._state = _CLOSED

    def unchecked_tls_established(self) -> None:
        """A TLS handshake of the unsafe path succeeded: the stream is encrypted now.

        As after STARTTLS on the safe path, what the server offered and any
        AUTH are forgotten (RFC 3207 §4.2).

        Raises:
            LocalProtocolError: not in unchecked mode, or TLS was active already.
        """
        if not self._unchecked or self._state is _ERROR:
            raise LocalProtocolError("an unchecked TLS upgrade needs an unchecked session")
        facts = self._facts
        if facts.tls:
            raise LocalProtocolError("TLS is already active")
        facts.tls = True
        self._set_extensions(EMPTY_EXTENSIONS)
        facts.authenticated = False
        self._esmtp = False

    def _fire(self, trigger: Trigger) -> None:
        new_state = _TRANSITIONS.get((self._state, trigger))
        if new_state is None:
            from ._render import trigger_label  # only an error needs the label

            raise RemoteProtocolError(
                f"{trigger_label(trigger)} makes no sense in state {self._state.name}"
                f" ({self._state.value})"
            )
        self._state = new_state

    def _project(self) -> State | None:
        state: State | None = self._state
        for pending in self._pending:
            if state is None:
                break
            state = _AFTER_SUCCESS[state, pending.verb]
        return state

    def _fail(self) -> None:
        self._state = State.ERROR
        self._projected = None
        self._pending.clear()


def _decode_challenge(reply: Reply) -> bytes | None:
    if len(reply.lines) != 1:
        return None
    return strict_b64decode(reply.lines[0].strip())
