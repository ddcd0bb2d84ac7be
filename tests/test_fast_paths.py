"""The shortcuts on the per-message paths give exactly what the long way gives."""

from __future__ import annotations

import pytest
from budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from smtpbee import _connection
from smtpbee._commands import (
    Bdat,
    Command,
    Data,
    Ehlo,
    EndOfData,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    Rset,
    Vrfy,
)
from smtpbee._connection import Connection
from smtpbee._errors import InvalidInputError, LocalProtocolError
from smtpbee._events import NEED_DATA, ReplyReceived
from smtpbee._receivebuffer import ReplyReader
from smtpbee._replies import EnhancedStatus, Reply
from smtpbee._state import State
from smtpbee._validation import check_command_line, parse_mailbox


def replies(reader: ReplyReader, data: bytes) -> list[Reply]:
    reader.feed(data)
    found = []
    while (reply := reader.next_reply()) is not None:
        found.append(reply)
    return found


# ----------------------------------------------------------------------
# ReplyReader: single-line replies seen before
# ----------------------------------------------------------------------


def test_a_repeated_reply_is_the_same_value() -> None:
    reader = ReplyReader()
    first, second = replies(reader, b"250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n")
    assert (
        first == second == Reply(code=250, lines=(b"2.1.5 Ok",), enhanced=EnhancedStatus(2, 1, 5))
    )


def test_a_known_line_inside_a_multiline_reply_is_not_taken_for_a_reply() -> None:
    reader = ReplyReader()
    assert replies(reader, b"250 Ok\r\n") == [Reply(code=250, lines=(b"Ok",))]
    # "250 Ok" is now known, but here it ends a longer reply.
    assert replies(reader, b"250-first\r\n250 Ok\r\n") == [Reply(code=250, lines=(b"first", b"Ok"))]
    assert reader.buffered == 0


def test_line_endings_are_part_of_what_is_known() -> None:
    reader = ReplyReader()
    # The same text with LF or CRLF gives equal replies either way.
    assert replies(reader, b"250 Ok\n250 Ok\r\n250 Ok\n") == [Reply(code=250, lines=(b"Ok",))] * 3


def test_many_distinct_replies_all_parse() -> None:
    # More distinct lines than the reader remembers: it forgets and goes on.
    reader = ReplyReader()
    lines = [b"250 2.0.0 Ok: queued as %04d" % i for i in range(200)]
    for _ in range(2):
        got = replies(reader, b"".join(line + b"\r\n" for line in lines))
        assert [r.lines[0] for r in got] == [line[4:] for line in lines]
        assert all(r.code == 250 and r.enhanced == EnhancedStatus(2, 0, 0) for r in got)


def test_a_known_reply_still_waits_for_its_line_end() -> None:
    reader = ReplyReader()
    assert replies(reader, b"250 Ok\r\n") == [Reply(code=250, lines=(b"Ok",))]
    assert replies(reader, b"250 Ok") == []
    assert replies(reader, b"\r\n") == [Reply(code=250, lines=(b"Ok",))]


# ----------------------------------------------------------------------
# Commands: the rendered line is kept
# ----------------------------------------------------------------------


def test_mail_and_rcpt_render_once_and_the_same() -> None:
    mail = Mail(sender="a@x.test", size=10, envid="id+1", extra={"X-TAG": "v"})
    rcpt = Rcpt(recipient="b@x.test", notify="NEVER")
    for command in (mail, rcpt):
        wire = command.to_bytes()
        assert command.to_bytes() == wire
        assert command.to_bytes(smtputf8=True) == wire
        assert command.transcript_line() == wire.decode().rstrip("\r\n")
    assert mail.to_bytes() == b"MAIL FROM:<a@x.test> SIZE=10 ENVID=id+2B1 X-TAG=v\r\n"
    assert rcpt.to_bytes() == b"RCPT TO:<b@x.test> NOTIFY=NEVER\r\n"
    assert Mail(sender="").to_bytes() == b"MAIL FROM:<>\r\n"


def test_the_kept_line_is_not_part_of_the_value() -> None:
    rendered = Rcpt(recipient="b@x.test")
    rendered.to_bytes()
    fresh = Rcpt(recipient="b@x.test")
    assert rendered == fresh
    assert repr(rendered) == repr(fresh)
    assert "_line" not in repr(rendered)


def test_non_ascii_lines_encode_only_with_smtputf8() -> None:
    mail = Mail(sender="ü@x.test", smtputf8=True)
    assert mail.to_bytes(smtputf8=True) == "MAIL FROM:<ü@x.test> SMTPUTF8\r\n".encode()
    assert mail.transcript_line() == "MAIL FROM:<ü@x.test> SMTPUTF8"
    with pytest.raises(UnicodeEncodeError):
        mail.to_bytes()


def test_the_checked_line_is_kept_and_a_bad_one_refused_each_time() -> None:
    rcpt = Rcpt(recipient="b@x.test")
    assert rcpt.checked_bytes() is rcpt.checked_bytes(smtputf8=True)
    assert rcpt.checked_bytes() == rcpt.to_bytes() == b"RCPT TO:<b@x.test>\r\n"
    utf8 = Rcpt(recipient="ü@x.test")
    assert utf8.checked_bytes(smtputf8=True) == "RCPT TO:<ü@x.test>\r\n".encode()
    with pytest.raises(UnicodeEncodeError):
        utf8.checked_bytes()
    too_long = Rcpt(recipient="b@x.test", extra={"X-L": "y" * 600})
    for _ in range(2):
        with pytest.raises(InvalidInputError, match="RCPT command line is 6"):
            too_long.checked_bytes()


def test_empty_extra_is_shared_and_read_only() -> None:
    mail = Mail(sender="a@x.test")
    assert dict(mail.extra) == {}
    with pytest.raises(TypeError):
        mail.extra["X"] = "y"  # type: ignore[index]
    # A falsy extra that is not a mapping is still refused as before.
    with pytest.raises(AttributeError):
        Rcpt(recipient="b@x.test", extra=[])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mail", "needed"),
    [
        (Mail(sender="a@x.test"), ()),
        (Mail(sender="a@x.test", body="7BIT"), ()),
        (Mail(sender="a@x.test", body="8BITMIME", size=1), ("SIZE", "8BITMIME")),
        (Mail(sender="a@x.test", body="BINARYMIME"), ("BINARYMIME", "CHUNKING")),
        (
            Mail(
                sender="a@x.test",
                smtputf8=True,
                ret="FULL",
                requiretls=True,
                mt_priority=1,
                auth="<>",
            ),
            ("SMTPUTF8", "DSN", "REQUIRETLS", "MT-PRIORITY", "AUTH"),
        ),
        (Mail(sender="a@x.test", envid="e"), ("DSN",)),
    ],
)
def test_required_extensions(mail: Mail, needed: tuple[str, ...]) -> None:
    assert mail.required_extensions == needed


def test_mailbox_text() -> None:
    mailbox = parse_mailbox("<Ab.c@Example.test>")
    assert str(mailbox) == "Ab.c@Example.test"
    assert "_text" not in repr(mailbox)


# ----------------------------------------------------------------------
# check_command_line: the error path still names the command
# ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"NOOP\r\n", None),
        (b"NOOP x" + b"y" * 600 + b"\r\n", "NOOP command line is 608 octets"),
        (b"NOOP\n", "NOOP command line must be a single line"),
        (b"NOOP\r\nRSET\r\n", "^command line must be a single line"),
        (b"NO\0P\r\n", "^command line must be a single line"),
        (b"\n", "^command line must be a single line"),
    ],
)
def test_check_command_line(line: bytes, message: str | None) -> None:
    if message is None:
        check_command_line(line)
        return
    with pytest.raises(InvalidInputError, match=message):
        check_command_line(line)


# ----------------------------------------------------------------------
# Connection: a dropped group leaves the content encoder untouched
# ----------------------------------------------------------------------


def _in_data() -> Connection:
    conn = Connection()
    conn.receive_data(b"220 mx.test\r\n")
    conn.next_event()
    conn.send(Ehlo("client.test"))
    conn.receive_data(b"250-mx.test\r\n250 PIPELINING\r\n")
    conn.next_event()
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Data()])
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    while conn.next_event() is not NEED_DATA:
        pass
    assert conn.state is State.DATA
    return conn


def test_content_of_a_refused_group_does_not_move_the_dot_stuffing() -> None:
    conn = _in_data()
    # Content that does not end a line, then a command the state refuses.
    with pytest.raises(LocalProtocolError):
        conn.send_all([MessageData(b"no line end"), EndOfData(), Rcpt(recipient="c@x.test")])
    assert conn.pending == ()
    # Had "no line end" been encoded, this dot would not open a line.
    data = conn.send_all([MessageData(b".hidden\r\n"), EndOfData()])
    assert data == b"..hidden\r\n.\r\n"


def test_a_group_encodes_its_content_in_order() -> None:
    conn = _in_data()
    data = conn.send_all(
        [MessageData(b"a\r\n"), MessageData(b".b"), EndOfData(), Mail(sender="a@x.test")]
    )
    assert data == b"a\r\n..b\r\n.\r\nMAIL FROM:<a@x.test>\r\n"
    conn.receive_data(b"250 queued\r\n250 ok\r\n")
    events = [conn.next_event(), conn.next_event()]
    assert [type(e) for e in events] == [ReplyReceived, ReplyReceived]
    assert conn.state is State.MAIL


def test_a_success_the_state_cannot_take_is_a_remote_error() -> None:
    # 250 to a NOOP is no trigger; 250 to RCPT after MAIL was refused is one
    # the state table does not know.
    conn = _in_data()
    conn.send_all([MessageData(b"x\r\n"), EndOfData(), Mail(sender="a@x.test")])
    conn.send_all([Rcpt(recipient="b@x.test"), Noop()])
    conn.receive_data(b"250 queued\r\n550 no\r\n")
    conn.next_event()
    conn.next_event()
    conn.receive_data(b"250 ok\r\n")
    with pytest.raises(Exception, match="250/251 to RCPT makes no sense in state READY"):
        conn.next_event()
    assert conn.state is State.ERROR


# ----------------------------------------------------------------------
# Connection: a group is admitted in one step, exactly as one by one
# ----------------------------------------------------------------------

_OFFERS = ("PIPELINING", "SIZE 1000", "8BITMIME", "CHUNKING", "BINARYMIME", "DSN", "SMTPUTF8")
_NO_CHUNKING = ("PIPELINING", "SIZE 1000", "8BITMIME")


def _session(offers: tuple[str, ...], where: str) -> Connection:
    conn = Connection()
    conn.receive_data(b"220 mx.test\r\n")
    conn.next_event()
    conn.send(Ehlo("client.test"))
    lines = ["mx.test", *offers]
    conn.receive_data(
        "".join(
            f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n" for i, line in enumerate(lines)
        ).encode()
    )
    conn.next_event()
    openings: dict[str, list[tuple[Command, bytes]]] = {
        "ready": [],
        "mail": [(Mail(sender="a@x.test"), b"250 ok\r\n")],
        "data": [
            (Mail(sender="a@x.test"), b"250 ok\r\n"),
            (Rcpt(recipient="b@x.test"), b"250 ok\r\n"),
            (Data(), b"354 go\r\n"),
        ],
    }
    for command, answer in openings[where]:
        conn.send(command)
        conn.receive_data(answer)
        conn.next_event()
    return conn


_COMMANDS: list[Command] = [
    Mail(sender="a@x.test"),
    Mail(sender="a@x.test", size=5000),
    Mail(sender="a@x.test", body="BINARYMIME"),
    Rcpt(recipient="b@x.test"),
    Rcpt(recipient="c@x.test", notify="NEVER"),
    Rcpt(recipient="ü@x.test"),
    Rcpt(recipient="d@x.test", extra={"X-L": "y" * 600}),
    Data(),
    Bdat(b"chunk\r\n"),
    Bdat(b"end\r\n", last=True),
    Bdat(b"\xff" * 900, last=True),
    MessageData(b".line\r\n"),
    EndOfData(),
    Rset(),
    Noop(),
    Vrfy("postmaster"),
    Quit(),
]


def _outcome(conn: Connection, send: object) -> tuple[object, ...]:
    try:
        result: object = send
        assert callable(send)
        result = send()
    except Exception as exc:  # the type and the words are what must agree
        result = (type(exc), str(exc))
    return result, conn.pending, conn.allowed_commands(), conn.state


_MAILS, _RCPTS, _OPENERS = _COMMANDS[:3], _COMMANDS[3:7], _COMMANDS[7:11]
_CONTENT = _COMMANDS[11:13]


@st.composite
def _groups(draw: st.DrawFn) -> list[Command]:
    """Mostly groups a client would send (content, then MAIL, RCPTs, an opener), some not."""
    if draw(st.booleans()):
        return draw(st.lists(st.sampled_from(_COMMANDS), min_size=2, max_size=6))
    group: list[Command] = draw(st.lists(st.sampled_from(_CONTENT), max_size=2))
    if draw(st.booleans()):
        group.append(Rset())
    group.append(draw(st.sampled_from(_MAILS)))
    group += draw(st.lists(st.sampled_from(_RCPTS), max_size=4))
    group += draw(st.lists(st.sampled_from(_OPENERS), max_size=1))
    return group if len(group) > 1 else [*group, Noop()]


@settings(max_examples=examples(400), deadline=None)
@given(
    offers=st.sampled_from([_OFFERS, _OFFERS[1:], _NO_CHUNKING, ()]),
    where=st.sampled_from(["ready", "mail", "data"]),
    group=_groups(),
)
def test_a_group_is_admitted_as_its_commands_one_by_one(
    offers: tuple[str, ...], where: str, group: list[Command]
) -> None:
    at_once = _session(offers, where)
    in_turn = _session(offers, where)
    got = _outcome(at_once, lambda: at_once.send_all(group))
    before = (in_turn.pending, in_turn.allowed_commands(), in_turn.state)

    def one_by_one() -> bytes:
        return b"".join(in_turn.send(command) for command in group)

    expected = _outcome(in_turn, one_by_one)
    if isinstance(expected[0], tuple):
        # Refused: the same error, and the group left no trace.
        assert got[0] == expected[0]
        assert got[1:] == before
    else:
        assert got == expected


@pytest.mark.parametrize(
    ("offers", "group", "refusal"),
    [
        (
            _NO_CHUNKING,
            [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Bdat(b"x\r\n", last=True)],
            "does not offer CHUNKING",
        ),
        (
            _OFFERS,
            [Mail(sender="a@x.test", body="BINARYMIME"), Rcpt(recipient="b@x.test"), Data()],
            "BINARYMIME content must go with BDAT",
        ),
    ],
)
def test_what_the_server_offers_is_checked_in_a_group_the_table_allows(
    offers: tuple[str, ...], group: list[Command], refusal: str
) -> None:
    conn = _session(offers, "ready")
    with pytest.raises(LocalProtocolError, match=refusal):
        conn.send_all(group)
    assert (
        conn.pending == ()
        and conn.allowed_commands() == _session(offers, "ready").allowed_commands()
    )


def test_groups_of_many_shapes_are_each_admitted_right() -> None:
    # More shapes than are kept compiled: the oldest are forgotten, none is wrong.
    shapes = _connection._GROUP_PATHS_KEPT + 10
    for count in range(1, shapes + 1):
        conn = _session(("PIPELINING",), "ready")
        group: list[Command] = [Mail(sender="a@x.test")]
        group += [Rcpt(recipient=f"r{i}@x.test") for i in range(count)]
        data = conn.send_all([*group, Data()])
        assert data.count(b"RCPT TO:") == count and data.endswith(b"DATA\r\n")
        assert len(_connection._GROUP_PATHS) <= _connection._GROUP_PATHS_KEPT
    refused = [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Data(), EndOfData()]
    with pytest.raises(LocalProtocolError, match="DATA ends a pipelined group"):
        _session(("PIPELINING",), "ready").send_all(refused)
