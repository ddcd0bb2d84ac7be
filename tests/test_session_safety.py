"""The session's safety promises, each pinned by a regression test on the core alone.

smtpbee.testing's procedure driver plays the transport: it answers each request of
a procedure from a scripted server (a handler table; a stall is a timeout, a reset
a lost connection, on a virtual clock) and records what the client wrote. Each test
names the failure it guards against: success only on the codes a command's rule
lists, a reply only for a command sent before it arrived, every protocol violation
fatal, the outcome unknown once content is out, results kept when a batch ends
early, escaped server text, the TLS handshake's own deadline, and AUTH over
verified TLS however TLS began.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from smtpbee import (
    NEED_DATA,
    AuthenticationIncomplete,
    BodyInfo,
    ClientSession,
    Command,
    Connection,
    ConnectionLostError,
    Data,
    Ehlo,
    EndOfData,
    Expn,
    Help,
    InsecureAuthenticationError,
    InvalidInputError,
    LocalProtocolError,
    Mail,
    MailJob,
    MessageData,
    MessageTooLargeError,
    Noop,
    OutcomeUnknownError,
    Phase,
    Poll,
    Quit,
    Rcpt,
    RemoteProtocolError,
    SendResult,
    SMTPTimeoutError,
    StartTLS,
    State,
    Timeouts,
    TLSMode,
    TransientReplyError,
    UpgradeTLS,
    Verb,
    Vrfy,
)
from smtpbee._commands import Auth, AuthCancel
from smtpbee.testing import (
    DEFAULT,
    Handler,
    ProcedureDriver,
    ScriptedServer,
    close,
    replies,
    reply,
    reset,
    stall,
    start_tls,
)

GREETING = b"220 mx.test ESMTP\r\n"
EHLO_AUTH = b"250-mx.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"
AUTH = ["PIPELINING", "STARTTLS", "AUTH PLAIN LOGIN"]
TLS = ["PIPELINING", "AUTH PLAIN LOGIN XOAUTH2"]
CHUNKING = ["PIPELINING", "CHUNKING"]
BODY = b"Subject: s\r\n\r\nbody\r\n"


def server(
    handlers: dict[str, Handler] | None = None,
    extensions: list[str] = AUTH,
    *,
    tls: Any = "starttls",
    tls_verified: bool = True,
) -> ProcedureDriver:
    """A driver for a scripted mx.test offering ``extensions`` (user/secret may log in)."""
    scripted = ScriptedServer(
        handlers,
        greeting=GREETING,
        hostname="mx.test",
        extensions=extensions,
        tls=tls,
        users={"user": "secret"},
    )
    return scripted.driver(tls_verified=tls_verified)


def opened(
    handlers: dict[str, Handler] | None = None,
    extensions: list[str] = AUTH,
    tls: TLSMode = TLSMode.NONE,
    **kwargs: Any,
) -> tuple[ClientSession, ProcedureDriver]:
    """A session opened against mx.test; the driver's record starts after the opening."""
    session = ClientSession(local_hostname="client.test", tls=tls, **kwargs)
    wire = server(handlers, extensions)
    wire.run(session.open())
    wire.requests.clear()
    return session, wire


def connection(ehlo: bytes = EHLO_AUTH) -> Connection:
    conn = Connection()
    conn.receive_data(GREETING)
    conn.next_event()
    conn.send(Ehlo("client.test"))
    conn.receive_data(ehlo)
    conn.next_event()
    return conn


# ----------------------------------------------------------------------------
# AUTH over TLS that was verified, however TLS began


def test_implicit_tls_handshakes_first_and_auth_then_goes_ahead() -> None:
    session = ClientSession(local_hostname="client.test", tls=TLSMode.IMPLICIT)
    wire = server(extensions=TLS, tls="implicit")
    wire.run(session.open())
    assert isinstance(wire.requests[0], UpgradeTLS)
    assert session.tls_verified and session.conn.tls_active
    wire.requests.clear()
    assert wire.run(session.login("user", "secret")).code == 235
    assert wire.written.startswith(b"AUTH PLAIN ")
    assert all(entry.tls for entry in wire.transcript)


def test_auth_over_unverified_implicit_tls_is_refused_with_the_reason() -> None:
    session = ClientSession(local_hostname="client.test", tls=TLSMode.IMPLICIT)
    wire = server(extensions=TLS, tls="implicit", tls_verified=False)
    wire.run(session.open())
    wire.requests.clear()
    with pytest.raises(InsecureAuthenticationError, match="not verified") as caught:
        wire.run(session.login("user", "secret"))
    assert caught.value.over == "unverified TLS"
    assert wire.written == b""
    assert session.conn.state is State.READY


def test_the_tls_handshake_has_its_own_deadline() -> None:
    timeouts = Timeouts(tls_handshake=7.5)
    session = ClientSession(local_hostname="c.test", tls=TLSMode.IMPLICIT, timeouts=timeouts)
    wire = server(extensions=TLS, tls="implicit")
    wire.run(session.open())
    assert wire.requests[0] == UpgradeTLS(7.5)


def test_a_failed_handshake_ends_the_session() -> None:
    session = ClientSession(local_hostname="c.test", tls=TLSMode.STARTTLS)
    # 220 to STARTTLS, then the server never takes part in the handshake.
    wire = server({"STARTTLS": ["220 go", stall()]})
    with pytest.raises(SMTPTimeoutError, match="TLS handshake"):
        wire.run(session.open())
    assert isinstance(wire.requests[-1], UpgradeTLS)
    assert session.conn.state is State.ERROR


# ----------------------------------------------------------------------------
# Success is the exact code the command's rule lists


def test_221_to_starttls_never_starts_a_handshake() -> None:
    session = ClientSession(local_hostname="client.test", tls=TLSMode.STARTTLS)
    wire = server({"STARTTLS": "221 2.0.0 bye"})
    with pytest.raises(TransientReplyError, match="service closing"):
        wire.run(session.open())
    assert not any(isinstance(r, UpgradeTLS) for r in wire.requests)
    assert session.conn.state is State.CLOSING and not session.conn.open


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (Mail(sender="a@x.test"), b"220 hello\r\n"),
        (Mail(sender="a@x.test"), b"252 maybe\r\n"),
        (Ehlo("client.test"), b"220 hello\r\n"),
        (Quit(), b"250 ok\r\n"),
        (Noop(), b"235 ok\r\n"),
        (Help(), b"250 help\r\n"),
        (Vrfy("postmaster"), b"211 status\r\n"),
        (Expn("staff"), b"251 forward\r\n"),
        (StartTLS(), b"250 ok\r\n"),
    ],
    ids=lambda value: repr(value)[:30],
)
def test_a_2xx_the_rule_does_not_list_is_a_violation(command: Any, reply: bytes) -> None:
    conn = connection()
    conn.send(command)
    conn.receive_data(reply)
    with pytest.raises(RemoteProtocolError, match="is not a valid reply"):
        conn.next_event()
    assert conn.state is State.ERROR


def test_221_to_mail_means_the_server_is_closing() -> None:
    conn = connection()
    conn.send(Mail(sender="a@x.test"))
    conn.receive_data(b"221 bye\r\n")
    event = conn.next_event()
    assert getattr(event, "closing", False)
    assert conn.state is State.CLOSING


def test_235_to_an_auth_cancel_is_a_violation() -> None:
    conn = connection()
    conn.send(Auth("LOGIN"))
    conn.receive_data(b"334 VXNlcm5hbWU6\r\n")
    conn.next_event()
    conn.send(AuthCancel())
    conn.receive_data(b"235 2.7.0 welcome\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert not conn.authenticated


def test_2xx_to_data_is_a_violation_and_354_is_its_own_event() -> None:
    conn = connection()
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Data()])
    conn.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n")
    conn.next_event()
    conn.next_event()
    with pytest.raises(RemoteProtocolError, match="250 is not a valid reply to DATA"):
        conn.next_event()


# ----------------------------------------------------------------------------
# A reply only answers a command sent before it arrived


def test_bytes_waiting_when_nothing_is_pending_refuse_the_next_command() -> None:
    conn = connection()
    conn.receive_data(b"235 2.7.0 ok\r\n")
    with pytest.raises(RemoteProtocolError, match="nothing asked for"):
        conn.send(Auth("PLAIN", b"\0u\0p"))
    assert conn.state is State.ERROR
    with pytest.raises(LocalProtocolError):
        conn.send(Noop())


def test_an_unasked_421_is_left_for_next_event() -> None:
    conn = connection()
    conn.receive_data(b"421 4.3.2 shutting down\r\n")
    with pytest.raises(LocalProtocolError, match="421"):
        conn.send(Noop())
    event = conn.next_event()
    assert getattr(event, "closing", False) and conn.state is State.CLOSING


def test_replies_pushed_after_the_handshake_are_found_before_ehlo() -> None:
    # The server pushes an EHLO answer and a 235 before the client's EHLO.
    pushed = b"250-x\r\n250 AUTH PLAIN\r\n235 2.7.0 ok\r\n"
    session = ClientSession(local_hostname="client.test", tls=TLSMode.STARTTLS)
    wire = server({"STARTTLS": ["220 go", start_tls(), pushed]})
    with pytest.raises(RemoteProtocolError, match="nothing asked for"):
        wire.run(session.open())
    assert isinstance(wire.requests[-1], Poll)
    assert wire.written.count(b"EHLO") == 1  # only the one before STARTTLS
    assert session.conn.state is State.ERROR


def test_replies_pushed_with_the_ehlo_answer_never_answer_auth() -> None:
    # The same bytes, arriving together with the answer to EHLO: the 235 is
    # found when AUTH would be sent, and AUTH is never written.
    session = ClientSession(local_hostname="client.test", tls=TLSMode.STARTTLS)
    pushed = b"250-x\r\n250 AUTH PLAIN\r\n235 2.7.0 ok\r\n"
    wire = server({"EHLO": replies(DEFAULT, pushed)})
    wire.run(session.open())
    wire.requests.clear()
    with pytest.raises(RemoteProtocolError, match="nothing asked for"):
        wire.run(session.login("user", "secret"))
    assert b"AUTH" not in wire.written
    assert not session.conn.authenticated or session.conn.state is State.ERROR
    assert session.conn.state is State.ERROR


def test_a_prompt_and_a_235_in_one_read_never_authenticate() -> None:
    session, wire = opened({"AUTH": b"334 VXNlcm5hbWU6\r\n235 2.7.0 ok\r\n"})
    with pytest.raises(RemoteProtocolError):
        wire.run(session.login("user", "secret", mechanism="LOGIN", allow_insecure=True))
    assert session.conn.state is State.ERROR
    assert wire.written.count(b"\r\n") == 1  # AUTH LOGIN only: the user name never went out


# ----------------------------------------------------------------------------
# Every RemoteProtocolError ends the session


def test_a_235_before_login_is_done_ends_the_session() -> None:
    session, wire = opened({"AUTH": replies("334 VXNlcm5hbWU6", "235 2.7.0 ok")})
    with pytest.raises(AuthenticationIncomplete):
        wire.run(session.login("user", "secret", mechanism="LOGIN", allow_insecure=True))
    assert session.conn.state is State.ERROR
    with pytest.raises(LocalProtocolError):
        wire.run(session.sendmail("a@x.test", ["b@x.test"], body=BodyInfo()), [BODY])
    assert b"MAIL" not in wire.written


def test_a_235_after_an_xoauth2_error_challenge_ends_the_session() -> None:
    error = base64.b64encode(b'{"status":"401"}')
    session, wire = opened({"AUTH": replies(b"334 " + error + b"\r\n", "235 2.7.0 ok")}, TLS)
    from smtpbee import XOAuth2

    with pytest.raises(AuthenticationIncomplete):
        wire.run(session.authenticate(XOAuth2("user", "token"), allow_insecure=True))
    assert session.conn.state is State.ERROR


# ----------------------------------------------------------------------------
# Content out: the outcome is unknown


def test_a_drop_while_the_mail_reply_of_a_chunked_group_is_awaited_is_outcome_unknown() -> None:
    # The MAIL, RCPT and BDAT group arrives whole; the server resets at MAIL.
    session, wire = opened({"MAIL": reset()}, CHUNKING)
    with pytest.raises(OutcomeUnknownError) as caught:
        wire.run(session.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(BODY)), [BODY])
    assert b"BDAT" in wire.written and BODY in wire.written
    assert isinstance(caught.value.__cause__, ConnectionLostError)
    assert session.conn.state is State.ERROR


def test_a_timeout_on_a_rcpt_reply_after_the_content_is_outcome_unknown() -> None:
    # The MAIL reply comes; the server says no more.
    session, wire = opened({"RCPT": stall()}, CHUNKING)
    with pytest.raises(OutcomeUnknownError):
        wire.run(session.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(BODY)), [BODY])


def test_a_drop_before_any_content_is_a_lost_connection() -> None:
    session, wire = opened({"MAIL": reset()})
    with pytest.raises(ConnectionLostError) as caught:
        wire.run(session.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(BODY)), [BODY])
    assert not isinstance(caught.value, OutcomeUnknownError)


# ----------------------------------------------------------------------------
# A batch that ends early keeps what was settled


def job(recipient: str) -> MailJob:
    return MailJob(sender="a@x.test", recipients=[recipient], body=BodyInfo.of_bytes(BODY))


def test_a_421_in_a_batch_keeps_the_settled_results() -> None:
    # Message 1 is queued; the second MAIL gets 421 and the server closes.
    session, wire = opened({"MAIL": replies(DEFAULT, [reply(421, "4.3.2 closing"), close()])})
    results = wire.run(
        session.send_batch([job("b@x.test"), job("c@x.test"), job("d@x.test")]),
        [BODY, b"", BODY, b"", BODY, b""],
    )
    assert isinstance(results[0], SendResult) and results[0].data is not None
    assert results[0].data.code == 250
    assert isinstance(results[1], TransientReplyError) and results[1].code == 421
    assert isinstance(results[2], TransientReplyError)
    assert len(results) == 3
    assert [m.recipients for m in wire.messages] == [("b@x.test",)]


def test_a_drop_in_a_batch_after_the_content_marks_that_message_unknown() -> None:
    session, wire = opened({"MESSAGE": reset()})
    results = wire.run(
        session.send_batch([job("b@x.test"), job("c@x.test")]), [BODY, b"", BODY, b""]
    )
    assert isinstance(results[0], OutcomeUnknownError)
    assert isinstance(results[1], ConnectionLostError)
    assert not isinstance(results[1], OutcomeUnknownError)


# ----------------------------------------------------------------------------
# Input is checked before anything is produced


def test_a_group_with_a_str_piece_is_refused_whole() -> None:
    with pytest.raises(InvalidInputError, match="must be bytes"):
        MessageData("text")  # type: ignore[arg-type]
    conn = connection()
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Data()])
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    while conn.pending:
        conn.next_event()
    piece = MessageData(bytearray(b"x\r\n"))  # type: ignore[arg-type]
    assert conn.send_all([piece, EndOfData()]) == b"x\r\n.\r\n"


def test_string_arguments_cannot_add_a_parameter() -> None:
    assert Vrfy("postmaster SMTPUTF8").to_bytes() == b'VRFY "postmaster SMTPUTF8"\r\n'
    assert Help('say "hi"').to_bytes() == b'HELP "say \\"hi\\""\r\n'
    assert Noop().to_bytes() == b"NOOP\r\n"
    assert Vrfy("postmaster", smtputf8=True).to_bytes() == b"VRFY postmaster SMTPUTF8\r\n"
    with pytest.raises(InvalidInputError):
        Mail(sender="a@x.test", envid="")
    with pytest.raises(InvalidInputError):
        Mail(sender="a@x.test", auth="")


def test_vrfy_smtputf8_needs_the_server_to_offer_it() -> None:
    conn = connection()
    why = conn.why_not(Vrfy("x").verb)
    assert why is None
    with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
        conn.send(Vrfy("postmaster", smtputf8=True))


def test_a_wrong_mail_option_is_refused_and_the_session_goes_on() -> None:
    session, wire = opened()
    with pytest.raises(InvalidInputError, match=r"'RET'.*: the keys are auth, body"):
        wire.run(
            session.sendmail(
                "a@x.test", ["b@x.test"], body=BodyInfo(), mail_options={"RET": "HDRS"}
            ),
            [BODY],
        )
    assert wire.written == b""
    assert session.conn.state is State.READY
    assert wire.run(session.noop()).code == 250


# ----------------------------------------------------------------------------
# Server text is escaped before a person sees it


def test_transcripts_escape_what_the_server_wrote() -> None:
    lines: list[str] = []
    session = ClientSession(
        local_hostname="client.test",
        tls=TLSMode.NONE,
        transcript=lambda direction, line: lines.append(f"{direction}: {line}"),
    )
    hostile = b"220 mx\x1b[2J\x1b[1A\rC: AUTH PLAIN c2VjcmV0\x9b31m\r\n"
    ScriptedServer({"EHLO": EHLO_AUTH}, greeting=hostile).driver().run(session.open())
    shown = "\n".join(lines)
    assert "\x1b" not in shown and "\r" not in shown and "\x9b" not in shown
    assert r"\x1b[2J" in shown and r"\rC: AUTH" in shown
    assert lines[0].startswith("S: 220 mx")


def test_phase_of_the_tls_handshake() -> None:
    assert Phase.TLS_HANDSHAKE.default_timeout == Timeouts().tls_handshake


def test_a_scram_235_without_the_server_signature_ends_the_session() -> None:
    from smtpbee import ScramSHA256

    salt = base64.b64encode(b"salty").decode()
    first = base64.b64encode(f"r=fixednonceSERVER,s={salt},i=4096".encode())
    auth = replies(b"334 " + first + b"\r\n", "235 2.7.0 welcome")
    session, wire = opened({"AUTH": auth}, ["AUTH SCRAM-SHA-256"])
    mechanism = ScramSHA256("user", "pencil", nonce="fixednonce")
    with pytest.raises(AuthenticationIncomplete):
        wire.run(session.authenticate(mechanism, allow_insecure=True))
    assert session.conn.state is State.ERROR


def test_a_partial_unasked_421_waits_for_next_event() -> None:
    conn = connection()
    conn.receive_data(b"421-4.3.2 going down\r\n")
    assert conn.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError, match="421"):
        conn.send(Noop())
    conn.receive_data(b"421 4.3.2 now\r\n")
    assert getattr(conn.next_event(), "closing", False)


def _impostor(verb: Verb) -> Command:
    """A command that claims a verb without being that verb's class."""
    kind = type("Impostor", (Command,), {"__slots__": (), "_VERB": verb})
    command: Command = kind()
    return command


@pytest.mark.parametrize(
    ("verb", "setup"),
    [
        (Verb.MAIL, []),
        (Verb.RCPT, [Mail(sender="a@x.test")]),
        (Verb.AUTH, []),
        (Verb.BDAT, [Mail(sender="a@x.test"), Rcpt(recipient="b@x.test")]),
    ],
)
def test_a_command_that_is_not_its_verbs_class_is_refused(verb: Verb, setup: list[Any]) -> None:
    conn = connection(b"250-mx.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 AUTH PLAIN\r\n")
    if setup:
        conn.send_all(setup)
        conn.receive_data(b"250 ok\r\n" * len(setup))
        while conn.pending:
            conn.next_event()
    with pytest.raises(LocalProtocolError, match="must be a"):
        conn.send(_impostor(verb))
    assert not conn.pending


def test_content_that_is_not_message_data_is_refused() -> None:
    conn = connection()
    conn.send_all([Mail(sender="a@x.test"), Rcpt(recipient="b@x.test"), Data()])
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    while conn.pending:
        conn.next_event()
    with pytest.raises(LocalProtocolError, match="must be a MessageData"):
        conn.send(_impostor(Verb.MESSAGE_DATA))


def test_a_batch_job_refused_locally_lets_the_previous_one_end() -> None:
    session, wire = opened(extensions=["PIPELINING", "SIZE 100"])
    big = MailJob(sender="a@x.test", recipients=["c@x.test"], body=BodyInfo(size=1000))
    results = wire.run(
        session.send_batch([job("b@x.test"), big, job("d@x.test")]),
        [BODY, b"", b"x" * 1000, b"", BODY, b""],
    )
    assert isinstance(results[0], SendResult) and isinstance(results[2], SendResult)
    assert isinstance(results[1], MessageTooLargeError)
    assert b"c@x.test" not in wire.written and wire.written.count(b"\r\n.\r\n") == 2
    assert [m.recipients for m in wire.messages] == [("b@x.test",), ("d@x.test",)]


def test_reply_classes() -> None:
    from smtpbee import Reply

    assert Reply(code=354, lines=(b"go",)).is_intermediate
    assert Reply(code=451, lines=(b"later",)).is_transient
    assert not Reply(code=551, lines=(b"no",)).is_transient


def test_a_421_in_a_lockstep_batch_keeps_the_settled_results() -> None:
    session, wire = opened({"MAIL": replies(DEFAULT, "421 bye")}, ["8BITMIME"])
    results = wire.run(
        session.send_batch([job("b@x.test"), job("c@x.test")]), [BODY, b"", BODY, b""]
    )
    assert isinstance(results[0], SendResult)
    assert isinstance(results[1], TransientReplyError) and results[1].code == 421
    assert session.conn.state is State.CLOSING


def test_the_first_batch_job_refused_locally_sends_nothing() -> None:
    session, wire = opened(extensions=["PIPELINING", "SIZE 100"])
    big = MailJob(sender="a@x.test", recipients=["c@x.test"], body=BodyInfo(size=1000))
    results = wire.run(session.send_batch([big, job("d@x.test")]), [b"x" * 1000, b"", BODY, b""])
    assert isinstance(results[0], MessageTooLargeError)
    assert isinstance(results[1], SendResult)
    assert wire.written.count(b"MAIL FROM") == 1


def test_what_events_and_plain_commands_say() -> None:
    from smtpbee import AuthChallengeReceived, Reply

    assert not Data().needs_smtputf8
    challenge = AuthChallengeReceived(reply=Reply(code=334, lines=(b"",)), challenge=b"")
    assert not challenge.accepted
