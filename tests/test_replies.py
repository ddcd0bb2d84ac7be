"""The Reply value type and the error hierarchy built around it."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
from smtpbee import (
    AuthenticationError,
    AuthenticationRejected,
    EnhancedStatus,
    LocalProtocolError,
    PermanentReplyError,
    ProtocolError,
    RemoteProtocolError,
    Reply,
    ReplyClass,
    ReplyError,
    SMTPError,
    SMTPTimeoutError,
    TransientReplyError,
)
from smtpbee._errors import reply_error
from smtpbee._replies import parsed_reply


def test_reply_class_follows_first_digit() -> None:
    assert Reply(code=250, lines=(b"ok",)).reply_class is ReplyClass.POSITIVE_COMPLETION
    assert Reply(code=354, lines=(b"go",)).reply_class is ReplyClass.POSITIVE_INTERMEDIATE
    assert Reply(code=452, lines=(b"",)).reply_class is ReplyClass.TRANSIENT_NEGATIVE
    assert Reply(code=550, lines=(b"",)).reply_class is ReplyClass.PERMANENT_NEGATIVE


def test_text_strips_enhanced_code_from_every_line() -> None:
    reply = Reply(
        code=550,
        lines=(b"5.1.1 first", b"5.1.1  second", b"third"),
        enhanced=EnhancedStatus(5, 1, 1),
    )
    assert reply.text == "first\nsecond\nthird"
    assert str(reply) == "550 5.1.1 first / second / third"


def test_printable_text_escapes_controls_and_bad_utf8() -> None:
    reply = Reply(code=250, lines=(b"a\x1b[31mb\xff",))
    assert reply.printable_text == "a\\x1b[31mb\ufffd"


def test_to_bytes_round_trips_a_multiline_reply() -> None:
    reply = Reply(code=250, lines=(b"mx hello", b"PIPELINING", b""))
    assert reply.to_bytes() == b"250-mx hello\r\n250-PIPELINING\r\n250 \r\n"


def test_protocol_error_is_abstract() -> None:
    with pytest.raises(TypeError):
        ProtocolError("nope")
    assert isinstance(LocalProtocolError("x"), SMTPError)
    assert isinstance(RemoteProtocolError("x"), ProtocolError)


def test_reply_error_picks_class_by_code_and_describes_itself() -> None:
    temporary = reply_error(Reply(code=451, lines=(b"try later",)), command="MAIL FROM:<a@b>")
    permanent = reply_error(Reply(code=554, lines=(b"no",)), phase="DATA")
    bare = reply_error(Reply(code=550, lines=(b"gone",)))
    assert isinstance(temporary, TransientReplyError) and temporary.code == 451
    assert isinstance(permanent, PermanentReplyError)
    assert str(temporary) == "451 to MAIL FROM:<a@b>: try later"
    assert str(permanent) == "554 during DATA: no"
    assert str(bare) == "550: gone"
    assert temporary.recipients == {}


def test_authentication_rejected_is_both_kinds() -> None:
    error = AuthenticationRejected(Reply(code=535, lines=(b"bad",)), phase="AUTH PLAIN")
    assert isinstance(error, AuthenticationError)
    assert isinstance(error, PermanentReplyError) and isinstance(error, ReplyError)


def test_timeouts_are_builtin_timeouts() -> None:
    assert issubclass(SMTPTimeoutError, TimeoutError)


@pytest.mark.parametrize(
    ("code", "kinds"),
    [
        (250, (True, False, False, False)),
        (354, (False, True, False, False)),
        (451, (False, False, True, False)),
        (554, (False, False, False, True)),
    ],
)
def test_reply_kind_follows_first_digit(code: int, kinds: tuple[bool, ...]) -> None:
    reply = Reply(code=code, lines=(b"",))
    assert (
        reply.is_success,
        reply.is_intermediate,
        reply.is_transient,
        reply.is_permanent,
    ) == kinds


def test_parsed_reply_is_the_reply_built_the_usual_way() -> None:
    status = EnhancedStatus(2, 0, 0)
    usual = Reply(code=250, lines=(b"2.0.0 ok", b"x"), enhanced=status)
    parsed = parsed_reply(250, (b"2.0.0 ok", b"x"), status)
    assert type(parsed) is Reply
    assert parsed == usual and hash(parsed) == hash(usual) and repr(parsed) == repr(usual)
    with pytest.raises(FrozenInstanceError):
        parsed.code = 550  # type: ignore[misc]
