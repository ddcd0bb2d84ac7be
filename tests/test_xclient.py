"""Postfix XCLIENT in the core: the command, its offer checks and the session restart.

XCLIENT_README: ``XCLIENT 1*( SP attribute-name"="attribute-value )``, values in
xtext; the server answers 220, a new greeting, and the client must EHLO again.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smtpbee import (
    NEED_DATA,
    PAUSED,
    Connection,
    Ehlo,
    Extensions,
    InvalidInputError,
    LocalProtocolError,
    Mail,
    Noop,
    Reply,
    ReplyKind,
    ReplyReceived,
    Rset,
    StartTLS,
    State,
    UnsupportedExtensionError,
    Verb,
    Xclient,
    xtext_decode,
)
from smtpbee._commands import XCLIENT_ATTRIBUTES, Command

GREETING = b"220 mx.test ESMTP\r\n"
EHLO_XCLIENT = (
    b"250-mx.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250-AUTH PLAIN\r\n"
    b"250 XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT\r\n"
)
EHLO_PLAIN = b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"


def drain(conn: Connection, data: bytes) -> list[Any]:
    conn.receive_data(data)
    events = []
    while (event := conn.next_event()) not in (NEED_DATA, PAUSED):
        events.append(event)
    return events


def ready(ehlo_reply: bytes = EHLO_XCLIENT) -> Connection:
    conn = Connection()
    drain(conn, GREETING)
    conn.send(Ehlo("client.test"))
    drain(conn, ehlo_reply)
    assert conn.state is State.READY
    return conn


def state(conn: Connection) -> State:
    # Read afresh: a type checker takes an earlier assertion on .state for good.
    return conn.state


# ----------------------------------------------------------------------------
# The command


@pytest.mark.parametrize(
    ("attributes", "line"),
    [
        ({"NAME": "mail.example.org"}, b"XCLIENT NAME=mail.example.org\r\n"),
        # Names are case-insensitive and go out upper-cased, in the order given.
        (
            {"addr": "192.0.2.1", "Name": "mail.example.org", "port": "4025"},
            b"XCLIENT ADDR=192.0.2.1 NAME=mail.example.org PORT=4025\r\n",
        ),
        # xtext (RFC 1891): "+", "=" and anything outside "!".."~" as +HH.
        ({"LOGIN": "user name+tag=x"}, b"XCLIENT LOGIN=user+20name+2Btag+3Dx\r\n"),
        ({"HELO": "[192.0.2.1]"}, b"XCLIENT HELO=[192.0.2.1]\r\n"),
        # The special values go as they are.
        ({"NAME": "[TEMPUNAVAIL]"}, b"XCLIENT NAME=[TEMPUNAVAIL]\r\n"),
        (
            {"NAME": "[UNAVAILABLE]", "ADDR": "[UNAVAILABLE]", "PORT": "[UNAVAILABLE]"},
            b"XCLIENT NAME=[UNAVAILABLE] ADDR=[UNAVAILABLE] PORT=[UNAVAILABLE]\r\n",
        ),
        # IPv6 carries the IPV6: prefix; it is added when missing, and upper-cased.
        ({"ADDR": "2001:db8::1"}, b"XCLIENT ADDR=IPV6:2001:db8::1\r\n"),
        ({"ADDR": "ipv6:2001:DB8:0::1"}, b"XCLIENT ADDR=IPV6:2001:db8::1\r\n"),
        ({"DESTADDR": "IPv6:::1", "DESTPORT": "25"}, b"XCLIENT DESTADDR=IPV6:::1 DESTPORT=25\r\n"),
        ({"PROTO": "esmtp"}, b"XCLIENT PROTO=ESMTP\r\n"),
        ({"PROTO": "SMTP", "PORT": "0"}, b"XCLIENT PROTO=SMTP PORT=0\r\n"),
        ({"PORT": "65535"}, b"XCLIENT PORT=65535\r\n"),
    ],
)
def test_the_bytes_on_the_wire(attributes: dict[str, str], line: bytes) -> None:
    command = Xclient(attributes)
    assert command.to_bytes() == line
    assert command.to_bytes(smtputf8=True) == line
    assert command.transcript_line() == line.decode("ascii").removesuffix("\r\n")
    assert command.verb is Verb.XCLIENT


def test_the_attributes_are_kept_checked_and_read_only() -> None:
    command = Xclient({"addr": "2001:db8::1", "login": "bee"})
    assert dict(command.attributes) == {"ADDR": "IPV6:2001:db8::1", "LOGIN": "bee"}
    with pytest.raises(TypeError):
        command.attributes["NAME"] = "x"  # type: ignore[index]
    assert command == Xclient({"ADDR": "IPV6:2001:db8::1", "LOGIN": "bee"})
    assert XCLIENT_ATTRIBUTES == (
        "NAME",
        "ADDR",
        "PORT",
        "PROTO",
        "HELO",
        "LOGIN",
        "DESTADDR",
        "DESTPORT",
    )


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({}, "at least one attribute"),
        ({"SOURCE": "x"}, "XCLIENT takes NAME, ADDR"),
        ({"REVERSE_NAME": "x"}, "not 'REVERSE_NAME'"),
        ({"NAME=x": "y"}, "XCLIENT takes"),
        ({"NAME": "a.test", "name": "b.test"}, "NAME is given twice"),
        ({"NAME": 42}, "must be a str, not int"),
        ({"NAME": ""}, r"must not be empty \(use \[UNAVAILABLE\]\)"),
        ({"LOGIN": "bee\r\nRSET"}, "XCLIENT LOGIN"),
        ({"HELO": "a\nb"}, "XCLIENT HELO"),
        ({"NAME": "a\x00b"}, "XCLIENT NAME"),
        ({"LOGIN": "bee\t"}, "XCLIENT LOGIN"),
        ({"LOGIN": "bée"}, "must be ASCII"),
        ({"NAME": "x" * 256}, "at most 255"),
        ({"HELO": "x" * 256}, "at most 255"),
        ({"ADDR": "mail.example.org"}, "IPv4 or IPv6 address"),
        ({"ADDR": "192.0.2.1/32"}, "IPv4 or IPv6 address"),
        ({"ADDR": "192.0.2.01"}, "IPv4 or IPv6 address"),
        ({"ADDR": "[192.0.2.1]"}, "IPv4 or IPv6 address"),
        ({"ADDR": "IPV6:192.0.2.1"}, "the IPV6: prefix names an IPv4 address"),
        ({"DESTADDR": "fe80::1%eth0"}, "must not carry an IPv6 scope"),
        ({"ADDR": "[TEMPUNAVAIL]"}, "IPv4 or IPv6 address"),
        ({"PORT": "-1"}, "port number 0-65535"),
        ({"PORT": "65536"}, "port number 0-65535"),
        ({"DESTPORT": "123456"}, "port number 0-65535"),
        ({"PORT": "25 "}, "port number 0-65535"),
        ({"PORT": "twenty"}, "port number 0-65535"),
        ({"PROTO": "LMTP"}, "SMTP or ESMTP"),
        ({"PROTO": "[UNAVAILABLE]"}, "SMTP or ESMTP"),
    ],
)
def test_invalid_attributes_are_refused_when_built(attributes: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Xclient(attributes)


def test_a_value_is_never_quoted_in_the_error() -> None:
    with pytest.raises(InvalidInputError) as caught:
        Xclient({"LOGIN": "secret-login\r\n"})
    assert "secret-login" not in str(caught.value)


def test_attributes_must_be_a_mapping() -> None:
    with pytest.raises(InvalidInputError, match="mapping"):
        Xclient([("NAME", "x")])  # type: ignore[arg-type]


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1))
def test_any_printable_ascii_login_round_trips_through_xtext(login: str) -> None:
    line = Xclient({"LOGIN": login}).to_bytes()
    assert line.startswith(b"XCLIENT LOGIN=") and line.endswith(b"\r\n")
    value = line[len(b"XCLIENT LOGIN=") : -2].decode("ascii")
    # One attribute, one parameter: nothing in the value can split the line.
    assert " " not in value and "=" not in value and "\r" not in value
    assert xtext_decode(value) == login


@given(
    st.dictionaries(
        st.sampled_from(["NAME", "HELO", "LOGIN"]),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40),
        min_size=1,
    )
)
def test_every_attribute_is_one_parameter(attributes: dict[str, str]) -> None:
    words = Xclient(attributes).to_bytes().decode("ascii").removesuffix("\r\n").split(" ")
    assert words[0] == "XCLIENT"
    assert [word.split("=", 1)[0] for word in words[1:]] == list(attributes)
    assert [xtext_decode(word.split("=", 1)[1]) for word in words[1:]] == list(attributes.values())


# ----------------------------------------------------------------------------
# What the EHLO reply offers


def extensions(*lines: bytes) -> Extensions:
    return Extensions.from_reply(Reply(code=250, lines=(b"mx.test", *lines)))


def test_the_xclient_attributes_come_from_the_ehlo_reply() -> None:
    assert extensions(b"PIPELINING").xclient_attributes is None
    assert extensions(b"XCLIENT").xclient_attributes == frozenset()
    assert extensions(b"xclient name Addr  PROTO").xclient_attributes == frozenset(
        {"NAME", "ADDR", "PROTO"}
    )


def test_xclient_needs_the_offer() -> None:
    conn = ready(EHLO_PLAIN)
    assert conn.why_not(Verb.XCLIENT) == "the server does not offer XCLIENT"
    assert Verb.XCLIENT not in conn.allowed_commands()
    with pytest.raises(UnsupportedExtensionError, match="does not offer XCLIENT"):
        conn.send(Xclient({"ADDR": "192.0.2.1"}))
    assert conn.state is State.READY and not conn.pending


def test_only_the_offered_attributes_can_be_sent() -> None:
    conn = ready(b"250-mx.test\r\n250 XCLIENT NAME ADDR\r\n")
    assert Verb.XCLIENT in conn.allowed_commands()
    with pytest.raises(UnsupportedExtensionError, match=r"does not take LOGIN, PORT \(it takes"):
        conn.send(Xclient({"NAME": "a.test", "LOGIN": "bee", "PORT": "25"}))
    assert not conn.pending
    data = conn.send(Xclient({"NAME": "a.test", "ADDR": "192.0.2.1"}))
    assert data == b"XCLIENT NAME=a.test ADDR=192.0.2.1\r\n"


def test_xclient_offered_with_no_attribute_takes_none() -> None:
    conn = ready(b"250-mx.test\r\n250 XCLIENT\r\n")
    with pytest.raises(UnsupportedExtensionError, match=r"\(it takes nothing\)"):
        conn.send(Xclient({"NAME": "a.test"}))


class _NotAnXclient(Command):
    _VERB: ClassVar[Verb] = Verb.XCLIENT

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        return b"XCLIENT NAME=x\r\n"


def test_a_command_claiming_the_verb_must_be_an_xclient() -> None:
    with pytest.raises(LocalProtocolError, match="must be a Xclient, not a _NotAnXclient"):
        ready().send(_NotAnXclient())


# ----------------------------------------------------------------------------
# The replies: 220 starts the session over


def test_220_is_a_new_greeting_and_ehlo_must_come_again() -> None:
    conn = ready()
    assert conn.send(Xclient({"ADDR": "192.0.2.1"})) == b"XCLIENT ADDR=192.0.2.1\r\n"
    [event] = drain(conn, b"220 mx.test ESMTP Postfix\r\n")
    assert isinstance(event, ReplyReceived)
    assert event.kind is ReplyKind.SUCCESS and event.accepted
    assert conn.state is State.CONNECTED
    with pytest.raises(LocalProtocolError, match="MAIL is not allowed in state CONNECTED"):
        conn.send(Mail(sender="a@x.test"))
    assert conn.send(Ehlo("client.test")) == b"EHLO client.test\r\n"
    # The new EHLO reply is what counts now: the claimed client may not XCLIENT.
    drain(conn, EHLO_PLAIN)
    assert state(conn) is State.READY
    assert conn.why_not(Verb.XCLIENT) == "the server does not offer XCLIENT"


def test_220_discards_what_the_server_offered_and_the_login() -> None:
    conn = ready()
    conn.send(Xclient({"NAME": "mail.example.org"}))
    drain(conn, b"220 mx.test ESMTP\r\n")
    # As after STARTTLS (RFC 3207 §4.2): nothing the old EHLO reply said holds.
    assert conn.extensions == Extensions()
    assert not conn.esmtp and not conn.pipelining and not conn.authenticated
    assert conn.allowed_commands() == {
        Verb.EHLO,
        Verb.HELO,
        Verb.RSET,
        Verb.NOOP,
        Verb.HELP,
        Verb.QUIT,
    }


@pytest.mark.parametrize("code", [501, 503, 550, 450, 421])
def test_a_refusal_leaves_the_session_where_it_was(code: int) -> None:
    conn = ready()
    conn.send(Xclient({"ADDR": "192.0.2.1"}))
    [event] = drain(conn, b"%d 5.7.0 insufficient authorization\r\n" % code)
    assert isinstance(event, ReplyReceived)
    if code == 421:
        assert event.closing and conn.state is State.CLOSING
        return
    assert event.kind is (ReplyKind.TRANSIENT if code < 500 else ReplyKind.PERMANENT)
    assert conn.state is State.READY
    assert conn.extensions.xclient_attributes is not None  # nothing was forgotten
    assert conn.why_not(Verb.XCLIENT) is None


@pytest.mark.parametrize("code", [250, 221, 235, 354])
def test_other_success_codes_are_violations_or_closing(code: int) -> None:
    conn = ready()
    conn.send(Xclient({"ADDR": "192.0.2.1"}))
    conn.receive_data(b"%d hm\r\n" % code)
    if code == 221:
        event = conn.next_event()
        assert isinstance(event, ReplyReceived) and event.closing
        return
    with pytest.raises(Exception, match="not a valid reply to XCLIENT"):
        conn.next_event()
    assert conn.state is State.ERROR


def test_xclient_ends_a_pipelined_group() -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError, match="XCLIENT ends a pipelined group"):
        conn.send_all([Xclient({"ADDR": "192.0.2.1"}), Noop()])
    # A group may lead up to it.
    group = conn.send_all([Rset(), Xclient({"ADDR": "192.0.2.1"})])
    assert group == b"RSET\r\nXCLIENT ADDR=192.0.2.1\r\n"


def test_not_inside_a_mail_transaction() -> None:
    conn = ready()
    conn.send(Mail(sender="a@x.test"))
    drain(conn, b"250 ok\r\n")
    assert conn.why_not(Verb.XCLIENT) is not None
    assert "not allowed in state MAIL" in (conn.why_not(Verb.XCLIENT) or "")


def test_after_starttls_when_the_new_ehlo_offers_it() -> None:
    conn = ready()
    conn.send(StartTLS())
    drain(conn, b"220 go ahead\r\n")
    conn.tls_established()
    conn.send(Ehlo("client.test"))
    drain(conn, EHLO_XCLIENT)
    assert conn.send(Xclient({"LOGIN": "bee"})) == b"XCLIENT LOGIN=bee\r\n"
    drain(conn, b"220 mx.test\r\n")
    assert conn.state is State.CONNECTED and conn.tls_active


def test_a_command_line_over_512_octets_is_refused_before_sending() -> None:
    conn = ready()
    command = Xclient({"NAME": "n" * 255, "HELO": "h" * 255})
    with pytest.raises(InvalidInputError, match="512"):
        conn.send(command)
    assert not conn.pending
