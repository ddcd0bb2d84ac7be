"""The shortcuts on the per-message paths give exactly what the long way gives."""

from __future__ import annotations

import pytest
from smtpbee._commands import Data, Ehlo, EndOfData, Mail, MessageData, Noop, Rcpt
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
