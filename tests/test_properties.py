# tests/test_properties
#
# Property-based tests of the core as a whole (Connection + commands + events):
# chunking invariance of well-behaved sessions, hostile server input, DATA
# through the connection, and refusal of control characters in user input.
#
# The session driver plays a well-behaved server: the replies to a group of
# commands only arrive once the group has been sent (however they are cut into
# chunks), exactly as on a real socket. Bytes that arrive while nothing is
# pending are a reply nothing asked for, which the connection refuses; the
# hostile tests below feed such bytes on purpose.
#
# Reply codes follow the declarations in smtpbee._state (REPLY_RULES): a
# success is one of the codes a command's rule lists, never "any 2xx".
"""Hypothesis properties of smtpbee's sans-I/O core."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtpbee._commands import (
    Command,
    Data,
    Ehlo,
    EndOfData,
    Expn,
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
from smtpbee._data import decode_data
from smtpbee._errors import (
    InvalidInputError,
    LocalProtocolError,
    RemoteProtocolError,
)
from smtpbee._events import (
    NEED_DATA,
    PAUSED,
    ContentRequested,
    Event,
    GreetingReceived,
    ReplyReceived,
)
from smtpbee._state import REPLY_RULES, ReplyKind, State, Verb, classify_reply
from smtpbee.testing.strategies import invalid_replies, valid_replies

__all__: list[str] = []

FAST = settings(
    max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# ---------------------------------------------------------------------------
# Building well-behaved server replies
# ---------------------------------------------------------------------------

_TEXT = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b" ").replace(b"\n", b" "))
_EXTENSIONS = ("8BITMIME", "SIZE 1000000", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES", "HELP")


def reply(code: int, *, bare_lf: bool = False) -> st.SearchStrategy[bytes]:
    """One reply with this code: one or several lines, any text, CRLF (or LF) ends."""
    return valid_replies(code, max_lines=3, bare_lf=bare_lf)


@dataclass
class Group:
    """Commands sent together (possibly none) and the bytes the server answers."""

    commands: list[Command]
    replies: bytes
    count: int  # how many replies (events) the server's bytes hold


@st.composite
def sessions(draw: st.DrawFn) -> list[Group]:
    """A session as a well-behaved pipelining server would answer it."""
    greeting = draw(reply(220, bare_lf=True))
    extensions = ["PIPELINING", *draw(st.lists(st.sampled_from(_EXTENSIONS), unique=True))]
    ehlo = (
        b"".join(b"250-%s\r\n" % e.encode() for e in ["server.test", *extensions[:-1]])
        + b"250 %s\r\n" % extensions[-1].encode()
    )
    groups = [Group([], greeting, 1), Group([Ehlo("client.test")], ehlo, 1)]
    for _ in range(draw(st.integers(0, 3))):
        groups.extend(draw(transaction()))
    if draw(st.booleans()):
        groups.append(Group([Noop()], draw(reply(draw(success(Verb.NOOP)))), 1))
    groups.append(Group([Quit()], draw(reply(draw(success(Verb.QUIT)))), 1))
    return groups


def success(verb: Verb) -> st.SearchStrategy[int]:
    """A code the rule for verb declares a success."""
    return st.sampled_from(sorted(REPLY_RULES[verb].success))


def refusal(verb: Verb) -> st.SearchStrategy[int]:
    """A 4xx or 5xx refusal code (never 421, which closes the session)."""
    codes = sorted(c for c in REPLY_RULES[verb].listed_refusals | {450, 554} if c != 421)
    return st.sampled_from(codes)


def is_success(verb: Verb, code: int) -> bool:
    return classify_reply(REPLY_RULES[verb], code)[0] is ReplyKind.SUCCESS


@st.composite
def transaction(draw: st.DrawFn) -> list[Group]:
    """MAIL, RCPT..., DATA in one group, then the content or an RSET."""
    count = draw(st.integers(1, 4))
    rcpts: list[Command] = [Rcpt(recipient=f"r{i}@example.test") for i in range(count)]
    mail_ok = draw(st.booleans()) or draw(st.booleans())
    rcpt_codes = [
        draw(st.one_of(success(Verb.RCPT), refusal(Verb.RCPT))) if mail_ok else 503 for _ in rcpts
    ]
    accepted = mail_ok and any(is_success(Verb.RCPT, code) for code in rcpt_codes)
    replies = draw(reply(draw(success(Verb.MAIL) if mail_ok else refusal(Verb.MAIL))))
    for code in rcpt_codes:
        replies += draw(reply(code))
    replies += draw(reply(354 if accepted else 554))
    groups = [Group([Mail(sender="s@example.test"), *rcpts, Data()], replies, count + 2)]
    if accepted:
        # 7-bit: the EHLO drawn may not offer 8BITMIME.
        body = bytes(octet & 0x7F for octet in draw(st.binary(max_size=64)))
        final_code = draw(st.one_of(success(Verb.END_OF_DATA), refusal(Verb.END_OF_DATA)))
        groups.append(Group([MessageData(body), EndOfData()], draw(reply(final_code)), 1))
    else:
        groups.append(Group([Rset()], draw(reply(draw(success(Verb.RSET)))), 1))
    return groups


def drive(groups: list[Group], points: list[int]) -> tuple[list[Event], State]:
    """Run a session, the server's bytes cut at these offsets into the whole stream.

    Each group is sent once nothing is pending; its replies arrive only then,
    in the chunks the cuts make of them (a chunk never spans two groups: the
    server cannot answer a command before it was sent).
    """
    conn = Connection()
    events: list[Event] = []
    offset = 0
    for group in groups:
        if group.commands:
            assert not conn.pending
            conn.send_all(group.commands)
        size = len(group.replies)
        inner = [p - offset for p in points if offset < p < offset + size]
        offset += size
        for chunk in split(group.replies, inner):
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                assert event is not PAUSED
                assert isinstance(event, Event)
                events.append(event)
        # Every reply of the group was read, and nothing is left over.
        assert not conn.unread
    conn.receive_data(b"")
    event = conn.next_event()
    assert isinstance(event, Event)
    events.append(event)
    return events, conn.state


def split(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(data) + 1) for p in points})
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# ---------------------------------------------------------------------------
# 1. Chunking invariance
# ---------------------------------------------------------------------------


@FAST
@given(groups=sessions(), data=st.data())
def test_any_chunking_gives_the_same_events(groups: list[Group], data: st.DataObject) -> None:
    stream = b"".join(g.replies for g in groups)
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="splits")
    whole_events, whole_state = drive(groups, [])
    events, state = drive(groups, points)
    assert events == whole_events
    assert state == whole_state
    # The well-behaved session ran to its end: every reply became one event,
    # each answering the command it was meant for, and QUIT closed it.
    assert len(whole_events) == sum(g.count for g in groups) + 1
    assert whole_state is State.CLOSED
    assert isinstance(whole_events[0], GreetingReceived)
    sent = [c for g in groups for c in g.commands if not isinstance(c, MessageData)]
    answered = [e.command for e in whole_events if isinstance(e, ReplyReceived | ContentRequested)]
    assert answered == sent
    # The 354 invites the content; it is not a final success.
    for event in whole_events:
        if isinstance(event, ContentRequested):
            assert event.reply.code == 354 and isinstance(event.command, Data)
            assert not event.accepted
        elif isinstance(event, ReplyReceived):
            assert event.command is not None
            assert event.accepted == is_success(event.command.verb, event.reply.code)


@FAST
@given(data=st.data())
def test_one_byte_at_a_time_equals_whole(data: st.DataObject) -> None:
    groups = data.draw(sessions())
    stream = b"".join(g.replies for g in groups)
    every_byte = list(range(1, len(stream)))
    assert drive(groups, every_byte) == drive(groups, [])


# ---------------------------------------------------------------------------
# 2. Hostile input after a realistic prefix
# ---------------------------------------------------------------------------

_PREFIX_EHLO = b"250-server.test\r\n250-PIPELINING\r\n250-AUTH PLAIN\r\n250 CHUNKING\r\n"


def hostile_prefix() -> Connection:
    """Greeting and EHLO done; MAIL and two RCPTs pipelined, awaiting replies."""
    conn = Connection()
    conn.receive_data(b"220 server.test ESMTP\r\n")
    assert isinstance(conn.next_event(), GreetingReceived)
    conn.send(Ehlo("client.test"))
    conn.receive_data(_PREFIX_EHLO)
    assert isinstance(conn.next_event(), ReplyReceived)
    conn.send_all(
        [
            Mail(sender="a@example.test"),
            Rcpt(recipient="b@example.test"),
            Rcpt(recipient="c@example.test"),
        ]
    )
    return conn


_CODES = st.one_of(
    st.sampled_from([b"250", b"354", b"421", b"334", b"550", b"221", b"503"]),
    st.integers(0, 999).map(lambda n: b"%03d" % n),
    st.binary(min_size=1, max_size=4),
)
_SEPARATORS = st.sampled_from([b" ", b"-", b"", b"x", b"\r", b"\t"])
_ENDS = st.sampled_from([b"\r\n", b"\n", b"\r", b"", b"\r\r\n", b"\n\r"])
_JUNK_TEXT = st.one_of(
    _TEXT,
    st.binary(max_size=30),
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.just(b"\xff\xfe\xc3"),
    st.integers(2000, 70000).map(lambda n: b"A" * n),
)
_NEAR_MISS_LINE = st.builds(lambda *parts: b"".join(parts), _CODES, _SEPARATORS, _JUNK_TEXT, _ENDS)
_HOSTILE = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.one_of(
            _NEAR_MISS_LINE,
            reply(250),
            reply(550),
            reply(421),
            st.just(b"334 not base64!\r\n"),
            st.just(b"\r\n"),
            st.just(b"\n"),
            st.just(b"250-a\r\n251 b\r\n"),
            st.just(b"25\r0 mid\r\n"),
            invalid_replies(),
        ),
        max_size=8,
    ).map(b"".join),
)


def feed_hostile(conn: Connection, chunks: list[bytes]) -> list[Event]:
    """Feed and drain; only smtpbee's remote errors may escape, and they kill the session."""
    events: list[Event] = []
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                assert isinstance(event, Event)
                events.append(event)
                if conn.state is State.CLOSED:
                    return events
    except RemoteProtocolError:
        assert conn.state is State.ERROR
        assert conn.pending == ()
        assert conn.allowed_commands() == frozenset()
        with pytest.raises(LocalProtocolError):
            conn.send(Rset())
        with pytest.raises(LocalProtocolError):
            conn.next_event()
    return events


@settings(max_examples=examples(250), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_HOSTILE, data=st.data())
def test_hostile_replies_raise_only_smtpbee_errors(payload: bytes, data: st.DataObject) -> None:
    points = data.draw(st.lists(st.integers(0, len(payload)), max_size=6), label="splits")
    events = feed_hostile(hostile_prefix(), split(payload, points))
    # Replies are still bound in order to the commands they answer.
    answered = [e.command for e in events if isinstance(e, ReplyReceived) and e.command]
    expected = ["MAIL", "RCPT", "RCPT"]
    assert [c.verb.value for c in answered] == expected[: len(answered)]


@FAST
@given(payload=_HOSTILE)
def test_hostile_replies_in_every_state(payload: bytes) -> None:
    # The same garbage before the greeting and right after EHLO.
    feed_hostile(Connection(), [payload])
    conn = Connection()
    conn.receive_data(b"220 hi\r\n")
    conn.next_event()
    conn.send(Ehlo("client.test"))
    feed_hostile(conn, [payload])
    assert conn.state in (State.READY, State.CONNECTED, State.CLOSING, State.CLOSED, State.ERROR)


def ready_connection() -> Connection:
    conn = Connection()
    conn.receive_data(b"220 hi\r\n")
    conn.next_event()
    conn.send(Ehlo("client.test"))
    conn.receive_data(_PREFIX_EHLO)
    conn.next_event()
    assert conn.state is State.READY and not conn.pending
    return conn


@FAST
@given(payload=_HOSTILE.filter(bool), data=st.data())
def test_bytes_nobody_asked_for_never_answer_a_later_command(
    payload: bytes, data: st.DataObject
) -> None:
    conn = ready_connection()
    conn.receive_data(payload)
    assert conn.unread
    command = data.draw(st.sampled_from([Noop(), Rset(), Mail(sender="a@example.test")]))
    try:
        conn.send(command)
    except RemoteProtocolError:
        # The session is over and nothing was produced.
        assert conn.state is State.ERROR and conn.pending == ()
    except LocalProtocolError:
        # It may be a 421, which can come at any time: left for next_event().
        assert b"421".startswith(payload[:3])
        assert conn.state is State.READY and conn.pending == ()
    else:
        pytest.fail(f"{command} was sent with {payload!r} waiting unread")


# ---------------------------------------------------------------------------
# 3. DATA through the connection
# ---------------------------------------------------------------------------


def crlf_normalised(body: bytes) -> bytes:
    text = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return text if not text or text.endswith(b"\r\n") else text + b"\r\n"


def in_data_state() -> Connection:
    conn = Connection()
    conn.receive_data(b"220 hi\r\n")
    conn.next_event()
    conn.send(Ehlo("client.test"))
    conn.receive_data(b"250-hi\r\n250 8BITMIME\r\n")
    conn.next_event()
    for command, answer in (
        (Mail(sender="a@example.test", body="8BITMIME"), b"250 ok\r\n"),
        (Rcpt(recipient="b@example.test"), b"250 ok\r\n"),
        (Data(), b"354 go\r\n"),
    ):
        conn.send(command)
        conn.receive_data(answer)
        conn.next_event()
    assert conn.state is State.DATA
    return conn


_BODY = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"..", b"x", b"\r\n.\r\n"])).map(
        b"".join
    ),
)


@settings(max_examples=examples(200), deadline=None)
@given(body=_BODY, data=st.data())
def test_data_round_trips_whatever_the_chunking(body: bytes, data: st.DataObject) -> None:
    conn = in_data_state()
    points = data.draw(st.lists(st.integers(0, len(body)), max_size=8), label="splits")
    wire = b"".join(conn.send(MessageData(piece)) for piece in split(body, points))
    # The terminator never appears before the end, however the body was cut.
    assert b"\r\n.\r\n" not in b"\r\n" + wire
    wire += conn.send(EndOfData())
    assert decode_data(wire) == crlf_normalised(body)
    assert conn.pending[-1] == EndOfData()


# ---------------------------------------------------------------------------
# 4. User input: control characters never reach the wire
# ---------------------------------------------------------------------------

_FORBIDDEN = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x1F),
    st.just("\x7f"),
    st.characters(min_codepoint=0x80, max_codepoint=0x9F),
    st.sampled_from(["\u2028", "\u2029"]),
)
_BUILDERS: dict[str, Callable[[str], Command]] = {
    "EHLO": lambda s: Ehlo(s),
    "HELO": lambda s: Helo(s),
    "MAIL": lambda s: Mail(sender=s),
    "RCPT": lambda s: Rcpt(recipient=s),
    "NOOP": lambda s: Noop(s),
    "VRFY": lambda s: Vrfy(s),
    "EXPN": lambda s: Expn(s),
    "HELP": lambda s: Help(s),
    "MAIL ENVID": lambda s: Mail(sender="a@example.test", envid=s),
    "MAIL AUTH": lambda s: Mail(sender="a@example.test", auth=s),
    "MAIL extra": lambda s: Mail(sender="a@example.test", extra={"X-TAG": s}),
    "RCPT ORCPT": lambda s: Rcpt(recipient="a@example.test", orcpt=s),
    "RCPT extra": lambda s: Rcpt(recipient="a@example.test", extra={"X-TAG": s}),
}


@settings(max_examples=examples(200), deadline=None)
@given(
    which=st.sampled_from(sorted(_BUILDERS)),
    before=st.text(alphabet="abc.@-", max_size=8),
    bad=_FORBIDDEN,
    after=st.text(alphabet="xyz.@", max_size=8),
)
def test_control_characters_are_refused_at_construction(
    which: str, before: str, bad: str, after: str
) -> None:
    conn = Connection()
    with pytest.raises(InvalidInputError):
        _BUILDERS[which](before + bad + after)
    # Nothing was produced, nothing is pending.
    assert conn.pending == ()
