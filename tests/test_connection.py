"""Connection: the state machine driven by bytes and commands, one rule at a time."""

# mypy narrows conn.state after one assert and then calls the next one unreachable.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

from collections.abc import Callable

import pytest
from smtpbee._commands import (
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
from smtpbee._connection import Connection
from smtpbee._errors import (
    InvalidInputError,
    LocalProtocolError,
    MessageTooLargeError,
    RemoteProtocolError,
    StartTLSInjectionError,
    UnsupportedExtensionError,
)
from smtpbee._events import (
    NEED_DATA,
    PAUSED,
    AuthChallengeReceived,
    ConnectionClosed,
    Event,
    GreetingReceived,
    Phase,
    ReplyReceived,
)
from smtpbee._receivebuffer import ReplyLimits
from smtpbee._state import State, Verb

FULL = (
    "PIPELINING",
    "SIZE 1000",
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
    "BINARYMIME",
    "DSN",
    "STARTTLS",
    "AUTH PLAIN LOGIN",
    "REQUIRETLS",
    "MT-PRIORITY",
)


def ehlo_reply(extensions: tuple[str, ...], code: int = 250) -> bytes:
    lines = ["mx.test greets you", *extensions]
    return "".join(
        f"{code}{'-' if i < len(lines) - 1 else ' '}{text}\r\n" for i, text in enumerate(lines)
    ).encode()


def drain(conn: Connection, data: bytes = b"") -> list[Event]:
    """Feed data and collect every event until the connection needs more."""
    if data:
        conn.receive_data(data)
    events: list[Event] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is PAUSED:
            return events
        assert isinstance(event, Event)
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


def greeted(**kwargs: object) -> Connection:
    conn = Connection(**kwargs)  # type: ignore[arg-type]
    (event,) = drain(conn, b"220 mx.test ESMTP\r\n")
    assert isinstance(event, GreetingReceived)
    return conn


def ready(extensions: tuple[str, ...] = FULL, **kwargs: object) -> Connection:
    conn = greeted(**kwargs)
    hello = Lhlo("client.test") if kwargs.get("lmtp") else Ehlo("client.test")
    conn.send(hello)
    (event,) = drain(conn, ehlo_reply(extensions))
    assert isinstance(event, ReplyReceived)
    assert conn.state is State.READY
    return conn


def reply(conn: Connection, data: bytes) -> ReplyReceived:
    (event,) = drain(conn, data)
    assert isinstance(event, ReplyReceived)
    return event


def in_data(extensions: tuple[str, ...] = FULL, body: str | None = None) -> Connection:
    conn = ready(extensions)
    conn.send_all([Mail(sender="a@x.test", body=body), Rcpt(recipient="b@x.test"), Data()])  # type: ignore[arg-type]
    drain(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert conn.state is State.DATA
    return conn


# ----------------------------------------------------------------------
# Greeting
# ----------------------------------------------------------------------


def test_greeting_220() -> None:
    conn = Connection()
    assert conn.state is State.GREETING
    assert conn.waiting_for is Phase.GREETING
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"220-mx.test ESMTP\r\n220 welcome\r\n")
    event = conn.next_event()
    assert isinstance(event, GreetingReceived)
    assert event.reply.lines == (b"mx.test ESMTP", b"welcome")
    assert conn.state is State.CONNECTED
    assert conn.waiting_for is None
    assert conn.allowed_commands() == {
        Verb.EHLO,
        Verb.HELO,
        Verb.RSET,
        Verb.NOOP,
        Verb.HELP,
        Verb.QUIT,
    }


def test_greeting_554_leaves_only_quit() -> None:
    conn = Connection()
    (event,) = drain(conn, b"554 no service for you\r\n")
    assert isinstance(event, GreetingReceived)
    assert event.reply.code == 554
    assert conn.state is State.REFUSED
    assert conn.allowed_commands() == {Verb.QUIT}
    with pytest.raises(LocalProtocolError, match="not allowed in state REFUSED"):
        conn.send(Ehlo("client.test"))
    conn.send(Quit())
    assert reply(conn, b"221 bye\r\n").reply.code == 221
    assert conn.state is State.CLOSING


@pytest.mark.parametrize("greeting", [b"421 busy\r\n", b"450 later\r\n"])
def test_greeting_4xx_means_closing(greeting: bytes) -> None:
    conn = Connection()
    (event,) = drain(conn, greeting)
    assert isinstance(event, GreetingReceived)
    assert conn.state is State.CLOSING
    assert conn.allowed_commands() == frozenset()
    conn.receive_data(b"")
    assert drain(conn) == [ConnectionClosed()]
    assert conn.state is State.CLOSED


@pytest.mark.parametrize("greeting", [b"250 hello\r\n", b"354 what\r\n", b"221 bye\r\n"])
def test_other_greetings_are_protocol_errors(greeting: bytes) -> None:
    conn = Connection()
    conn.receive_data(greeting)
    with pytest.raises(RemoteProtocolError, match="greeting"):
        conn.next_event()
    assert conn.state is State.ERROR


def test_nothing_can_be_sent_before_the_greeting() -> None:
    conn = Connection()
    assert conn.allowed_commands() == frozenset()
    why = conn.why_not(Verb.EHLO)
    assert why is not None and "GREETING" in why
    with pytest.raises(LocalProtocolError):
        conn.send(Ehlo("client.test"))


def test_closed_before_greeting() -> None:
    conn = Connection()
    conn.receive_data(b"")
    (event,) = drain(conn)
    assert event == ConnectionClosed(unanswered=(), partial_reply=False)
    assert conn.state is State.CLOSED
    # Asking again keeps saying so.
    assert conn.next_event() == ConnectionClosed()


# ----------------------------------------------------------------------
# EHLO / HELO and extensions
# ----------------------------------------------------------------------


def test_ehlo_parses_extensions() -> None:
    conn = ready()
    assert conn.esmtp
    ext = conn.extensions
    assert ext.pipelining and ext.chunking and ext.starttls
    assert ext.size_limit == 1000
    assert ext.auth_mechanisms == {"PLAIN", "LOGIN"}
    assert conn.pipelining


def test_ehlo_refused_then_helo() -> None:
    conn = greeted()
    conn.send(Ehlo("client.test"))
    event = reply(conn, b"502 5.5.2 what?\r\n")
    assert event.command == Ehlo("client.test")
    assert event.reply.enhanced is not None
    assert conn.state is State.CONNECTED
    assert not conn.esmtp
    conn.send(Helo("client.test"))
    reply(conn, b"250 mx.test\r\n")
    assert conn.state is State.READY
    assert not conn.esmtp
    assert not conn.pipelining
    assert len(conn.extensions.keywords) == 0


def test_helo_after_ehlo_forgets_extensions() -> None:
    conn = ready()
    conn.send(Helo("client.test"))
    reply(conn, b"250 mx.test\r\n")
    assert not conn.extensions.pipelining
    assert not conn.esmtp
    with pytest.raises(UnsupportedExtensionError):
        conn.send(StartTLS())


def test_rset_before_ehlo() -> None:
    conn = greeted()
    conn.send(Rset())
    reply(conn, b"250 ok\r\n")
    assert conn.state is State.CONNECTED


# ----------------------------------------------------------------------
# ERROR is absorbing; replies that make no sense
# ----------------------------------------------------------------------


def test_error_is_absorbing() -> None:
    conn = ready()
    conn.receive_data(b"250 nobody asked\r\n")
    with pytest.raises(RemoteProtocolError, match="nothing asked for"):
        conn.next_event()
    assert conn.state is State.ERROR
    assert conn.allowed_commands() == frozenset()
    assert conn.why_not(Verb.NOOP) is not None
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    with pytest.raises(LocalProtocolError, match="ended with an error"):
        conn.send(Noop())
    with pytest.raises(LocalProtocolError):
        conn.send_all([Noop()])


def test_malformed_reply_moves_to_error() -> None:
    conn = ready()
    conn.send(Noop())
    conn.receive_data(b"2x0 hmm\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is State.ERROR
    assert conn.pending == ()


@pytest.mark.parametrize(
    ("commands", "replies"),
    [
        ([Noop()], b"354 go ahead\r\n"),
        ([Mail(sender="a@x.test")], b"334 eA==\r\n"),
        ([Ehlo("c.test")], b"354 huh\r\n"),
        ([Vrfy("x")], b"334 eA==\r\n"),
        (
            [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Data()],
            b"250 ok\r\n250 ok\r\n334 eA==\r\n",
        ),
        ([Auth("LOGIN")], b"354 go\r\n"),
        (
            [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Data()],
            b"250 ok\r\n250 ok\r\n250 ok\r\n",
        ),
        ([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test")], b"550 no\r\n250 ok\r\n"),
        (
            [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Data()],
            b"550 no\r\n550 no\r\n354 go\r\n",
        ),
        (
            [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Bdat(b"x", last=True)],
            b"250 ok\r\n550 no\r\n250 ok\r\n",
        ),
        (
            [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Bdat(b"x")],
            b"550 no\r\n503 no\r\n250 ok\r\n",
        ),
    ],
    ids=[
        "354-to-NOOP",
        "334-to-MAIL",
        "354-to-EHLO",
        "334-to-VRFY",
        "334-to-DATA",
        "354-to-AUTH",
        "250-to-DATA",
        "250-to-RCPT-after-MAIL-refused",
        "354-after-MAIL-refused",
        "250-to-BDAT-LAST-without-recipients",
        "250-to-BDAT-after-MAIL-refused",
    ],
)
def test_replies_that_make_no_sense(commands: list[Command], replies: bytes) -> None:
    conn = ready()
    conn.send_all(commands)
    with pytest.raises(RemoteProtocolError):
        drain(conn, replies)
    assert conn.state is State.ERROR


def test_421_to_any_command() -> None:
    for command in (Noop(), Mail(sender="a@x.test"), Ehlo("c.test"), Vrfy("x")):
        conn = ready()
        conn.send(command)
        event = reply(conn, b"421 4.3.2 shutting down\r\n")
        assert event.command == command
        assert conn.state is State.CLOSING
        assert conn.pending == ()
        assert conn.allowed_commands() == frozenset()


def test_421_drops_every_pipelined_command() -> None:
    conn = ready()
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Data()])
    (event,) = drain(conn, b"421 bye\r\n")
    assert isinstance(event, ReplyReceived)
    assert isinstance(event.command, Mail)
    assert conn.pending == ()
    conn.receive_data(b"")
    assert drain(conn) == [ConnectionClosed()]


def test_unsolicited_421() -> None:
    conn = ready()
    event = reply(conn, b"421 idle too long\r\n")
    assert event.command is None
    assert conn.state is State.CLOSING


def test_421_while_closing_is_an_error() -> None:
    conn = ready()
    conn.send(Quit())
    reply(conn, b"221 bye\r\n")
    conn.receive_data(b"421 again\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


# ----------------------------------------------------------------------
# Replies arriving in pieces and in bunches
# ----------------------------------------------------------------------


def test_several_replies_in_one_read_come_out_in_order() -> None:
    conn = ready()
    commands: list[Command] = [
        Mail(sender="a@x.test"),
        Rcpt(recipient="b@x.test"),
        Rcpt(recipient="c@x.test"),
        Data(),
    ]
    conn.send_all(commands)
    events = drain(conn, b"250 a\r\n250 b\r\n550 c\r\n354 d\r\n")
    assert [e.command for e in events] == commands  # type: ignore[attr-defined]
    assert [e.reply.code for e in events] == [250, 250, 550, 354]  # type: ignore[attr-defined]
    assert conn.accepted_recipients == ("b@x.test",)


def test_byte_by_byte_gives_the_same_events() -> None:
    greeting = b"220-mx.test\r\n220 hi\r\n"
    transaction = b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no\r\n354 go\r\n"
    group: list[Command] = [
        Mail(sender="a@x.test"),
        Rcpt(recipient="b@x.test"),
        Rcpt(recipient="c@x.test"),
        Data(),
    ]

    def run(split: bool) -> list[Event]:
        conn = Connection()
        out: list[Event] = []
        steps: list[tuple[bytes, Callable[[], bytes]]] = [
            (greeting, lambda: conn.send(Ehlo("c.test"))),
            (ehlo_reply(FULL), lambda: conn.send_all(group)),
            (transaction, lambda: b""),
        ]
        for data, then in steps:
            pieces = [data[i : i + 1] for i in range(len(data))] if split else [data]
            for piece in pieces:
                out += drain(conn, piece)
            then()
        return out

    whole = run(split=False)
    assert len(whole) == 6
    assert [type(e) for e in whole[:2]] == [GreetingReceived, ReplyReceived]
    assert whole == run(split=True)


def test_waiting_for_phases() -> None:
    conn = ready()
    assert conn.waiting_for is None
    conn.send(Mail(sender="a@x.test"))
    assert conn.waiting_for is Phase.MAIL
    reply(conn, b"250 ok\r\n")
    conn.send(Rcpt(recipient="b@x.test"))
    assert conn.waiting_for is Phase.RCPT
    reply(conn, b"250 ok\r\n")
    conn.send(Data())
    assert conn.waiting_for is Phase.DATA_INITIATION
    drain(conn, b"354 go\r\n")
    conn.send(MessageData(b"hi\r\n"))
    assert conn.waiting_for is None
    conn.send(EndOfData())
    assert conn.waiting_for is Phase.DATA_TERMINATION
    reply(conn, b"250 queued\r\n")
    conn.send(Noop())
    assert conn.waiting_for is Phase.COMMAND
    reply(conn, b"250 ok\r\n")
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Bdat(b"x")])
    drain(conn, b"250 ok\r\n250 ok\r\n")
    assert conn.waiting_for is Phase.DATA_BLOCK
    reply(conn, b"250 ok\r\n")
    conn.send(Bdat(b"y", last=True))
    assert conn.waiting_for is Phase.DATA_TERMINATION


# ----------------------------------------------------------------------
# Pipelining
# ----------------------------------------------------------------------


def test_without_pipelining_one_command_at_a_time() -> None:
    conn = ready(("SIZE 1000",))
    assert not conn.pipelining
    conn.send(Mail(sender="a@x.test"))
    why = conn.why_not(Verb.RSET)
    assert why is not None and "PIPELINING" in why
    with pytest.raises(LocalProtocolError, match="PIPELINING"):
        conn.send(Rset())
    with pytest.raises(LocalProtocolError):
        conn.send_all([Rcpt(recipient="b@x.test")])
    reply(conn, b"250 ok\r\n")
    conn.send(Rcpt(recipient="b@x.test"))


@pytest.mark.parametrize(
    "first",
    [
        Data(),
        Ehlo("c.test"),
        Noop(),
        Vrfy("x"),
        Expn("x"),
        Help(),
        StartTLS(),
        Auth("PLAIN", b"\0u\0p"),
        Helo("c.test"),
    ],
    ids=lambda c: c.verb.name,
)
def test_group_enders(first: Command) -> None:
    conn = ready()
    if isinstance(first, Data):
        conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test")])
    conn.send(first)
    for verb in (Verb.RSET, Verb.MAIL, Verb.QUIT):
        why = conn.why_not(verb)
        assert why is not None
    with pytest.raises(LocalProtocolError):
        conn.send(Rset())


def test_quit_ends_a_group() -> None:
    conn = ready()
    conn.send(Quit())
    assert conn.allowed_commands() == frozenset()


def test_mail_rcpt_rcpt_data_in_one_group() -> None:
    conn = ready()
    wire = conn.send_all(
        [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Rcpt(recipient="c@x.test"), Data()]
    )
    assert wire == b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n"
    assert [c.verb for c in conn.pending] == [Verb.MAIL, Verb.RCPT, Verb.RCPT, Verb.DATA]
    assert conn.state is State.READY


def test_data_before_any_rcpt_is_refused_even_pipelined() -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError, match="DATA is not allowed in state MAIL"):
        conn.send_all([Mail(sender="a@x.test"), Data()])
    assert conn.pending == ()


def test_content_cannot_go_before_the_354() -> None:
    conn = ready()
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Data()])
    with pytest.raises(LocalProtocolError, match="DATA ends a pipelined group"):
        conn.send(MessageData(b"early"))


def test_end_of_data_next_mail_rcpt_data_in_one_group() -> None:
    conn = in_data()
    conn.send(MessageData(b"first\r\n"))
    wire = conn.send_all([EndOfData(), Mail(sender="a@x.test"), Rcpt(recipient="c@x.test"), Data()])
    assert wire == b".\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n"
    events = drain(conn, b"250 queued\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert [e.reply.code for e in events] == [250, 250, 250, 354]  # type: ignore[attr-defined]
    assert conn.state is State.DATA
    assert conn.accepted_recipients == ("c@x.test",)
    # The second content is encoded afresh: its first line is stuffed.
    assert conn.send(MessageData(b".x\r\n")) == b"..x\r\n"
    assert conn.send(EndOfData()) == b".\r\n"


def test_mail_refused_with_rcpts_behind_it() -> None:
    conn = ready()
    conn.send_all(
        [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Rcpt(recipient="c@x.test"), Data()]
    )
    (event,) = drain(conn, b"550 5.7.1 go away\r\n")
    assert isinstance(event, ReplyReceived)
    assert conn.state is State.READY
    why = conn.why_not(Verb.RSET)
    assert why is not None and "wait for all their replies" in why
    with pytest.raises(LocalProtocolError):
        conn.send(Rset())
    drain(conn, b"503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n")
    assert conn.why_not(Verb.RSET) is not None
    drain(conn, b"554 5.5.1 no valid recipients\r\n")
    assert conn.pending == ()
    assert conn.why_not(Verb.RSET) is None
    conn.send(Rset())
    reply(conn, b"250 ok\r\n")
    assert conn.state is State.READY


def test_rcpt_refused_then_later_ones_still_fit() -> None:
    conn = ready()
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Rcpt(recipient="c@x.test")])
    drain(conn, b"250 ok\r\n550 no\r\n")
    # c may still be accepted: more RCPTs can be pipelined meanwhile.
    conn.send(Rcpt(recipient="d@x.test"))
    drain(conn, b"250 ok\r\n250 ok\r\n")
    assert conn.accepted_recipients == ("c@x.test", "d@x.test")
    assert conn.state is State.RCPT


def test_data_accepted_with_no_recipient() -> None:
    conn = ready()
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Data()])
    drain(conn, b"250 ok\r\n550 no\r\n354 go\r\n")
    assert conn.state is State.DATA
    with pytest.raises(LocalProtocolError, match="no recipient was accepted"):
        conn.send(MessageData(b"content\r\n"))
    assert conn.send(EndOfData()) == b".\r\n"
    reply(conn, b"554 no valid recipients\r\n")
    assert conn.state is State.READY


def test_send_all_is_all_or_nothing() -> None:
    conn = ready()
    before = (conn.pending, conn.state, conn.allowed_commands())
    with pytest.raises(InvalidInputError):
        conn.send_all(
            [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test", extra={"X-L": "y" * 600})]
        )
    with pytest.raises(LocalProtocolError):
        conn.send_all(
            [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Mail(sender="c@x.test")]
        )
    assert (conn.pending, conn.state, conn.allowed_commands()) == before
    # And nothing of the dropped group lingers: a fresh MAIL goes alone.
    assert conn.send(Mail(sender="z@x.test", size=10)) == b"MAIL FROM:<z@x.test> SIZE=10\r\n"
    assert conn.pending == (Mail(sender="z@x.test", size=10),)


def test_send_buffers_hands_over_the_chunk_itself_and_joins_to_send_all() -> None:
    chunk = b"x" * 900  # under the SIZE the test server offers
    group = [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Bdat(chunk, last=True)]
    pieces = ready().send_buffers(group)
    assert pieces[-1] is chunk  # the caller's bytes, not a copy
    assert pieces[-2] == b"BDAT 900 LAST\r\n"
    assert b"".join(pieces) == ready().send_all(group)


def test_send_buffers_of_one_command() -> None:
    conn = ready()
    chunk = b"y" * 10
    assert conn.send_buffers([Mail(sender="a@x.test")]) == [b"MAIL FROM:<a@x.test>\r\n"]
    conn.send_buffers([Rcpt(recipient="b@x.test")])
    drain(conn, b"250 ok\r\n250 ok\r\n")
    pieces = conn.send_buffers([Bdat(chunk)])
    assert pieces == [b"BDAT 10\r\n", chunk] and pieces[1] is chunk
    # An empty last chunk is its command line alone.
    assert conn.send_buffers([Bdat(b"", last=True)]) == [b"BDAT 0 LAST\r\n"]


def test_send_buffers_of_content_and_a_refused_group() -> None:
    conn = in_data()
    content = b"line one\r\nline two\r\n"
    pieces = conn.send_buffers([MessageData(content), EndOfData()])
    assert pieces == [content, b".\r\n"] and pieces[0] is content
    conn = ready()
    before = conn.pending
    with pytest.raises(LocalProtocolError):
        conn.send_buffers([Mail(sender="a@x.test"), Bdat(b"z"), Mail(sender="c@x.test")])
    assert conn.pending == before


def test_send_of_a_bdat_is_its_line_and_its_chunk() -> None:
    conn = ready()
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test")])
    assert conn.send(Bdat(b"abc", last=True)) == b"BDAT 3 LAST\r\nabc"


def test_send_all_rollback_keeps_the_dot_stuffing_right() -> None:
    conn = in_data()
    # The group is dropped: the server never saw "abc", so the next "." still
    # opens a line and must be stuffed.
    with pytest.raises(InvalidInputError):
        conn.send_all([MessageData(b"abc"), MessageData(b"\xff")])
    assert conn.send(MessageData(b".\r\n")) == b"..\r\n"
    with pytest.raises(LocalProtocolError):
        conn.send_all([EndOfData(), Mail(sender="a@x.test", size=10**9)])
    assert conn.send(EndOfData()) == b".\r\n"


# ----------------------------------------------------------------------
# Content
# ----------------------------------------------------------------------


def test_data_content_is_stuffed_and_normalised() -> None:
    conn = in_data()
    assert conn.send(MessageData(b".a\nb\r")) == b"..a\r\nb\r\n"
    assert conn.send(MessageData(b"\n.\n")) == b"..\r\n"
    assert conn.send(EndOfData()) == b".\r\n"
    event = reply(conn, b"250 queued\r\n")
    assert event.command == EndOfData()
    assert conn.state is State.READY


def test_eight_bit_content_needs_8bitmime() -> None:
    conn = in_data()
    with pytest.raises(InvalidInputError, match="8-bit"):
        conn.send(MessageData(b"caf\xc3\xa9\r\n"))
    assert conn.state is State.DATA
    assert conn.send(MessageData(b"ok\r\n")) == b"ok\r\n"
    conn = in_data(body="8BITMIME")
    assert conn.send(MessageData(b"caf\xc3\xa9\r\n")) == b"caf\xc3\xa9\r\n"


def test_8bitmime_must_be_offered() -> None:
    conn = ready(("PIPELINING",))
    with pytest.raises(UnsupportedExtensionError, match="8BITMIME"):
        conn.send(Mail(sender="a@x.test", body="8BITMIME"))
    assert conn.pending == ()


@pytest.mark.parametrize(
    ("mail", "missing"),
    [
        (Mail(sender="a@x.test", size=1), "SIZE"),
        (Mail(sender="a@x.test", body="BINARYMIME"), "BINARYMIME"),
        (Mail(sender="a@x.test", smtputf8=True), "SMTPUTF8"),
        (Mail(sender="a@x.test", ret="FULL"), "DSN"),
        (Mail(sender="a@x.test", envid="x"), "DSN"),
        (Mail(sender="a@x.test", requiretls=True), "REQUIRETLS"),
        (Mail(sender="a@x.test", mt_priority=3), "MT-PRIORITY"),
        (Mail(sender="a@x.test", auth="<>"), "AUTH"),
    ],
)
def test_mail_parameters_need_their_extension(mail: Mail, missing: str) -> None:
    conn = ready(("PIPELINING",))
    with pytest.raises(UnsupportedExtensionError, match=missing):
        conn.send(mail)


def test_binarymime_needs_chunking_and_bdat() -> None:
    conn = ready(tuple(e for e in FULL if e != "CHUNKING"))
    with pytest.raises(UnsupportedExtensionError, match="CHUNKING"):
        conn.send(Mail(sender="a@x.test", body="BINARYMIME"))
    conn = ready()
    conn.send_all([Mail(sender="a@x.test", body="BINARYMIME"), Rcpt(recipient="b@x.test")])
    why = conn.why_not(Verb.DATA)
    assert why is not None and "BINARYMIME" in why
    with pytest.raises(LocalProtocolError, match="BINARYMIME"):
        conn.send(Data())
    assert conn.send(Bdat(b"\x00\xff\r", last=True)) == b"BDAT 3 LAST\r\n\x00\xff\r"


def test_bdat_needs_chunking() -> None:
    conn = ready(("PIPELINING", "8BITMIME"))
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test")])
    with pytest.raises(UnsupportedExtensionError, match="CHUNKING"):
        conn.send(Bdat(b"x", last=True))


def test_bdat_chunks_and_limits() -> None:
    conn = ready()
    wire = conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Bdat(b"x" * 600)])
    assert wire.endswith(b"BDAT 600\r\n" + b"x" * 600)
    with pytest.raises(MessageTooLargeError, match="1000"):
        conn.send(Bdat(b"y" * 401))
    with pytest.raises(InvalidInputError, match="8-bit"):
        conn.send(Bdat(b"\xff"))
    conn.send(Bdat(b"y" * 400, last=True))
    drain(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n")
    assert conn.state is State.BDAT
    reply(conn, b"250 done\r\n")
    assert conn.state is State.READY


def test_bdat_with_8bitmime_or_smtputf8_may_carry_8bit() -> None:
    for mail in (Mail(sender="a@x.test", body="8BITMIME"), Mail(sender="a@x.test", smtputf8=True)):
        conn = ready()
        conn.send_all([mail, Rcpt(recipient="b@x.test")])
        assert conn.send(Bdat(b"\xc3\xa9", last=True)).endswith(b"\xc3\xa9")


def test_bdat_refused_leaves_only_rset_noop_quit() -> None:
    conn = ready()
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Bdat(b"x")])
    drain(conn, b"250 ok\r\n250 ok\r\n552 too much\r\n")
    assert conn.state is State.TRANSACTION_FAILED
    assert conn.allowed_commands() == {Verb.RSET, Verb.NOOP, Verb.QUIT}
    with pytest.raises(LocalProtocolError):
        conn.send(Bdat(b"y", last=True))
    conn.send(Rset())
    reply(conn, b"250 ok\r\n")
    assert conn.state is State.READY


def test_bdat_pipelined_behind_refused_mail_is_refused_quietly() -> None:
    conn = ready()
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Bdat(b"x", last=True)])
    drain(conn, b"550 no\r\n503 need MAIL\r\n503 need MAIL\r\n")
    assert conn.state is State.READY
    assert conn.allowed_commands() >= {Verb.MAIL, Verb.RSET}


def test_bdat_last_refused_after_every_rcpt_was() -> None:
    conn = ready()
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Bdat(b"x", last=True)])
    drain(conn, b"250 ok\r\n550 no\r\n554 no valid recipients\r\n")
    assert conn.state is State.TRANSACTION_FAILED
    assert conn.why_not(Verb.RSET) is None


def test_size_limit_on_mail_and_content() -> None:
    conn = ready()
    with pytest.raises(MessageTooLargeError):
        conn.send(Mail(sender="a@x.test", size=1001))
    assert conn.pending == ()
    conn.send(Mail(sender="a@x.test", size=1000))
    conn = in_data()
    conn.send(MessageData(b"x" * 1000))
    with pytest.raises(MessageTooLargeError):
        conn.send(MessageData(b"y"))


def test_size_zero_means_no_limit() -> None:
    conn = ready(("PIPELINING", "SIZE 0"))
    conn.send(Mail(sender="a@x.test", size=10**12))


# ----------------------------------------------------------------------
# SMTPUTF8
# ----------------------------------------------------------------------


def test_non_ascii_sender_without_smtputf8_offered() -> None:
    conn = ready(("PIPELINING", "8BITMIME"))
    with pytest.raises(UnsupportedExtensionError, match="does not offer"):
        conn.send(Mail(sender="jörg@x.test"))


def test_non_ascii_sender_needs_the_parameter() -> None:
    conn = ready()
    with pytest.raises(UnsupportedExtensionError, match="smtputf8=True"):
        conn.send(Mail(sender="jörg@x.test"))
    wire = conn.send(Mail(sender="jörg@x.test", smtputf8=True))
    assert wire == "MAIL FROM:<jörg@x.test> SMTPUTF8\r\n".encode()


def test_non_ascii_recipient_needs_a_smtputf8_transaction() -> None:
    conn = ready()
    conn.send(Mail(sender="a@x.test"))
    with pytest.raises(UnsupportedExtensionError, match="SMTPUTF8"):
        conn.send(Rcpt(recipient="ü@x.test"))
    conn = ready()
    conn.send(Mail(sender="a@x.test", smtputf8=True))
    assert conn.send(Rcpt(recipient="ü@x.test")) == "RCPT TO:<ü@x.test>\r\n".encode()


def test_non_ascii_vrfy_needs_smtputf8() -> None:
    conn = ready(("PIPELINING",))
    with pytest.raises(UnsupportedExtensionError):
        conn.send(Vrfy("jörg"))
    conn = ready()
    assert conn.send(Vrfy("jörg")) == "VRFY jörg\r\n".encode()


def test_dsn_parameters_on_rcpt_need_dsn() -> None:
    conn = ready(("PIPELINING",))
    conn.send(Mail(sender="a@x.test"))
    with pytest.raises(UnsupportedExtensionError, match="DSN"):
        conn.send(Rcpt(recipient="b@x.test", notify="NEVER"))
    with pytest.raises(UnsupportedExtensionError, match="DSN"):
        conn.send(Rcpt(recipient="b@x.test", orcpt="b@x.test"))


def test_command_lines_over_512_octets() -> None:
    conn = ready()
    with pytest.raises(InvalidInputError, match="512"):
        conn.send(Noop("x" * 506))
    assert conn.send(Noop("x" * 505)) == b"NOOP " + b"x" * 505 + b"\r\n"


# ----------------------------------------------------------------------
# STARTTLS
# ----------------------------------------------------------------------


def test_starttls_round_trip_forgets_extensions() -> None:
    conn = ready()
    conn.send(StartTLS())
    assert reply(conn, b"220 go ahead\r\n").reply.code == 220
    assert conn.state is State.TLS_HANDSHAKE
    assert conn.next_event() is PAUSED
    assert conn.allowed_commands() == frozenset()
    conn.tls_established()
    assert conn.tls_active
    assert conn.state is State.CONNECTED
    assert len(conn.extensions.keywords) == 0
    assert not conn.esmtp
    with pytest.raises(LocalProtocolError):
        conn.send(Mail(sender="a@x.test"))
    conn.send(Ehlo("c.test"))
    drain(conn, ehlo_reply(("PIPELINING", "STARTTLS")))
    why = conn.why_not(Verb.STARTTLS)
    assert why is not None and "already active" in why


def test_starttls_injection_in_the_same_read() -> None:
    conn = ready()
    conn.send(StartTLS())
    conn.receive_data(b"220 go ahead\r\n250-evil\r\n")
    with pytest.raises(StartTLSInjectionError):
        conn.next_event()
    assert conn.state is State.ERROR


def test_starttls_injection_before_the_handshake() -> None:
    conn = ready()
    conn.send(StartTLS())
    reply(conn, b"220 go ahead\r\n")
    conn.receive_data(b"2")
    with pytest.raises(StartTLSInjectionError):
        conn.tls_established()
    assert conn.state is State.ERROR
    conn = ready()
    conn.send(StartTLS())
    reply(conn, b"220 go ahead\r\n")
    conn.receive_data(b"250 ok\r\n")
    with pytest.raises(StartTLSInjectionError):
        conn.next_event()
    assert conn.state is State.ERROR


def test_starttls_refused() -> None:
    conn = ready()
    conn.send(StartTLS())
    reply(conn, b"454 4.7.0 TLS not available\r\n")
    assert conn.state is State.READY
    assert not conn.tls_active
    conn.send(Mail(sender="a@x.test"))


def test_tls_established_out_of_place() -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError, match="no TLS handshake"):
        conn.tls_established()
    assert conn.state is State.READY


def test_starttls_not_offered_or_implicit() -> None:
    conn = ready(("PIPELINING",))
    with pytest.raises(UnsupportedExtensionError, match="STARTTLS"):
        conn.send(StartTLS())
    conn = ready(tls=True)
    assert conn.tls_active
    with pytest.raises(LocalProtocolError, match="already active"):
        conn.send(StartTLS())


def test_requiretls_only_over_tls() -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError, match="over TLS"):
        conn.send(Mail(sender="a@x.test", requiretls=True))
    conn = ready(tls=True)
    assert conn.send(Mail(sender="a@x.test", requiretls=True)).endswith(b" REQUIRETLS\r\n")


# ----------------------------------------------------------------------
# AUTH
# ----------------------------------------------------------------------


def test_auth_exchange() -> None:
    conn = ready()
    conn.send(Auth("LOGIN"))
    (event,) = drain(conn, b"334 VXNlcm5hbWU6\r\n")
    assert isinstance(event, AuthChallengeReceived)
    assert event.challenge == b"Username:"
    assert "Username" not in repr(event)
    assert conn.state is State.AUTH
    assert conn.allowed_commands() == {Verb.AUTH_RESPONSE, Verb.AUTH_CANCEL}
    conn.send(AuthResponse(b"user"))
    drain(conn, b"334 UGFzc3dvcmQ6\r\n")
    conn.send(AuthResponse(b"pass"))
    event = reply(conn, b"235 2.7.0 ok\r\n")
    assert event.command == AuthResponse(b"pass")
    assert conn.authenticated
    assert conn.state is State.READY
    why = conn.why_not(Verb.AUTH)
    assert why is not None and "already authenticated" in why


def test_auth_refused_and_cancelled() -> None:
    conn = ready()
    conn.send(Auth("PLAIN", b"\0u\0p"))
    reply(conn, b"535 5.7.8 bad\r\n")
    assert not conn.authenticated
    assert conn.state is State.READY
    conn.send(Auth("LOGIN"))
    drain(conn, b"334 VXNlcm5hbWU6\r\n")
    conn.send(AuthCancel())
    reply(conn, b"501 cancelled\r\n")
    assert conn.state is State.READY
    assert not conn.authenticated


@pytest.mark.parametrize("challenge", [b"334 not*base64\r\n", b"334-eA==\r\n334 eA==\r\n"])
def test_auth_challenge_that_cannot_be_decoded(challenge: bytes) -> None:
    conn = ready()
    conn.send(Auth("LOGIN"))
    (event,) = drain(conn, challenge)
    assert isinstance(event, AuthChallengeReceived)
    assert event.challenge is None


def test_auth_empty_challenge() -> None:
    conn = ready()
    conn.send(Auth("PLAIN"))
    (event,) = drain(conn, b"334 \r\n")
    assert isinstance(event, AuthChallengeReceived)
    assert event.challenge == b""


def test_auth_mechanism_must_be_offered() -> None:
    conn = ready()
    with pytest.raises(UnsupportedExtensionError, match=r"offers LOGIN, PLAIN"):
        conn.send(Auth("CRAM-MD5"))
    conn = ready(("PIPELINING",))
    with pytest.raises(UnsupportedExtensionError, match="does not offer AUTH"):
        conn.send(Auth("PLAIN"))


def test_auth_challenge_line_limit() -> None:
    big = b"334 " + b"QUFB" * 2560 + b"\r\n"  # about 10 KiB
    conn = ready()
    conn.send(Auth("LOGIN"))
    (event,) = drain(conn, big)
    assert isinstance(event, AuthChallengeReceived)
    assert event.challenge == b"AAA" * 2560
    conn = ready()
    conn.send(Noop())
    conn.receive_data(b"250 " + b"x" * 10240 + b"\r\n")
    with pytest.raises(RemoteProtocolError, match="longer than"):
        conn.next_event()


def test_reply_limits_are_configurable() -> None:
    conn = ready(limits=ReplyLimits(max_line_length=64))
    conn.send(Noop())
    conn.receive_data(b"250 " + b"x" * 100 + b"\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


# ----------------------------------------------------------------------
# End of stream, send_failed
# ----------------------------------------------------------------------


def test_eof_with_nothing_pending() -> None:
    conn = ready()
    conn.receive_data(b"")
    conn.receive_data(b"")
    (event,) = drain(conn)
    assert event == ConnectionClosed(unanswered=(), partial_reply=False)
    assert conn.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.send(Noop())


def test_eof_with_pending_commands_and_a_partial_reply() -> None:
    conn = ready()
    commands = [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test")]
    conn.send_all(commands)
    conn.receive_data(b"250 ok\r\n250-part")
    conn.receive_data(b"")
    events = drain(conn)
    assert isinstance(events[0], ReplyReceived)
    assert events[1] == ConnectionClosed(unanswered=(commands[1],), partial_reply=True)
    assert conn.pending == ()


def test_data_after_eof() -> None:
    conn = ready()
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after the end"):
        conn.receive_data(b"250 late\r\n")


def test_quit_then_close() -> None:
    conn = ready()
    conn.send(Quit())
    reply(conn, b"221 bye\r\n")
    assert conn.state is State.CLOSING
    conn.receive_data(b"")
    assert drain(conn) == [ConnectionClosed()]
    assert conn.state is State.CLOSED


def test_send_failed() -> None:
    conn = ready()
    conn.send(Noop())
    conn.send_failed()
    assert conn.state is State.ERROR
    assert conn.pending == ()
    with pytest.raises(LocalProtocolError):
        conn.next_event()


def test_close_during_tls_handshake_is_reported() -> None:
    conn = ready()
    conn.send(StartTLS())
    reply(conn, b"220 go\r\n")
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="closed the connection"):
        conn.tls_established()
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert conn.state is State.CLOSED
    with pytest.raises(LocalProtocolError, match="no TLS handshake is due"):
        conn.tls_established()


# ----------------------------------------------------------------------
# LMTP
# ----------------------------------------------------------------------


def test_lmtp_uses_lhlo_only() -> None:
    conn = greeted(lmtp=True)
    for command in (Ehlo("c.test"), Helo("c.test")):
        with pytest.raises(LocalProtocolError, match="LHLO"):
            conn.send(command)
    conn.send(Lhlo("c.test"))
    drain(conn, ehlo_reply(("8BITMIME",)))
    assert conn.pipelining
    smtp = greeted()
    with pytest.raises(LocalProtocolError, match="only for LMTP"):
        smtp.send(Lhlo("c.test"))


def test_lmtp_one_reply_per_recipient_after_data() -> None:
    conn = ready(("8BITMIME", "CHUNKING"), lmtp=True)
    conn.send_all(
        [
            Mail(sender="a@x.test"),
            Rcpt(recipient="b@x.test"),
            Rcpt(recipient="bad@x.test"),
            Rcpt(recipient="c@x.test"),
            Data(),
        ]
    )
    drain(conn, b"250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n354 go\r\n")
    conn.send(MessageData(b"hi\r\n"))
    conn.send(EndOfData())
    (first,) = drain(conn, b"250 2.0.0 b delivered\r\n")
    assert isinstance(first, ReplyReceived)
    assert first.recipient == "b@x.test"
    assert conn.state is State.DATA
    assert conn.waiting_for is Phase.DATA_TERMINATION
    (second,) = drain(conn, b"452 4.2.2 c over quota\r\n")
    assert isinstance(second, ReplyReceived)
    assert second.recipient == "c@x.test"
    assert second.command == EndOfData()
    assert conn.state is State.READY
    assert conn.pending == ()


def test_lmtp_bdat_last() -> None:
    conn = ready(("8BITMIME", "CHUNKING"), lmtp=True)
    conn.send_all(
        [
            Mail(sender="a@x.test"),
            Rcpt(recipient="b@x.test"),
            Rcpt(recipient="c@x.test"),
            Bdat(b"hi\r\n", last=True),
        ]
    )
    events = drain(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n250 b ok\r\n550 c failed\r\n")
    assert [getattr(e, "recipient", None) for e in events] == [
        None,
        None,
        None,
        "b@x.test",
        "c@x.test",
    ]
    assert conn.state is State.READY


def test_lmtp_bdat_last_refused_outright_then_rset() -> None:
    conn = ready(("8BITMIME", "CHUNKING"), lmtp=True)
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Bdat(b"x", last=True)])
    events = drain(conn, b"250 ok\r\n550 no\r\n554 no valid recipients\r\n")
    assert getattr(events[-1], "recipient", "unset") is None
    assert conn.state is State.TRANSACTION_FAILED
    conn.send(Rset())
    reply(conn, b"250 ok\r\n")
    assert conn.state is State.READY


def test_lmtp_data_after_every_rcpt_refused_gets_one_reply() -> None:
    conn = ready(("8BITMIME",), lmtp=True)
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Data()])
    drain(conn, b"250 ok\r\n550 no\r\n354 go\r\n")
    conn.send(EndOfData())
    event = reply(conn, b"554 no valid recipients\r\n")
    assert event.recipient is None
    assert conn.state is State.READY


def test_lmtp_content_accepted_with_no_recipient_is_an_error() -> None:
    conn = ready(("8BITMIME", "CHUNKING"), lmtp=True)
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Bdat(b"x", last=True)])
    with pytest.raises(RemoteProtocolError):
        drain(conn, b"250 ok\r\n550 no\r\n250 delivered?\r\n")


def test_sentinels_and_phases() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert repr(PAUSED) == "PAUSED"
    assert Phase.DATA_TERMINATION.default_timeout == 600.0
    assert Phase.DATA_INITIATION.default_timeout == 120.0
    assert Phase.DATA_BLOCK.default_timeout == 180.0
    assert Phase.GREETING.description == "the 220 greeting"
    assert len(set(Phase)) == 8
