# tests/test_stateful
#
# A hypothesis state machine drives a Connection against a scripted server of
# smtpbee.testing used without I/O (its ServerSession: bytes in, bytes out):
# random sequences of every kind of command,
# alone or pipelined, with the server sometimes refusing, and sometimes sloppy
# (answering with a code that is not the command's success, like aiosmtpd's
# 250 to HELP). After each exchange the connection must agree with what the
# replies imply (expected_state), every reply must be bound to the command
# that caused it, and nothing may be left pending once all replies were read.
# A reply that is no valid answer must end the session (RemoteProtocolError,
# state ERROR). A command the connection says is not allowed must be refused
# with LocalProtocolError and change nothing.
"""Stateful hypothesis test: Connection against a model SMTP server."""

from __future__ import annotations

from dataclasses import replace

import pytest
from budget import examples
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from smtpbee._commands import (
    Bdat,
    Command,
    Data,
    Ehlo,
    EndOfData,
    Helo,
    Help,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    Rset,
    Vrfy,
)
from smtpbee._connection import Connection
from smtpbee._errors import LocalProtocolError, RemoteProtocolError
from smtpbee._events import (
    NEED_DATA,
    ConnectionClosed,
    ContentRequested,
    GreetingReceived,
    ReplyReceived,
)
from smtpbee._replies import Reply
from smtpbee._state import State, Verb
from smtpbee.testing import DEFAULT, Inject, Response, ScriptedServer, ServerSession
from smtpbee.testing import Command as ServerCommand

__all__: list[str] = []

_EXTENSIONS = (
    "PIPELINING",
    "SIZE 10000000",
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
    "DSN",
    "STARTTLS",
    "AUTH PLAIN LOGIN",
)
_VERBS = ("EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "MESSAGE", "RSET", "NOOP", "VRFY",
          "HELP", "QUIT")  # fmt: skip

_RECIPIENTS = ("ann@example.test", "bob@example.test", "refused@example.test")
_BODIES = (b"Subject: hi\r\n\r\nhello\r\n", b".dot\n..two\r\n.", b"")

# The success codes RFC 5321 §4.3.2 (and RFC 3030) list for each command,
# written out here independently of smtpbee._state. DATA has none: its 354
# only asks for the content.
SUCCESS: dict[Verb, frozenset[int]] = {
    Verb.EHLO: frozenset({250}),
    Verb.HELO: frozenset({250}),
    Verb.MAIL: frozenset({250}),
    Verb.RCPT: frozenset({250, 251}),
    Verb.DATA: frozenset(),
    Verb.END_OF_DATA: frozenset({250}),
    Verb.BDAT: frozenset({250}),
    Verb.BDAT_LAST: frozenset({250}),
    Verb.RSET: frozenset({250}),
    Verb.NOOP: frozenset({250}),
    Verb.VRFY: frozenset({250, 251, 252}),
    Verb.HELP: frozenset({211, 214}),
    Verb.QUIT: frozenset({221}),
}
# What a sloppy server may answer instead of a success.
_SLOPPY_CODES = (200, 211, 214, 220, 221, 235, 250, 251, 252, 299, 334, 354, 421)
_SLOPPY_TARGETS: tuple[Command, ...] = (
    Ehlo("client.test"),
    Mail(sender="sender@example.test"),
    Rcpt(recipient="ann@example.test"),
    Data(),
    Rset(),
    Noop(),
    Vrfy("postmaster"),
    Help(),
    Quit(),
)


def is_closing(verb: Verb, code: int) -> bool:
    """421 to anything, and 221 to anything but QUIT: the server is closing."""
    return code == 421 or (code == 221 and verb is not Verb.QUIT)


def expected_state(state: State, verb: Verb, code: int) -> State:
    """What a reply to a command means for the session, written independently of the table."""
    if is_closing(verb, code):
        return State.CLOSING
    ok = code in SUCCESS[verb]
    if verb is Verb.DATA and code == 354:
        return State.DATA
    if not ok and code < 400:
        return State.ERROR  # a 2xx or 3xx that is no answer to this command
    if verb in (Verb.EHLO, Verb.HELO):
        return State.READY if ok else state
    if verb is Verb.RSET:
        return (State.CONNECTED if state is State.CONNECTED else State.READY) if ok else state
    if verb is Verb.QUIT:
        return State.CLOSING if ok else state
    if verb is Verb.MAIL:
        return State.MAIL if ok else state
    if verb is Verb.RCPT:
        return State.RCPT if ok else state
    if verb in (Verb.END_OF_DATA, Verb.BDAT_LAST):
        return State.READY if ok or verb is Verb.END_OF_DATA else State.TRANSACTION_FAILED
    if verb is Verb.BDAT:
        return State.BDAT if ok else State.TRANSACTION_FAILED
    return state  # NOOP, VRFY, HELP: nothing moves


def reply_codes(replies: bytes) -> list[int]:
    """The code of each reply in the model server's answer (its last line ends it)."""
    return [int(line[:3]) for line in replies.split(b"\r\n") if line[3:4] == b" "]


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # The server's behaviour follows these flags, which the rules set.
        self.refuse_ehlo = False
        self.refuse_content = False
        self.recode: int | None = None
        handlers = dict.fromkeys(_VERBS, self.answer)
        self.server = ScriptedServer(handlers, hostname="model.test", extensions=_EXTENSIONS)
        self.session = self.server.session()
        self.conn = Connection()
        self.expected = State.GREETING
        greeting = b"".join(o.data for o in self.session.start() if isinstance(o, Inject))
        self.conn.receive_data(greeting)
        event = self.conn.next_event()
        assert isinstance(event, GreetingReceived)
        self.expected = State.CONNECTED
        self.exchanges = 0

    def answer(self, command: ServerCommand, session: ServerSession) -> Response:
        """A well-behaved server, refusing on demand, sometimes sloppy (``recode``)."""
        response: Response = DEFAULT
        if command.verb == "EHLO" and self.refuse_ehlo:
            response = "502 5.5.2 EHLO not understood"
        elif command.verb == "RCPT" and command.address == "refused@example.test":
            response = "550 5.1.1 <refused@example.test>: Recipient address rejected"
        elif command.verb == "MESSAGE" and self.refuse_content:
            response = "554 5.6.0 Message refused"
        if response is DEFAULT:
            response = session.default(command)
        code, self.recode = self.recode, None
        # A sloppy server: this positive (2xx/3xx) reply goes out with another code
        # (e.g. aiosmtpd's 250 to HELP). Used once, then cleared.
        items: list[Response] = list(response) if isinstance(response, list) else [response]
        if code is not None and isinstance(items[0], Reply) and items[0].code < 400:
            items[0] = replace(items[0], code=code)
        return items

    # -- the one way commands go out ------------------------------------

    def exchange(self, commands: list[Command]) -> None:
        """Send a group; if refused, check nothing changed; else read and check every reply."""
        conn = self.conn
        before = (conn.state, conn.pending, conn.allowed_commands())
        single_allowed = len(commands) > 1 or commands[0].verb in before[2]
        try:
            wire = conn.send_all(commands)
        except LocalProtocolError:
            assert (conn.state, conn.pending, conn.allowed_commands()) == before
            assert len(commands) > 1 or not single_allowed
            return
        assert single_allowed, f"{commands[0].verb} was sent though not allowed"
        # MessageData has no reply of its own: EndOfData carries the content's.
        answered = [c for c in commands if not isinstance(c, MessageData)]
        assert conn.pending == tuple(answered)
        replies = self.session.feed(wire)
        codes = reply_codes(replies)
        assert len(codes) == len(answered)
        conn.receive_data(replies)
        for command, code in zip(answered, codes, strict=True):
            verb = command.verb
            self.expected = expected_state(self.expected, verb, code)
            if self.expected is State.ERROR:
                with pytest.raises(RemoteProtocolError, match=f"{code}"):
                    conn.next_event()
                assert conn.state is State.ERROR and conn.pending == ()
                assert not conn.open
                return
            event = conn.next_event()
            if verb is Verb.DATA and code == 354:
                assert isinstance(event, ContentRequested), event
                assert not event.accepted
            else:
                assert isinstance(event, ReplyReceived), event
                assert event.accepted == (code in SUCCESS[verb])
                assert event.closing == is_closing(verb, code)
            assert event.command == command
            assert event.reply.code == code
            assert conn.state is self.expected, (command, event.reply, conn.state)
        assert conn.next_event() is NEED_DATA
        assert conn.pending == ()
        self.exchanges += 1

    # -- rules ------------------------------------------------------------

    @rule(refuse=st.booleans())
    def ehlo(self, refuse: bool) -> None:
        self.refuse_ehlo = refuse
        self.exchange([Ehlo("client.test")])

    @rule()
    def helo(self) -> None:
        self.exchange([Helo("client.test")])

    @rule()
    def mail(self) -> None:
        self.exchange([Mail(sender="sender@example.test")])

    @rule(recipient=st.sampled_from(_RECIPIENTS))
    def rcpt(self, recipient: str) -> None:
        self.exchange([Rcpt(recipient=recipient)])

    @rule(body=st.sampled_from(_BODIES), refuse=st.booleans())
    def data(self, body: bytes, refuse: bool) -> None:
        self.refuse_content = refuse
        self.exchange([Data()])
        if self.conn.state is State.DATA:
            before = len(self.session.messages)
            self.exchange([MessageData(body), EndOfData()])
            assert len(self.session.messages) == before + (not refuse)

    @rule(body=st.sampled_from(_BODIES), last=st.booleans())
    def bdat(self, body: bytes, last: bool) -> None:
        self.exchange([Bdat(body, last=last)])

    @rule()
    def rset(self) -> None:
        self.exchange([Rset()])

    @rule()
    def noop(self) -> None:
        self.exchange([Noop()])

    @rule()
    def vrfy(self) -> None:
        self.exchange([Vrfy("postmaster")])

    @rule()
    def help(self) -> None:
        self.exchange([Help()])

    @rule(
        code=st.sampled_from(_SLOPPY_CODES),
        command=st.sampled_from(_SLOPPY_TARGETS),
    )
    def sloppy_reply(self, code: int, command: Command) -> None:
        # The server answers this command (if it goes ahead with it) with code.
        self.recode = code
        self.exchange([command])
        self.recode = None

    @rule(roll=st.integers(0, 3))
    def quit(self, roll: int) -> None:
        # Rarer than the other rules: QUIT ends the interesting part of a run.
        if roll == 0:
            self.exchange([Quit()])

    @rule(recipients=st.lists(st.sampled_from(_RECIPIENTS), min_size=1, max_size=3))
    def pipelined_transaction(self, recipients: list[str]) -> None:
        rcpts: list[Command] = [Rcpt(recipient=r) for r in recipients]
        self.exchange([Mail(sender="sender@example.test"), *rcpts, Data()])
        if self.conn.state is State.DATA:
            self.exchange([MessageData(b"pipelined\r\n"), EndOfData()])

    @rule()
    def server_closes(self) -> None:
        if self.conn.state is not State.CLOSING:
            return
        self.conn.receive_data(b"")
        assert isinstance(self.conn.next_event(), ConnectionClosed)
        self.expected = State.CLOSED
        assert self.conn.state is self.expected

    # -- invariants ---------------------------------------------------------

    @invariant()
    def state_matches_the_model(self) -> None:
        assert self.conn.state is self.expected

    @invariant()
    def nothing_pending_between_exchanges(self) -> None:
        assert self.conn.pending == ()

    @invariant()
    def only_allowed_verbs_are_offered(self) -> None:
        allowed = self.conn.allowed_commands()
        if self.conn.state in (State.CLOSING, State.CLOSED, State.ERROR):
            assert allowed == frozenset()
            assert not self.conn.open
        if Verb.DATA in allowed:
            assert self.conn.accepted_recipients

    @invariant()
    def delivered_mail_went_to_accepted_recipients(self) -> None:
        for delivered in self.session.messages:
            assert delivered.recipients
            assert "refused@example.test" not in delivered.recipients


SessionMachine.TestCase.settings = settings(
    max_examples=examples(150),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSession = SessionMachine.TestCase
