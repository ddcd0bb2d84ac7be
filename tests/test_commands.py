"""Commands: validation when built, the exact bytes on the wire, transcripts and reprs."""

from __future__ import annotations

from typing import Any

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
from smtpbee._errors import InvalidInputError
from smtpbee._state import Verb

INJECTIONS = ["\r", "\n", "\x00", "\r\nRSET", "\t", "\x85", "\u2028"]


@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize(
    "build",
    [
        lambda s: Ehlo(f"client{s}.test"),
        lambda s: Helo(f"client{s}"),
        lambda s: Mail(sender=f"a{s}@x.test"),
        lambda s: Mail(sender="a@x.test", envid=f"id{s}"),
        lambda s: Mail(sender="a@x.test", auth=f"me{s}@x.test"),
        lambda s: Mail(sender="a@x.test", extra={"X-A": f"v{s}"}),
        lambda s: Mail(sender="a@x.test", extra={f"X{s}": None}),
        lambda s: Rcpt(recipient=f"b{s}@x.test"),
        lambda s: Rcpt(recipient="b@x.test", orcpt=f"o{s}@x.test"),
        lambda s: Rcpt(recipient="b@x.test", extra={"X-B": f"v{s}"}),
        lambda s: Noop(f"hi{s}"),
        lambda s: Vrfy(f"user{s}"),
        lambda s: Expn(f"list{s}"),
        lambda s: Help(f"topic{s}"),
        lambda s: Auth(f"PLAIN{s}"),
    ],
)
def test_control_characters_are_refused_in_every_argument(build: Any, bad: str) -> None:
    with pytest.raises(InvalidInputError):
        build(bad)


@pytest.mark.parametrize(
    "address",
    ["a@x.com SIZE=1", "<a@x.com> SIZE=1", "a@x.com>", "Name <a@x.com>", "a@x.com,b@x.com"],
)
def test_addresses_cannot_smuggle_parameters(address: str) -> None:
    with pytest.raises(InvalidInputError):
        Mail(sender=address)
    with pytest.raises(InvalidInputError):
        Rcpt(recipient=address)


def test_hello_commands() -> None:
    assert Ehlo("client.test").to_bytes() == b"EHLO client.test\r\n"
    assert Helo("client.test").to_bytes() == b"HELO client.test\r\n"
    assert Lhlo("client.test").to_bytes() == b"LHLO client.test\r\n"
    assert Ehlo("[192.0.2.1]").to_bytes() == b"EHLO [192.0.2.1]\r\n"
    # A non-ASCII name goes as A-labels, whatever smtputf8 says.
    assert Ehlo("bücher.test").to_bytes(smtputf8=True) == b"EHLO xn--bcher-kva.test\r\n"
    assert (Ehlo("a.test").verb, Helo("a.test").verb, Lhlo("a.test").verb) == (
        Verb.EHLO,
        Verb.HELO,
        Verb.LHLO,
    )
    assert Ehlo("a.test").transcript_line() == "EHLO a.test"


@pytest.mark.parametrize("name", ["", "two words", "bad_name.test", "trailing."])
def test_bad_hello_names(name: str) -> None:
    with pytest.raises(InvalidInputError):
        Ehlo(name)


@pytest.mark.parametrize(
    ("kwargs", "wire"),
    [
        ({}, b"MAIL FROM:<a@x.test>\r\n"),
        ({"sender": ""}, b"MAIL FROM:<>\r\n"),
        ({"sender": "<>"}, b"MAIL FROM:<>\r\n"),
        ({"sender": "<a@x.test>"}, b"MAIL FROM:<a@x.test>\r\n"),
        ({"size": 0}, b"MAIL FROM:<a@x.test> SIZE=0\r\n"),
        ({"size": 12345}, b"MAIL FROM:<a@x.test> SIZE=12345\r\n"),
        ({"body": "7BIT"}, b"MAIL FROM:<a@x.test> BODY=7BIT\r\n"),
        ({"body": "8BITMIME"}, b"MAIL FROM:<a@x.test> BODY=8BITMIME\r\n"),
        ({"body": "BINARYMIME"}, b"MAIL FROM:<a@x.test> BODY=BINARYMIME\r\n"),
        ({"smtputf8": True}, b"MAIL FROM:<a@x.test> SMTPUTF8\r\n"),
        ({"ret": "FULL"}, b"MAIL FROM:<a@x.test> RET=FULL\r\n"),
        ({"ret": "HDRS"}, b"MAIL FROM:<a@x.test> RET=HDRS\r\n"),
        ({"envid": "QQ314159"}, b"MAIL FROM:<a@x.test> ENVID=QQ314159\r\n"),
        ({"envid": "a+b=c d"}, b"MAIL FROM:<a@x.test> ENVID=a+2Bb+3Dc+20d\r\n"),
        ({"envid": "é"}, b"MAIL FROM:<a@x.test> ENVID=+C3+A9\r\n"),
        ({"requiretls": True}, b"MAIL FROM:<a@x.test> REQUIRETLS\r\n"),
        ({"mt_priority": -9}, b"MAIL FROM:<a@x.test> MT-PRIORITY=-9\r\n"),
        ({"mt_priority": 9}, b"MAIL FROM:<a@x.test> MT-PRIORITY=9\r\n"),
        ({"auth": "<>"}, b"MAIL FROM:<a@x.test> AUTH=<>\r\n"),
        ({"auth": "e+e@x.test"}, b"MAIL FROM:<a@x.test> AUTH=e+2Be@x.test\r\n"),
        ({"extra": {"X-FLAG": None}}, b"MAIL FROM:<a@x.test> X-FLAG\r\n"),
        ({"extra": {"X-K": "v1", "X-L": "v2"}}, b"MAIL FROM:<a@x.test> X-K=v1 X-L=v2\r\n"),
        (
            {"size": 5, "body": "8BITMIME", "smtputf8": True, "ret": "HDRS", "envid": "e"},
            b"MAIL FROM:<a@x.test> SIZE=5 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=e\r\n",
        ),
    ],
)
def test_mail_on_the_wire(kwargs: dict[str, Any], wire: bytes) -> None:
    kwargs.setdefault("sender", "a@x.test")
    mail = Mail(**kwargs)
    assert mail.to_bytes() == wire
    assert mail.transcript_line() == wire.decode().rstrip("\r\n")
    assert mail.verb is Verb.MAIL


def test_mail_utf8_sender() -> None:
    mail = Mail(sender="jörg@bücher.test", smtputf8=True)
    assert mail.needs_smtputf8
    assert (
        mail.to_bytes(smtputf8=True) == "MAIL FROM:<jörg@xn--bcher-kva.test> SMTPUTF8\r\n".encode()
    )
    with pytest.raises(UnicodeEncodeError):
        mail.to_bytes()
    # A non-ASCII domain alone goes as A-labels and needs no SMTPUTF8.
    assert not Mail(sender="a@bücher.test").needs_smtputf8
    assert not Mail(sender="").needs_smtputf8
    assert Mail(sender="").mailbox is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": -1},
        {"size": True},
        {"size": 1.5},
        {"size": "10"},
        {"body": "8bitmime"},
        {"body": "QUOTED"},
        {"ret": "ALL"},
        {"mt_priority": 10},
        {"mt_priority": -10},
        {"mt_priority": True},
        {"mt_priority": 1.0},
        {"extra": {"": "v"}},
        {"extra": {"-X": "v"}},
        {"extra": {"X": ""}},
        {"extra": {"X": "a=b"}},
        {"extra": {"X": "a b"}},
        {"extra": {"X": "é"}},
        {"extra": {"SIZE": "1"}},
        {"extra": {"body": "8BITMIME"}},
        {"extra": {"SMTPUTF8": None}},
        {"extra": {"Auth": "<>"}},
    ],
)
def test_mail_refuses_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        Mail(sender="a@x.test", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "wire"),
    [
        ({}, b"RCPT TO:<b@x.test>\r\n"),
        ({"recipient": "<b@x.test>"}, b"RCPT TO:<b@x.test>\r\n"),
        ({"notify": "NEVER"}, b"RCPT TO:<b@x.test> NOTIFY=NEVER\r\n"),
        (
            {"notify": frozenset({"DELAY", "SUCCESS"})},
            b"RCPT TO:<b@x.test> NOTIFY=SUCCESS,DELAY\r\n",
        ),
        ({"notify": ["FAILURE"]}, b"RCPT TO:<b@x.test> NOTIFY=FAILURE\r\n"),
        (
            {"notify": {"FAILURE", "DELAY", "SUCCESS"}},
            b"RCPT TO:<b@x.test> NOTIFY=SUCCESS,FAILURE,DELAY\r\n",
        ),
        ({"orcpt": "b+1@x.test"}, b"RCPT TO:<b@x.test> ORCPT=rfc822;b+2B1@x.test\r\n"),
        # RFC 6533: the utf-8 form escapes as \x{HEX}, never as xtext's +HH.
        (
            {"orcpt": "jö+=\\@x.test"},
            b"RCPT TO:<b@x.test> ORCPT=utf-8;j\\x{F6}\\x{2B}\\x{3D}\\x{5C}@x.test\r\n",
        ),
        ({"extra": {"X-Y": None}}, b"RCPT TO:<b@x.test> X-Y\r\n"),
    ],
)
def test_rcpt_on_the_wire(kwargs: dict[str, Any], wire: bytes) -> None:
    kwargs.setdefault("recipient", "b@x.test")
    rcpt = Rcpt(**kwargs)
    assert rcpt.to_bytes() == wire
    assert rcpt.verb is Verb.RCPT


@pytest.mark.parametrize(
    "kwargs",
    [
        {"recipient": ""},
        {"recipient": "<>"},
        {"notify": "SUCCESS"},
        {"notify": frozenset()},
        {"notify": {"NEVER", "SUCCESS"}},
        {"notify": {"SOMETIMES"}},
        {"extra": {"NOTIFY": "NEVER"}},
        {"extra": {"orcpt": "rfc822;x@y"}},
    ],
)
def test_rcpt_refuses_bad_parameters(kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("recipient", "b@x.test")
    with pytest.raises(InvalidInputError):
        Rcpt(**kwargs)


def test_rcpt_utf8() -> None:
    rcpt = Rcpt(recipient="ü@x.test")
    assert rcpt.needs_smtputf8
    assert rcpt.to_bytes(smtputf8=True) == "RCPT TO:<ü@x.test>\r\n".encode()
    assert not Rcpt(recipient="u@bücher.test").needs_smtputf8


@pytest.mark.parametrize(
    ("command", "wire", "verb"),
    [
        (Data(), b"DATA\r\n", Verb.DATA),
        (Rset(), b"RSET\r\n", Verb.RSET),
        (Quit(), b"QUIT\r\n", Verb.QUIT),
        (StartTLS(), b"STARTTLS\r\n", Verb.STARTTLS),
        (Noop(), b"NOOP\r\n", Verb.NOOP),
        (Noop("ping"), b"NOOP ping\r\n", Verb.NOOP),
        (Help(), b"HELP\r\n", Verb.HELP),
        (Help("MAIL"), b"HELP MAIL\r\n", Verb.HELP),
        (Vrfy("postmaster"), b"VRFY postmaster\r\n", Verb.VRFY),
        (Expn("staff"), b"EXPN staff\r\n", Verb.EXPN),
        # RFC 5321 String: an Atom as is, anything else as a Quoted-string,
        # so the argument can never add a parameter of its own.
        (Vrfy("postmaster SMTPUTF8"), b'VRFY "postmaster SMTPUTF8"\r\n', Verb.VRFY),
        (Vrfy('a"b\\c'), b'VRFY "a\\"b\\\\c"\r\n', Verb.VRFY),
        (Expn("staff", smtputf8=True), b"EXPN staff SMTPUTF8\r\n", Verb.EXPN),
        (Noop("hi there"), b'NOOP "hi there"\r\n', Verb.NOOP),
        (Help("MAIL FROM"), b'HELP "MAIL FROM"\r\n', Verb.HELP),
        (AuthCancel(), b"*\r\n", Verb.AUTH_CANCEL),
        (Auth("plain"), b"AUTH PLAIN\r\n", Verb.AUTH),
        (Auth("PLAIN", b""), b"AUTH PLAIN =\r\n", Verb.AUTH),
        (Auth("PLAIN", b"\0u\0p"), b"AUTH PLAIN AHUAcA==\r\n", Verb.AUTH),
        (AuthResponse(b"secret"), b"c2VjcmV0\r\n", Verb.AUTH_RESPONSE),
        (AuthResponse(b""), b"\r\n", Verb.AUTH_RESPONSE),
        (Bdat(b"abc"), b"BDAT 3\r\nabc", Verb.BDAT),
        (Bdat(b"abc", last=True), b"BDAT 3 LAST\r\nabc", Verb.BDAT_LAST),
        (Bdat(b"", last=True), b"BDAT 0 LAST\r\n", Verb.BDAT_LAST),
    ],
)
def test_simple_commands_on_the_wire(command: Command, wire: bytes, verb: Verb) -> None:
    assert command.to_bytes() == wire
    assert command.verb is verb


def test_text_commands() -> None:
    assert Vrfy("jörg").needs_smtputf8
    assert Vrfy("jörg").to_bytes(smtputf8=True) == "VRFY jörg\r\n".encode()
    assert not Noop("plain").needs_smtputf8
    with pytest.raises(UnicodeEncodeError):
        Vrfy("jörg").to_bytes()
    for empty in ("", "   "):
        with pytest.raises(InvalidInputError, match="needs an argument"):
            Vrfy(empty)
        with pytest.raises(InvalidInputError, match="needs an argument"):
            Expn(empty)


def test_lookups_can_ask_for_smtputf8() -> None:
    assert Vrfy("jörg", smtputf8=True).to_bytes(smtputf8=True) == "VRFY jörg SMTPUTF8\r\n".encode()
    # The parameter alone needs the server's SMTPUTF8, even for an ASCII argument.
    assert Expn("staff", smtputf8=True).needs_smtputf8
    assert not Expn("staff").needs_smtputf8


@pytest.mark.parametrize(
    ("build", "attribute"),
    [
        (lambda v: MessageData(v), "data"),
        (lambda v: Bdat(v), "data"),
        (lambda v: Bdat(v, last=True), "data"),
        (lambda v: AuthResponse(v), "data"),
        (lambda v: Auth("PLAIN", v), "initial_response"),
    ],
)
def test_octet_arguments_take_bytes_like_only(build: Any, attribute: str) -> None:
    for bad in ("text", 42, [97, 98]):
        with pytest.raises(InvalidInputError, match="must be bytes"):
            build(bad)
    # bytearray and memoryview are copied into bytes: changing the source later
    # changes nothing that goes on the wire.
    for kind in (bytearray, memoryview):
        source = bytearray(b"abc")
        command = build(kind(source) if kind is memoryview else source)
        source[0:1] = b"z"
        octets = getattr(command, attribute)
        assert type(octets) is bytes and octets == b"abc"


@pytest.mark.parametrize(
    "build",
    [
        lambda: Mail(sender="a@x.test", envid=""),
        lambda: Mail(sender="a@x.test", auth=""),
        lambda: Rcpt(recipient="b@x.test", orcpt=""),
    ],
)
def test_empty_dsn_and_auth_parameters_are_refused(build: Any) -> None:
    with pytest.raises(InvalidInputError, match="must not be empty"):
        build()


def test_content_commands_have_no_line_of_their_own() -> None:
    with pytest.raises(NotImplementedError):
        MessageData(b"x").to_bytes()
    with pytest.raises(NotImplementedError):
        EndOfData().to_bytes()
    assert MessageData(b"hello").transcript_line() == "<5 octets of content>"
    assert EndOfData().transcript_line() == "."
    assert MessageData(b"x").verb is Verb.MESSAGE_DATA
    assert EndOfData().verb is Verb.END_OF_DATA
    assert Bdat(b"hello", last=True).transcript_line() == "BDAT 5 LAST <5 octets>"
    assert Bdat(b"hi").transcript_line() == "BDAT 2 <2 octets>"


def test_secrets_never_in_transcripts_or_reprs() -> None:
    auth = Auth("PLAIN", b"\0user\0hunter2")
    assert auth.transcript_line() == "AUTH PLAIN <redacted>"
    assert Auth("LOGIN").transcript_line() == "AUTH LOGIN"
    assert Auth("PLAIN", b"").transcript_line() == "AUTH PLAIN <redacted>"
    for shown in (repr(auth), str(auth)):
        assert "hunter2" not in shown
        assert "AHVzZXIAaHVudGVyMg" not in shown
    response = AuthResponse(b"hunter2")
    assert response.transcript_line() == "<redacted>"
    assert "hunter2" not in repr(response)
    assert "aHVudGVyMg" not in repr(response)
    assert "secret-body" not in repr(MessageData(b"secret-body"))
    assert "secret-body" not in repr(Bdat(b"secret-body"))
    assert AuthCancel().transcript_line() == "*"


def test_auth_without_initial_response() -> None:
    auth = Auth("plain", b"x" * 600)
    bare = auth.without_initial_response()
    assert bare.mechanism == "PLAIN"
    assert bare.initial_response is None
    assert bare.to_bytes() == b"AUTH PLAIN\r\n"


@pytest.mark.parametrize("name", ["", "PLAIN LOGIN", "-X", "SCRAM_SHA"])
def test_auth_refuses_bad_mechanism_names(name: str) -> None:
    with pytest.raises(InvalidInputError):
        Auth(name)


def test_commands_are_frozen() -> None:
    mail = Mail(sender="a@x.test")
    with pytest.raises(AttributeError):
        mail.sender = "evil@x.test"  # type: ignore[misc]
    rcpt = Rcpt(recipient="b@x.test", extra={"X-A": "1"})
    with pytest.raises(TypeError):
        rcpt.extra["X-B"] = "2"  # type: ignore[index]
