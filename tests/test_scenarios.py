"""Realistic server transcripts replayed into a Connection, whole and byte by byte."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from smtpbee._commands import (
    Auth,
    Command,
    Data,
    Ehlo,
    EndOfData,
    Help,
    Mail,
    MessageData,
    Quit,
    Rcpt,
    StartTLS,
)
from smtpbee._connection import Connection
from smtpbee._errors import RemoteProtocolError
from smtpbee._events import (
    NEED_DATA,
    PAUSED,
    ContentRequested,
    Event,
    GreetingReceived,
    ReplyReceived,
)
from smtpbee._replies import EnhancedStatus
from smtpbee._state import State

POSTFIX = (
    b"220 mail.example.org ESMTP Postfix (Debian/GNU)\r\n",
    b"250-mail.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
    b"250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n"
    b"250 CHUNKING\r\n",
)
EXIM = (
    b"220-mx.example.net ESMTP Exim 4.96 Mon, 01 Jan 2024 12:00:00 +0000\r\n"
    b"220-We do not authorize the use of this system to transport unsolicited,\r\n"
    b"220 and/or bulk e-mail.\r\n",
    b"250-mx.example.net Hello client.test [192.0.2.7]\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
    b"250-PIPELINING\r\n250-PIPE_CONNECT\r\n250-AUTH PLAIN LOGIN\r\n250-CHUNKING\r\n"
    b"250-STARTTLS\r\n250-PRDR\r\n250 HELP\r\n",
)
OUTLOOK = (
    b"220 AM0PR01CA0001.outlook.office365.com Microsoft ESMTP MAIL Service ready at "
    b"Mon, 1 Jan 2024 12:00:00 +0000 [08DC0000AAAA0000]\r\n",
    b"250-AM0PR01CA0001.outlook.office365.com Hello [192.0.2.7]\r\n250-SIZE 157286400\r\n"
    b"250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-AUTH LOGIN XOAUTH2\r\n"
    b"250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
)
GMAIL = (
    b"220 smtp.gmail.com ESMTP a1-20020a05600c000000b0040e000000000sm0000000wmq.0 - gsmtp\r\n",
    b"250-smtp.gmail.com at your service, [192.0.2.7]\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n"
    b"250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
)
OLD_AUTH = (
    b"220 legacy.example.com ESMTP\r\n",
    b"250-legacy.example.com\r\n250-AUTH=LOGIN\r\n250-AUTH LOGIN PLAIN\r\n250-size 1000000\r\n"
    b"250-pipelining\r\n250 8BITMIME\r\n",
)


@dataclass
class Step:
    """Commands to send, then the server's bytes that answer them."""

    commands: list[Command]
    server: bytes


def replay(
    steps: list[Step], split: bool, conn: Connection | None = None
) -> tuple[Connection, list[Event]]:
    conn = conn or Connection()
    events: list[Event] = []
    for step in steps:
        if step.commands:
            conn.send_all(step.commands)
        pieces = (
            [step.server[i : i + 1] for i in range(len(step.server))] if split else [step.server]
        )
        for piece in pieces:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                assert isinstance(event, Event)
                events.append(event)
    return conn, events


def transaction(ehlo: bytes, greeting: bytes) -> list[Step]:
    return [
        Step([], greeting),
        Step([Ehlo("client.test")], ehlo),
        Step(
            [
                Mail(sender="a@client.test", size=20),
                Rcpt(recipient="b@example.org"),
                Rcpt(recipient="c@example.org"),
                Data(),
            ],
            b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
            b"550 5.1.1 <c@example.org>: Recipient address rejected: "
            b"User unknown in virtual mailbox table\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
        ),
        Step(
            [MessageData(b"Subject: t\r\n\r\nhi\r\n"), EndOfData()],
            b"250 2.0.0 Ok: queued as 4TxYz12AbC\r\n",
        ),
        Step([Quit()], b"221 2.0.0 Bye\r\n"),
    ]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(
    ("name", "greeting", "ehlo", "mechanisms", "size"),
    [
        ("postfix", *POSTFIX, frozenset(), 10240000),
        ("exim", *EXIM, {"PLAIN", "LOGIN"}, 52428800),
        ("outlook", *OUTLOOK, {"LOGIN", "XOAUTH2"}, 157286400),
        (
            "gmail",
            *GMAIL,
            {"LOGIN", "PLAIN", "XOAUTH2", "PLAIN-CLIENTTOKEN", "OAUTHBEARER", "XOAUTH"},
            35882577,
        ),
        ("old-auth", *OLD_AUTH, {"LOGIN", "PLAIN"}, 1000000),
    ],
)
def test_real_servers(
    name: str, greeting: bytes, ehlo: bytes, mechanisms: frozenset[str], size: int, split: bool
) -> None:
    conn, events = replay(transaction(ehlo, greeting), split)
    assert isinstance(events[0], GreetingReceived)
    assert events[0].reply.lines[-1] == greeting.split(b"\r\n")[-2][4:]
    assert conn.extensions.auth_mechanisms == mechanisms
    assert conn.extensions.size_limit == size
    assert conn.pipelining
    replies = [e for e in events if isinstance(e, ReplyReceived)]
    assert [r.reply.code for r in replies] == [250, 250, 250, 550, 250, 221]
    assert [r.accepted for r in replies] == [True, True, True, False, True, True]
    assert replies[3].reply.enhanced == EnhancedStatus(5, 1, 1)
    assert "User unknown" in replies[3].reply.text
    # The 354 to DATA asks for the content: an event of its own, between the
    # envelope's replies and the content's.
    assert [type(e) for e in events[4:7]] == [ReplyReceived, ContentRequested, ReplyReceived]
    invitation = events[5]
    assert isinstance(invitation, ContentRequested)
    assert invitation.reply.code == 354 and invitation.command == Data()
    assert conn.state is State.CLOSING
    assert events == replay(transaction(ehlo, greeting), not split)[1]


def test_postfix_starttls_then_auth() -> None:
    conn, _ = replay([Step([], POSTFIX[0]), Step([Ehlo("client.test")], POSTFIX[1])], split=False)
    conn.send(StartTLS())
    replay([Step([], b"220 2.0.0 Ready to start TLS\r\n")], split=True, conn=conn)
    assert conn.state is State.TLS_HANDSHAKE
    conn.tls_established()
    after_tls = POSTFIX[1].replace(b"250-STARTTLS\r\n", b"250-AUTH PLAIN LOGIN\r\n")
    replay([Step([Ehlo("client.test")], after_tls)], split=True, conn=conn)
    assert not conn.extensions.starttls
    assert conn.extensions.auth_mechanisms == {"PLAIN", "LOGIN"}
    conn.send(Auth("PLAIN", b"\0user\0pw"))
    _, events = replay(
        [Step([], b"235 2.7.0 Authentication successful\r\n")], split=True, conn=conn
    )
    assert [e.reply.code for e in events if isinstance(e, ReplyReceived)] == [235]
    assert conn.authenticated


@pytest.mark.parametrize(
    "greeting",
    [
        b"220 mx ESMTP\n",  # bare LF
        b"220\r\n",  # code alone
        b"220  extra  spaces  \r\n",
        b"220 \xc3\xa9\xff binary text\r\n",
    ],
)
def test_lenient_greetings(greeting: bytes) -> None:
    for split in (False, True):
        conn, events = replay([Step([], greeting)], split)
        assert isinstance(events[0], GreetingReceived)
        assert conn.state is State.CONNECTED


@pytest.mark.parametrize(
    "hostile",
    [
        b"HTTP/1.1 400 Bad Request\r\n",
        b"\x16\x03\x01\x00",
        b"220-mx\r\n250 mismatched code\r\n",
        b"22 short\r\n",
        b"220" + b"x" * 5000 + b"\r\n",
    ],
)
def test_hostile_greetings(hostile: bytes) -> None:
    for split in (False, True):
        with pytest.raises(RemoteProtocolError):
            replay([Step([], hostile)], split)


def test_pipelined_outlook_session_with_two_transactions() -> None:
    def build(to: str) -> list[Command]:
        return [
            Mail(sender="a@client.test"),
            Rcpt(recipient=to),
            Data(),
        ]

    steps = [
        Step([], OUTLOOK[0]),
        Step([Ehlo("client.test")], OUTLOOK[1]),
        Step(
            build("b@example.org"),
            b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
            b"354 Start mail input; end with <CRLF>.<CRLF>\r\n",
        ),
        Step(
            [MessageData(b"one\r\n"), EndOfData(), *build("c@example.org")],
            b"250 2.6.0 <id1@client.test> [InternalId=1] Queued mail for delivery\r\n"
            b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 Start mail input\r\n",
        ),
        Step(
            [MessageData(b"two\r\n"), EndOfData(), Quit()],
            b"250 2.6.0 Queued\r\n221 2.0.0 Service closing transmission channel\r\n",
        ),
    ]
    conn, events = replay(steps, split=False)
    assert [e.reply.code for e in events if isinstance(e, ReplyReceived)] == [
        250,
        250,
        250,
        250,
        250,
        250,
        250,
        221,
    ]
    invitations = [e for e in events if isinstance(e, ContentRequested)]
    assert [(e.reply.code, e.command) for e in invitations] == [(354, Data()), (354, Data())]
    assert replay(steps, split=True)[1] == events
    assert conn.state is State.CLOSING


def test_aiosmtpd_help_250_is_a_protocol_violation() -> None:
    # aiosmtpd answers HELP with 250; RFC 5321 §4.3.2 lists only 211 and 214.
    aiosmtpd = (
        b"220 host.test Python SMTP 1.4.4\r\n",
        b"250-host.test\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 HELP\r\n",
    )
    for split in (False, True):
        conn, _ = replay([Step([], aiosmtpd[0]), Step([Ehlo("client.test")], aiosmtpd[1])], split)
        with pytest.raises(RemoteProtocolError, match="250 is not a valid reply to HELP"):
            replay(
                [Step([Help()], b"250 Supported commands: DATA EHLO HELO HELP MAIL\r\n")],
                split,
                conn=conn,
            )
        assert conn.state is State.ERROR and not conn.open
    # The answer the RFC lists is a success.
    conn, _ = replay([Step([], aiosmtpd[0]), Step([Ehlo("client.test")], aiosmtpd[1])], False)
    _, events = replay([Step([Help()], b"214 2.0.0 see RFC 5321\r\n")], False, conn=conn)
    assert isinstance(events[0], ReplyReceived) and events[0].accepted
    assert conn.state is State.READY
