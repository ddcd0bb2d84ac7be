"""Session procedures, driven as a transport would: by scripted servers, without a socket.

Each test runs the procedures through `smtpbee.testing.ProcedureDriver`: one
connection to a scripted server (a handler table over the defaults of a
well-behaved server), whose time is virtual: a stalled server is a timeout at
once, a close is the end of the stream, a reset fails the next request.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest
from smtpbee._auth import Plain, SASLMechanism
from smtpbee._commands import Noop
from smtpbee._errors import (
    AuthenticationRejected,
    ConnectionLostError,
    InsecureAuthenticationError,
    InvalidInputError,
    LocalProtocolError,
    MessageTooLargeError,
    OutcomeUnknownError,
    PermanentReplyError,
    RemoteProtocolError,
    SMTPTimeoutError,
    TLSRequiredError,
    TransientReplyError,
    UnsupportedExtensionError,
)
from smtpbee._events import Phase
from smtpbee._procedures import ClientSession
from smtpbee._replies import Reply
from smtpbee._requests import Poll, PullBody, Read, Timeouts, TLSMode, UpgradeTLS, Write
from smtpbee._state import State
from smtpbee._transaction import (
    _TRANSACTIONS_IN_FLIGHT,
    BDAT_CHUNK_SIZE,
    BodyInfo,
    MailJob,
    SendResult,
)
from smtpbee.testing import (
    DEFAULT,
    Command,
    Handler,
    ProcedureDriver,
    Response,
    ScriptedServer,
    ServerSession,
    close,
    pause,
    replies,
    reset,
    stall,
)

BODY = b"Subject: hi\r\n\r\n.dot line\nbare lf\r\n"

MODEL_EXTENSIONS = (
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


def model(
    handlers: Mapping[str, Handler] | None = None,
    *,
    extensions: tuple[str, ...] = MODEL_EXTENSIONS,
    tls: Any = "starttls",
    tls_verified: bool = True,
    tls_error: BaseException | None = None,
    **options: Any,
) -> ProcedureDriver:
    """The model server: every extension, STARTTLS, AUTH PLAIN LOGIN for user/secret."""
    server = ScriptedServer(
        handlers,
        greeting="220 model.test ESMTP ready",
        hostname="model.test",
        extensions=extensions,
        tls=tls,
        users={"user": "secret"},
        **options,
    )
    return server.driver(tls_verified=tls_verified, tls_error=tls_error)


def refusing(*addresses: str) -> dict[str, Handler]:
    """Handlers refusing these recipients with 550 5.1.1."""

    def rcpt(command: Command, session: ServerSession) -> Response:
        if command.address in addresses:
            return f"550 5.1.1 <{command.address}>: Recipient address rejected"
        return DEFAULT

    return {"RCPT": rcpt}


REFUSE_CONTENT: dict[str, Handler] = {"MESSAGE": "554 5.6.0 Message refused"}
REFUSE_EHLO: dict[str, Handler] = {"EHLO": "502 5.5.2 EHLO not understood"}


def lines(wire: ProcedureDriver) -> list[str]:
    """The command lines the server read (AUTH responses left out), without CRLF."""
    return [c.line.decode()[:-2] for c in wire.commands if not c.continuation]


def mail_line(wire: ProcedureDriver) -> str:
    """The MAIL line of the last message delivered."""
    return wire.messages[-1].mail.line.decode()[:-2]


def writes(wire: ProcedureDriver, since: int = 0) -> list[bytes]:
    """What each Write request carried, from request number ``since`` on."""
    return [r.data for r in wire.requests[since:] if isinstance(r, Write)]


def reads(wire: ProcedureDriver) -> int:
    return sum(isinstance(r, Read) for r in wire.requests)


def session(tls: TLSMode = TLSMode.NONE, **kwargs: Any) -> tuple[ClientSession, list[str]]:
    log: list[str] = []
    s = ClientSession(
        local_hostname="client.test",
        tls=tls,
        transcript=lambda d, line: log.append(f"{d}: {line}"),
        **kwargs,
    )
    return s, log


def opened(
    wire: ProcedureDriver, tls: TLSMode = TLSMode.NONE, **kwargs: Any
) -> tuple[ClientSession, list[str]]:
    s, log = session(tls, **kwargs)
    wire.run(s.open())
    return s, log


PIPE = ["PIPELINING", "8BITMIME", "AUTH PLAIN LOGIN"]


def scripted_session(
    handlers: Mapping[str, Handler] | None = None,
    *,
    extensions: list[str] = PIPE,
    **kwargs: Any,
) -> tuple[ClientSession, ProcedureDriver]:
    """A session opened against mx.test (offering ``extensions``), then served by ``handlers``.

    The driver's record of requests starts after the opening, so ``wire.written`` is
    what the next procedures write.
    """
    s, _ = session(**kwargs)
    wire = ScriptedServer(handlers, hostname="mx.test", extensions=extensions).driver()
    wire.run(s.open())
    wire.requests.clear()
    return s, wire


# ----------------------------------------------------------------------
# open(): greeting, EHLO/HELO, STARTTLS policy
# ----------------------------------------------------------------------


def test_open_with_required_starttls() -> None:
    wire = model()
    s, log = session(TLSMode.STARTTLS)
    ext = wire.run(s.open())
    assert s.conn.tls_active and s.tls_verified
    assert "STARTTLS" not in ext
    assert s.extensions_before_tls is not None and s.extensions_before_tls.starttls
    assert lines(wire) == ["EHLO client.test", "STARTTLS", "EHLO client.test"]
    assert [c.tls for c in wire.commands] == [False, False, True]
    assert "C: <TLS handshake done>" in log
    assert s.greeting is not None and s.greeting.code == 220


def test_open_opportunistic_and_none() -> None:
    wire = model()
    s, _ = opened(wire, TLSMode.OPPORTUNISTIC)
    assert s.conn.tls_active
    wire = model(extensions=("PIPELINING",))
    s, _ = opened(wire, TLSMode.OPPORTUNISTIC)
    assert not s.conn.tls_active
    assert lines(wire) == ["EHLO client.test"]
    wire = model()
    s, _ = opened(wire, TLSMode.NONE)
    assert not s.conn.tls_active
    assert lines(wire) == ["EHLO client.test"]


def test_open_implicit_tls_never_starttls() -> None:
    wire = model(tls="implicit")
    s, _ = opened(wire, TLSMode.IMPLICIT)
    assert s.conn.tls_active
    assert lines(wire) == ["EHLO client.test"]
    assert isinstance(wire.requests[0], UpgradeTLS)


def test_tls_required_but_not_offered() -> None:
    wire = model(extensions=("PIPELINING",))
    s, _ = session(TLSMode.STARTTLS)
    with pytest.raises(TLSRequiredError):
        wire.run(s.open())
    assert lines(wire) == ["EHLO client.test", "QUIT"]


@pytest.mark.parametrize("mode", [TLSMode.STARTTLS, TLSMode.OPPORTUNISTIC])
def test_starttls_refused(mode: TLSMode) -> None:
    server = ScriptedServer({"STARTTLS": "454 4.7.0 no TLS today"}, extensions=["STARTTLS"])
    wire = server.driver()
    s, _ = session(mode)
    if mode is TLSMode.STARTTLS:
        with pytest.raises(TLSRequiredError, match="454"):
            wire.run(s.open())
        assert wire.written.endswith(b"STARTTLS\r\nQUIT\r\n")
    else:
        ext = wire.run(s.open())
        assert ext.starttls
        assert not s.conn.tls_active
        assert s.conn.state is State.READY


def test_ehlo_refused_falls_back_to_helo() -> None:
    wire = model(REFUSE_EHLO)
    s, _ = opened(wire, TLSMode.OPPORTUNISTIC)
    assert lines(wire) == ["EHLO client.test", "HELO client.test"]
    assert not s.conn.esmtp


def test_ehlo_refused_with_tls_required() -> None:
    wire = model(REFUSE_EHLO)
    s, _ = session(TLSMode.STARTTLS)
    with pytest.raises(TLSRequiredError, match="EHLO"):
        wire.run(s.open())
    assert lines(wire) == ["EHLO client.test", "QUIT"]


def test_helo_refused_too() -> None:
    wire = ScriptedServer({"EHLO": "500 what", "HELO": "501 no"}).driver()
    s, _ = session(TLSMode.NONE)
    with pytest.raises(PermanentReplyError) as info:
        wire.run(s.open())
    assert info.value.phase == "HELO"


def test_greeting_554_quits() -> None:
    wire = ScriptedServer(greeting="554 5.3.2 go away").driver()
    s, _ = session()
    with pytest.raises(PermanentReplyError) as info:
        wire.run(s.open())
    assert info.value.code == 554
    assert wire.written == b"QUIT\r\n"


def test_greeting_554_then_close() -> None:
    wire = ScriptedServer(greeting=["554 go away", close()]).driver()
    s, _ = session()
    with pytest.raises(PermanentReplyError):
        wire.run(s.open())


@pytest.mark.parametrize("greeting", [b"421 4.3.2 busy\r\n", b"450 4.3.2 try later\r\n"])
def test_greeting_4xx_closes_without_a_word(greeting: bytes) -> None:
    wire = ScriptedServer(greeting=greeting).driver()
    s, _ = session()
    with pytest.raises(TransientReplyError):
        wire.run(s.open())
    assert wire.written == b""
    assert not s.conn.open


def test_closed_before_greeting() -> None:
    wire = ScriptedServer(greeting=close()).driver()
    s, _ = session()
    with pytest.raises(ConnectionLostError, match="greeting"):
        wire.run(s.open())


def test_starttls_injection_through_the_session() -> None:
    injected = b"220 go\r\n250-injected\r\n250 AUTH PLAIN\r\n"
    wire = ScriptedServer({"STARTTLS": injected}, extensions=["STARTTLS"]).driver()
    s, _ = session(TLSMode.STARTTLS)
    with pytest.raises(RemoteProtocolError, match="injection"):
        wire.run(s.open())
    assert s.conn.state is State.ERROR
    assert not any(isinstance(r, UpgradeTLS) for r in wire.requests)


def test_failed_handshake_kills_the_session() -> None:
    wire = model(tls_error=ConnectionLostError("handshake failed"))
    s, _ = session(TLSMode.STARTTLS)
    with pytest.raises(ConnectionLostError, match="handshake failed"):
        wire.run(s.open())
    assert isinstance(wire.requests[-1], UpgradeTLS)
    assert s.conn.state is State.ERROR
    assert wire.session.tls_error is not None and not wire.session.tls


def test_unverified_tls_is_remembered() -> None:
    wire = model(tls_verified=False)
    s, _ = session(TLSMode.STARTTLS)
    wire.run(s.open())
    assert s.conn.tls_active and not s.tls_verified


# ----------------------------------------------------------------------
# AUTH
# ----------------------------------------------------------------------


def test_login_over_verified_tls_picks_plain() -> None:
    wire = model()
    s, log = opened(wire, TLSMode.STARTTLS)
    reply = wire.run(s.login("user", "secret"))
    assert reply.code == 235
    assert s.conn.authenticated
    assert lines(wire)[-1].startswith("AUTH PLAIN ")
    assert wire.session.user == "user"
    assert "C: AUTH PLAIN <redacted>" in log
    assert not any("secret" in line or "c2VjcmV0" in line for line in log)


def test_login_mechanism_named() -> None:
    wire = model()
    s, log = opened(wire, TLSMode.STARTTLS)
    wire.run(s.login("user", "secret", mechanism="login"))
    assert lines(wire)[-1] == "AUTH LOGIN"
    assert [c.continuation for c in wire.commands[-3:]] == [False, True, True]
    assert "S: 334 <challenge>" in log
    assert log.count("C: <redacted>") == 2


@pytest.mark.parametrize("tls", [TLSMode.NONE, TLSMode.STARTTLS])
def test_auth_refused_over_plaintext_or_unverified_tls(tls: TLSMode) -> None:
    wire = model(tls_verified=False)
    s, _ = session(tls)
    wire.run(s.open())
    over = "plaintext" if tls is TLSMode.NONE else "unverified TLS"
    match = "over plaintext" if tls is TLSMode.NONE else "certificate was not verified"
    with pytest.raises(InsecureAuthenticationError, match=match) as info:
        wire.run(s.login("user", "secret"))
    assert info.value.over == over
    assert not any(c.startswith("AUTH") for c in lines(wire))
    assert wire.run(s.login("user", "secret", allow_insecure=True)).code == 235


def test_auth_535_is_rejected_and_nothing_else_is_tried() -> None:
    wire = model()
    s, _ = opened(wire, TLSMode.STARTTLS)
    with pytest.raises(AuthenticationRejected) as info:
        wire.run(s.login("user", "wrong"))
    assert info.value.code == 535
    assert "wrong" not in str(info.value)
    assert [c for c in lines(wire) if c.startswith("AUTH")] == [lines(wire)[-1]]
    assert s.conn.state is State.READY and not s.conn.authenticated
    assert not wire.session.authenticated


def test_auth_454_is_transient() -> None:
    s, wire = scripted_session({"AUTH": "454 4.7.0 try later"})
    with pytest.raises(TransientReplyError) as info:
        wire.run(s.login("u", "p", allow_insecure=True))
    assert not isinstance(info.value, AuthenticationRejected)
    assert info.value.code == 454


def test_auth_bad_base64_challenge_is_cancelled() -> None:
    s, wire = scripted_session({"AUTH": replies("334 !!!notbase64", "501 cancelled")})
    with pytest.raises(RemoteProtocolError, match="base64"):
        wire.run(s.login("u", "p", mechanism="LOGIN", allow_insecure=True))
    assert wire.written == b"AUTH LOGIN\r\n*\r\n"
    # A server that breaks SASL has broken the session: nothing more goes out.
    assert s.conn.state is State.ERROR


def break_writes_containing(wire: ProcedureDriver, marker: bytes) -> None:
    """Make the connection break while the client writes anything holding ``marker``."""

    def fail(data: bytes) -> BaseException | None:
        return ConnectionLostError("connection reset while writing") if marker in data else None

    wire.write_error = fail


def test_failed_write_of_the_terminator_leaves_the_outcome_unknown() -> None:
    s, wire = scripted_session()
    break_writes_containing(wire, b".\r\n")
    with pytest.raises(OutcomeUnknownError, match="may have been accepted"):
        wire.run(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=20)),
            [b"Subject: x\r\n\r\nhi\r\n"],
        )
    assert s.conn.state is State.ERROR
    assert wire.messages == [] and b"hi" not in wire.transcript.client()


def test_failed_write_before_the_terminator_is_a_plain_connection_error() -> None:
    s, wire = scripted_session()
    break_writes_containing(wire, b"NOOP")
    with pytest.raises(ConnectionLostError) as info:
        wire.run(s.noop())
    assert not isinstance(info.value, OutcomeUnknownError)
    assert s.conn.state is State.ERROR


def test_a_reset_is_found_before_anything_more_is_written() -> None:
    # The server resets after its answer to DATA: the client finds it out (looking for
    # replies nothing asked for) before it writes any content, so nothing was delivered.
    s, wire = scripted_session({"DATA": [DEFAULT, reset()]})
    with pytest.raises(ConnectionLostError) as info:
        wire.run(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=20)),
            [b"Subject: x\r\n\r\nhi\r\n"],
        )
    assert not isinstance(info.value, OutcomeUnknownError)
    assert isinstance(wire.requests[-1], Poll)
    assert s.conn.state is State.ERROR


def test_auth_mechanism_refusing_a_challenge_is_cancelled() -> None:
    # PLAIN sent everything up front: another challenge makes no sense.
    s, wire = scripted_session({"AUTH": replies("334 eA==", "501 cancelled")})
    with pytest.raises(RemoteProtocolError, match="PLAIN"):
        wire.run(s.login("u", "p", allow_insecure=True))
    assert wire.written.endswith(b"\r\n*\r\n")


def test_auth_long_initial_response_goes_after_an_empty_challenge() -> None:
    password = "p" * 600
    s, _ = session()
    wire = ScriptedServer(extensions=PIPE, users={"user": password}).driver()
    wire.run(s.open())
    assert wire.run(s.authenticate(Plain("user", password), allow_insecure=True)).code == 235
    written = wire.written.split(b"\r\n")
    assert written[1] == b"AUTH PLAIN"
    assert base64.b64decode(written[2]) == b"\0user\0" + password.encode()
    assert ("S", b"334 \r\n", False) in wire.transcript  # the empty challenge


def test_auth_not_offered() -> None:
    wire = model(extensions=("PIPELINING",))
    s, _ = opened(wire)
    with pytest.raises(UnsupportedExtensionError):
        wire.run(s.login("user", "secret", allow_insecure=True))


def test_auth_failure_details_reach_the_error() -> None:
    class Picky(SASLMechanism):
        name = "PLAIN"
        sends_secret_in_clear = True

        def initial_response(self) -> bytes | None:
            return b"\0u\0p"

        def respond(self, challenge: bytes) -> bytes:  # pragma: no cover - never asked
            raise AssertionError

        @property
        def failure_details(self) -> str | None:
            return "the token expired"

    s, wire = scripted_session({"AUTH": "535 5.7.8 no"})
    with pytest.raises(AuthenticationRejected) as info:
        wire.run(s.authenticate(Picky(), allow_insecure=True))
    assert "the token expired" in info.value.phase


# ----------------------------------------------------------------------
# The mail transaction
# ----------------------------------------------------------------------


def test_pipelined_and_chunked_is_one_write_and_one_read() -> None:
    wire = model()
    s, _ = opened(wire)
    mark, reads_before = len(wire.requests), reads(wire)
    result = wire.run(
        s.sendmail("a@x.test", ["b@x.test", "c@x.test"], body=BodyInfo.of_bytes(BODY)), [BODY]
    )
    written = writes(wire, mark)
    assert len(written) == 1
    assert written[0].startswith(
        b"MAIL FROM:<a@x.test> SIZE=34\r\nRCPT TO:<b@x.test>\r\n"
        b"RCPT TO:<c@x.test>\r\nBDAT 35 LAST\r\n"
    )
    assert reads(wire) - reads_before == 1
    assert result.accepted == ["b@x.test", "c@x.test"]
    assert result.refused == {}
    assert result.data is not None and result.data.code == 250
    assert wire.messages[-1].content == b"Subject: hi\r\n\r\n.dot line\r\nbare lf\r\n"


def test_pipelined_data() -> None:
    wire = model(extensions=("PIPELINING", "8BITMIME", "SIZE 100000"))
    s, log = opened(wire)
    mark = len(wire.requests)
    result = wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(BODY)), [BODY])
    written = writes(wire, mark)
    assert written[0] == b"MAIL FROM:<a@x.test> SIZE=34\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"
    assert wire.messages[-1].content == b"Subject: hi\r\n\r\n.dot line\r\nbare lf\r\n"
    assert wire.messages[-1].wire == b"Subject: hi\r\n\r\n..dot line\r\nbare lf\r\n.\r\n"
    assert result.data is not None and result.data.is_success
    assert "C: <34 octets of content>" in log
    assert "C: ." in log


def test_lockstep_without_pipelining() -> None:
    wire = model(extensions=("8BITMIME", "CHUNKING"))
    s, _ = opened(wire)
    mark = len(wire.requests)
    wire.run(
        s.sendmail("a@x.test", ["b@x.test", "c@x.test"], body=BodyInfo.of_bytes(BODY)),
        [BODY[:10], BODY[10:]],
    )
    written = writes(wire, mark)
    # CHUNKING without PIPELINING: DATA, one command per write.
    assert written[:4] == [
        b"MAIL FROM:<a@x.test>\r\n",
        b"RCPT TO:<b@x.test>\r\n",
        b"RCPT TO:<c@x.test>\r\n",
        b"DATA\r\n",
    ]
    # The two body pieces are gathered and go out with the terminator.
    assert written[4:] == [b"Subject: hi\r\n\r\n..dot line\r\nbare lf\r\n.\r\n"]
    assert wire.messages[-1].recipients == ("b@x.test", "c@x.test")
    # One command, one reply: a round of the transcript each.
    assert [len(r) for r in wire.transcript.rounds()] == [1, 1, 1, 1, 1, 1]


def test_lockstep_binary_uses_bdat() -> None:
    wire = model(extensions=("CHUNKING", "BINARYMIME"))
    s, _ = opened(wire)
    body = b"\x00\xff\r\n\r.\n"
    wire.run(
        s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=len(body), binary=True)), [body]
    )
    assert wire.messages[-1].content == body
    assert mail_line(wire) == "MAIL FROM:<a@x.test> BODY=BINARYMIME"
    assert wire.messages[-1].mail.parameters == {"BODY": "BINARYMIME"}


def test_a_refused_recipient_is_partial_success() -> None:
    wire = model(refusing("bad@x.test"))
    s, _ = opened(wire)
    result = wire.run(
        s.sendmail("a@x.test", ["b@x.test", "bad@x.test"], body=BodyInfo.of_bytes(BODY)), [BODY]
    )
    assert result.accepted == ["b@x.test"]
    assert list(result.refused) == ["bad@x.test"]
    assert result.refused["bad@x.test"].code == 550


@pytest.mark.parametrize("extensions", [MODEL_EXTENSIONS, ("PIPELINING",), ("CHUNKING",), ()])
def test_every_recipient_refused(extensions: tuple[str, ...]) -> None:
    wire = model(refusing("x@x.test", "y@x.test"), extensions=extensions)
    s, _ = opened(wire)
    with pytest.raises(PermanentReplyError) as info:
        wire.run(
            s.sendmail("a@x.test", ["x@x.test", "y@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")),
            [b"hi\r\n"],
        )
    assert set(info.value.recipients) == {"x@x.test", "y@x.test"}
    assert lines(wire)[-1] == "RSET"
    assert wire.messages == []
    assert s.conn.state is State.READY


def test_every_recipient_refused_transiently() -> None:
    s, wire = scripted_session({"RCPT": replies("451 later", "452 later")})
    with pytest.raises(TransientReplyError) as info:
        wire.run(
            s.sendmail("a@x.test", ["b@x.test", "c@x.test"], body=BodyInfo(size=2, eight_bit=False))
        )
    assert info.value.code == 451
    assert [c.verb for c in wire.commands][-5:] == ["MAIL", "RCPT", "RCPT", "DATA", "RSET"]


def test_data_354_after_every_recipient_refused_sends_the_terminator_alone() -> None:
    # A sloppy server: 354 to DATA though it refused every recipient.
    sloppy: dict[str, Handler] = {"RCPT": "550 no", "DATA": "354 go", "MESSAGE": "554 no rcpt"}
    s, wire = scripted_session(sloppy)
    with pytest.raises(PermanentReplyError):
        wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=2, eight_bit=False)))
    assert wire.written == b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n.\r\nRSET\r\n"


def test_mail_refused() -> None:
    s, wire = scripted_session({"MAIL": "550 5.7.1 not you"})
    with pytest.raises(PermanentReplyError) as info:
        wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=2, eight_bit=False)))
    assert info.value.phase == "MAIL"
    assert info.value.command == "MAIL FROM:<a@x.test>"
    assert wire.written.endswith(b"RSET\r\n")
    # RCPT and DATA were pipelined behind MAIL; the server refused them too (503).
    assert wire.transcript.server().count(b"503 5.5.1") == 2


def test_mail_refused_with_bdat_pipelined() -> None:
    wire = model({"MAIL": "550 no"})
    s, _ = opened(wire)
    mark = len(wire.requests)
    with pytest.raises(PermanentReplyError):
        wire.run(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")), [b"hi\r\n"]
        )
    assert b"".join(writes(wire, mark)).endswith(b"BDAT 4 LAST\r\nhi\r\nRSET\r\n")


def test_content_refused_then_rset() -> None:
    wire = model(REFUSE_CONTENT, extensions=("PIPELINING", "8BITMIME"))
    s, _ = opened(wire)
    with pytest.raises(PermanentReplyError) as info:
        wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(BODY)), [BODY])
    assert "end of content" in info.value.phase
    assert lines(wire)[-1] == "RSET"
    assert wire.messages == []


def test_bdat_content_refused_then_rset() -> None:
    wire = model(REFUSE_CONTENT)
    s, _ = opened(wire)
    with pytest.raises(PermanentReplyError):
        wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(BODY)), [BODY])
    assert lines(wire)[-1] == "RSET"
    assert s.conn.state is State.READY


@pytest.mark.parametrize(
    ("handlers", "bad"),
    [
        ({"MAIL": "251 ok"}, "251 is not a valid reply to MAIL"),
        ({"RCPT": "252 maybe"}, "252 is not a valid reply to RCPT"),
        ({"DATA": "250 go"}, "250 is not a valid reply to DATA"),
    ],
)
def test_a_2xx_that_is_not_the_commands_success_ends_the_session(
    handlers: dict[str, Handler], bad: str
) -> None:
    # Only the codes RFC 5321 lists for a command are its success, not any 2xx.
    s, wire = scripted_session(handlers)
    with pytest.raises(RemoteProtocolError, match=bad):
        wire.run(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=4, eight_bit=False)),
            [b"hi\r\n"],
        )
    assert s.conn.state is State.ERROR
    # Neither the content nor an RSET went out after the bad reply.
    assert wire.written == b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"


def test_data_refused() -> None:
    s, wire = scripted_session({"DATA": "451 not now"})
    with pytest.raises(TransientReplyError) as info:
        wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=2, eight_bit=False)))
    assert info.value.command == "DATA"


def test_large_streamed_body_in_several_chunks() -> None:
    wire = model(extensions=("PIPELINING", "CHUNKING", "8BITMIME"))
    s, _ = opened(wire)
    piece = b"line of text\n" * 10000  # 130 000 octets, 140 000 on the wire
    pieces = [piece] * 10
    mark = len(wire.requests)
    wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo()), pieces)
    bdats = [w for w in writes(wire, mark) if b"BDAT " in w[:200]]
    assert len(bdats) >= 2
    assert wire.messages[-1].content == piece.replace(b"\n", b"\r\n") * 10
    assert "BODY=8BITMIME" in mail_line(wire)


MIB = 1 << 20


def test_bdat_chunks_are_pipelined_a_few_at_a_time() -> None:
    wire = model(extensions=("PIPELINING", "CHUNKING"))
    s, _ = opened(wire)
    mark, reads_before = len(wire.requests), reads(wire)
    wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)), [b"x" * MIB] * 6)
    assert wire.messages[-1].content == b"x" * (6 * MIB) + b"\r\n"
    assert [len(c) for c in wire.messages[-1].chunks] == [MIB] * 6 + [2]
    bdats = [w[: w.index(b"\r\n")] for w in writes(wire, mark)[1:]]
    assert bdats == [b"BDAT 1048576"] * 5 + [b"BDAT 2 LAST"]
    # The first chunk's reply is awaited (the envelope may fail); then four
    # chunks go out before their replies are read, not one round trip each.
    assert reads(wire) - reads_before < 6


def test_a_refused_chunk_with_others_in_flight() -> None:
    s, wire = scripted_session(
        {"BDAT": replies(DEFAULT, "552 chunk 2 too much")}, extensions=["PIPELINING", "CHUNKING"]
    )
    with pytest.raises(PermanentReplyError) as info:
        wire.run(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)), [b"x" * MIB] * 5
        )
    assert info.value.code == 552 and info.value.phase == "BDAT"
    # Chunks 2 to 5 were on their way; every reply was read before the RSET.
    assert wire.written.count(b"BDAT ") == 5
    assert wire.written.endswith(b"RSET\r\n")
    assert [c.verb for c in wire.commands][-6:] == ["BDAT"] * 5 + ["RSET"]
    assert wire.transcript.server().count(b"503 5.5.1") == 3  # chunks 3 to 5
    assert s.conn.state is State.READY


def test_many_data_pieces() -> None:
    wire = model(extensions=("PIPELINING",))
    s, _ = opened(wire)
    pieces = [b"a\n", b".b", b"\r", b"\n.", b"\n"] * 50
    mark = len(wire.requests)
    wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)), pieces)
    # Small pieces are gathered: the envelope, then content and terminator together.
    assert len(writes(wire, mark)) == 2
    assert wire.messages[-1].content == b"".join(pieces).replace(b"\r\n", b"\n").replace(
        b"\n", b"\r\n"
    )


def test_large_data_body_is_written_in_bounded_pieces() -> None:
    wire = model(extensions=("PIPELINING",))
    s, _ = opened(wire)
    pieces = [b"x" * 999 + b"\n"] * 300
    mark = len(wire.requests)
    wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)), pieces)
    content_writes = writes(wire, mark)[1:]
    assert len(content_writes) == 5
    assert all(len(w) <= (1 << 16) + 1001 for w in content_writes)
    assert content_writes[-1].endswith(b"\r\n.\r\n")
    assert wire.messages[-1].content == b"".join(pieces).replace(b"\n", b"\r\n")


def test_eight_bit_body_without_8bitmime_is_refused_before_anything() -> None:
    wire = model(extensions=("PIPELINING",))
    s, _ = opened(wire)
    before = lines(wire)
    with pytest.raises(UnsupportedExtensionError, match="8BITMIME"):
        wire.run(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(b"caf\xc3\xa9")), [b"x"]
        )
    assert lines(wire) == before


def test_streamed_eight_bit_without_8bitmime_kills_a_data_session() -> None:
    wire = model(extensions=("PIPELINING",))
    s, _ = opened(wire)
    with pytest.raises(InvalidInputError):
        wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo()), [b"ok\r\n", b"\xff\r\n"])
    assert s.conn.state is State.ERROR
    assert wire.messages == []


def test_bad_later_chunk_resets_a_bdat_transaction() -> None:
    wire = model(extensions=("PIPELINING", "CHUNKING", "SIZE 1500000"))
    s, _ = opened(wire)
    with pytest.raises(LocalProtocolError):
        wire.run(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)),
            [b"x" * (1 << 20), b"y" * (1 << 19)],
        )
    assert lines(wire)[-1] == "RSET"
    assert s.conn.state is State.READY


def test_bad_later_chunk_with_others_in_flight() -> None:
    wire = model(extensions=("PIPELINING", "CHUNKING", "SIZE 3670016"))
    s, _ = opened(wire)
    with pytest.raises(MessageTooLargeError):
        wire.run(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)), [b"x" * MIB] * 4
        )
    # Chunks 2 and 3 were in flight: their replies are read, then RSET.
    assert lines(wire)[-4:] == ["BDAT 1048576", "BDAT 1048576", "BDAT 1048576", "RSET"]
    assert s.conn.state is State.READY and not s.conn.pending


def test_size_over_the_limit_is_refused_before_anything() -> None:
    wire = model(extensions=("PIPELINING", "SIZE 10"))
    s, _ = opened(wire)
    with pytest.raises(MessageTooLargeError):
        wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(BODY)), [BODY])
    assert lines(wire) == ["EHLO client.test"]


def test_no_recipients() -> None:
    s, _ = session()
    with pytest.raises(InvalidInputError):
        next(s.sendmail("a@x.test", [], body=BodyInfo()))


def test_duplicate_recipients_are_sent_once() -> None:
    wire = model()
    s, _ = opened(wire)
    wire.run(
        s.sendmail("a@x.test", ["b@x.test", "b@x.test"], body=BodyInfo.of_bytes(b"x\r\n")),
        [b"x\r\n"],
    )
    assert lines(wire).count("RCPT TO:<b@x.test>") == 1


def test_smtputf8_addresses() -> None:
    wire = model()
    s, _ = opened(wire)
    wire.run(
        s.sendmail("jörg@x.test", ["ü@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")), [b"hi\r\n"]
    )
    assert mail_line(wire) == "MAIL FROM:<jörg@x.test> SIZE=4 SMTPUTF8"
    assert wire.messages[-1].recipients == ("ü@x.test",)
    assert wire.messages[-1].sender == "jörg@x.test"
    # The sender alone is enough to ask for SMTPUTF8.
    wire.run(
        s.sendmail("jörg@x.test", ["b@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")), [b"hi\r\n"]
    )
    assert mail_line(wire).endswith(" SMTPUTF8")


def test_smtputf8_not_offered() -> None:
    wire = model(extensions=("PIPELINING", "8BITMIME"))
    s, _ = opened(wire)
    with pytest.raises(UnsupportedExtensionError, match="SMTPUTF8"):
        wire.run(s.sendmail("a@x.test", ["ü@x.test"], body=BodyInfo.of_bytes(b"hi")), [b"hi"])


def test_mail_and_rcpt_options() -> None:
    wire = model()
    s, _ = opened(wire)
    wire.run(
        s.sendmail(
            "a@x.test",
            ["b@x.test"],
            body=BodyInfo.of_bytes(b"hi\r\n"),
            mail_options={"ret": "HDRS", "envid": "id1"},
            rcpt_options={"notify": "NEVER"},
        ),
        [b"hi\r\n"],
    )
    assert mail_line(wire) == "MAIL FROM:<a@x.test> SIZE=4 RET=HDRS ENVID=id1"
    assert "RCPT TO:<b@x.test> NOTIFY=NEVER" in lines(wire)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"mail_options": {"envelope_id": "x"}}, "envid"),
        ({"rcpt_options": {"notfy": "NEVER"}}, "notify"),
    ],
)
def test_unknown_option_keys_are_refused_before_anything(
    options: dict[str, Any], named: str
) -> None:
    wire = model()
    s, _ = opened(wire)
    before = lines(wire)
    with pytest.raises(InvalidInputError, match=named):
        wire.run(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(b"hi\r\n"), **options),
            [b"hi\r\n"],
        )
    # Nothing was sent and the session goes on.
    assert lines(wire) == before
    assert s.conn.state is State.READY
    wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")), [b"hi\r\n"])
    assert len(wire.messages) == 1


def test_lmtp_per_recipient_results() -> None:
    server = ScriptedServer(
        {**refusing("bad@x.test"), "MESSAGE": ["250 b delivered", "452 c over quota"]},
        hostname="lmtp",
        extensions=["8BITMIME"],
        lmtp=True,
    )
    wire = server.driver()
    s, _ = session(lmtp=True)
    wire.run(s.open())
    result = wire.run(
        s.sendmail(
            "a@x.test", ["b@x.test", "bad@x.test", "c@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")
        ),
        [b"hi\r\n"],
    )
    assert result.delivery["b@x.test"].code == 250
    assert result.delivery["c@x.test"].code == 452
    assert set(result.refused) == {"bad@x.test", "c@x.test"}
    assert result.accepted == ["b@x.test"]
    assert b"LHLO client.test" in wire.written
    # LMTP pipelines without being told: the envelope went in one write.
    assert wire.transcript.rounds()[1] == [
        b"MAIL FROM:<a@x.test>\r\n",
        b"RCPT TO:<b@x.test>\r\n",
        b"RCPT TO:<bad@x.test>\r\n",
        b"RCPT TO:<c@x.test>\r\n",
        b"DATA\r\n",
    ]
    assert [m.recipients for m in wire.messages] == [("b@x.test",)]


def test_lmtp_bdat_every_delivery_failed() -> None:
    wire = model(REFUSE_CONTENT, lmtp=True, extensions=("CHUNKING", "8BITMIME"))
    s, _ = session(lmtp=True)
    wire.run(s.open())
    with pytest.raises(PermanentReplyError) as info:
        wire.run(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")), [b"hi\r\n"]
        )
    assert set(info.value.recipients) == {"b@x.test"}
    assert lines(wire)[-1] == "RSET"


def test_lmtp_bdat_delivery() -> None:
    wire = model(lmtp=True, extensions=("CHUNKING", "8BITMIME"))
    s, _ = session(lmtp=True)
    wire.run(s.open())
    result = wire.run(
        s.sendmail("a@x.test", ["b@x.test", "c@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")),
        [b"hi\r\n"],
    )
    assert list(result.delivery) == ["b@x.test", "c@x.test"]
    assert [m.recipients for m in wire.messages] == [("b@x.test", "c@x.test")]


# ----------------------------------------------------------------------
# Timeouts and lost connections
# ----------------------------------------------------------------------


def test_timeout_while_reading_the_final_reply_is_outcome_unknown() -> None:
    s, wire = scripted_session({"MESSAGE": stall()})
    with pytest.raises(OutcomeUnknownError) as info:
        wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)), [b"hi\r\n"])
    assert isinstance(info.value.__cause__, SMTPTimeoutError)
    # Who would have the message, if the server did take it.
    assert {a: r.code for a, r in info.value.recipients.items()} == {"b@x.test": 250}
    assert s.conn.state is State.ERROR
    read_requests = [r for r in wire.requests if isinstance(r, Read)]
    assert read_requests[-1].phase is Phase.DATA_TERMINATION
    assert read_requests[-1].timeout == 600.0
    assert wire.now == 600.0  # the whole deadline went by, on the driver's clock


def test_timeout_earlier_is_a_timeout() -> None:
    s, wire = scripted_session({"MAIL": stall()})
    with pytest.raises(SMTPTimeoutError):
        wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)))
    assert s.conn.state is State.ERROR


def test_write_failure_kills_the_session() -> None:
    s, _ = scripted_session()
    proc = s.noop()
    # First the transport is asked what arrived unasked: nothing.
    assert isinstance(next(proc), Poll)
    request = proc.send(None)
    assert isinstance(request, Write)
    with pytest.raises(ConnectionLostError):
        proc.throw(ConnectionLostError("reset"))
    assert s.conn.state is State.ERROR


def test_closed_during_the_final_reply_is_outcome_unknown() -> None:
    s, wire = scripted_session({"MESSAGE": [b"250 part", close()]})
    with pytest.raises(OutcomeUnknownError):
        wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)), [b"hi\r\n"])


def test_closed_earlier_is_connection_lost() -> None:
    s, wire = scripted_session({"NOOP": close()})
    with pytest.raises(ConnectionLostError):
        wire.run(s.noop())


def test_421_ends_the_procedure() -> None:
    s, wire = scripted_session({"MAIL": "421 4.3.2 shutting down"})
    with pytest.raises(TransientReplyError) as info:
        wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)))
    assert info.value.code == 421
    assert s.conn.state is State.CLOSING
    s, wire = scripted_session({"NOOP": "421 bye"})
    with pytest.raises(TransientReplyError):
        wire.run(s.noop())


def test_421_to_ehlo_is_not_followed_by_helo() -> None:
    wire = ScriptedServer({"EHLO": "421 busy"}).driver()
    s, _ = session()
    with pytest.raises(TransientReplyError):
        wire.run(s.open())
    assert wire.written == b"EHLO client.test\r\n"


def test_421_to_quit_is_returned() -> None:
    s, wire = scripted_session({"QUIT": "421 bye anyway"})
    assert wire.run(s.quit()).code == 421


def test_read_new_wait() -> None:
    # One reply in three pieces, a moment apart: three reads, one deadline.
    pieces: list[Response] = [b"25", pause(0.1), b"0 o", pause(0.1), b"k\r\n"]
    s, wire = scripted_session({"NOOP": replies(pieces, "250 again")})
    wire.run(s.noop())
    read_requests = [r for r in wire.requests if isinstance(r, Read)]
    assert [r.new_wait for r in read_requests] == [True, False, False]
    assert all(r.phase is Phase.COMMAND for r in read_requests)
    wire.requests.clear()
    wire.run(s.noop())
    assert [r.new_wait for r in wire.requests if isinstance(r, Read)] == [True]


def test_timeouts() -> None:
    t = Timeouts.uniform(30)
    assert all(t.for_phase(p) == 30.0 for p in Phase)
    d = Timeouts()
    assert d.for_phase(Phase.DATA_TERMINATION) == 600.0
    assert d.for_phase(Phase.DATA_INITIATION) == 120.0
    assert d.for_phase(Phase.GREETING) == 300.0
    assert Timeouts(mail=5).for_phase(Phase.MAIL) == 5.0
    for bad in (0, -1, float("nan"), True, "30"):
        with pytest.raises(ValueError):
            Timeouts(rcpt=bad)  # type: ignore[arg-type]
    s, wire = scripted_session(timeouts=Timeouts.uniform(7))
    wire.run(s.noop())
    assert all(r.timeout == 7 for r in wire.requests if isinstance(r, Read | Write))


# ----------------------------------------------------------------------
# Small commands and the transcript
# ----------------------------------------------------------------------


def test_small_commands() -> None:
    wire = model()
    s, log = opened(wire)
    assert wire.run(s.noop()).code == 250
    assert wire.run(s.rset()).code == 250
    assert wire.run(s.vrfy("postmaster")).code == 252
    assert wire.run(s.expn("staff")).code == 502
    help_reply = wire.run(s.help())
    assert len(help_reply.lines) == 2
    assert wire.run(s.help("MAIL")).code == 214
    replies_ = wire.run(s.pipeline([Noop()]))
    assert [r.code for r in replies_] == [250]
    assert wire.run(s.quit()).code == 221
    assert s.conn.state is State.CLOSING
    assert any(line.startswith("S: 214-2.0.0 Commands:") for line in log)
    assert log[0] == "S: 220 model.test ESMTP ready"
    assert "C: QUIT" in log and log[-1] == "S: 221 2.0.0 model.test closing connection"


def test_checked_refusal() -> None:
    s, wire = scripted_session({"NOOP": "500 no noop"})
    with pytest.raises(PermanentReplyError) as info:
        wire.run(s.noop())
    assert info.value.phase == "NOOP"


def test_no_transcript_is_fine() -> None:
    wire = model()
    s = ClientSession(local_hostname="client.test", tls=TLSMode.NONE)
    wire.run(s.open())
    assert wire.run(s.noop()).code == 250


def test_send_result() -> None:
    ok = Reply(code=250, lines=(b"ok",))
    no = Reply(code=550, lines=(b"no",))
    result = SendResult(recipients={"a": ok, "b": no, "c": ok}, delivery={"c": no})
    assert result.accepted == ["a"]
    assert set(result.refused) == {"b", "c"}
    assert BodyInfo.of_bytes(b"\xff") == BodyInfo(size=1, eight_bit=True)


def test_eight_bit_body_rides_on_smtputf8_without_8bitmime() -> None:
    wire = model(extensions=("PIPELINING", "SMTPUTF8"))
    s, _ = opened(wire)
    body = "Subject: café\r\n\r\n".encode()
    wire.run(s.sendmail("jörg@x.test", ["b@x.test"], body=BodyInfo.of_bytes(body)), [body])
    assert mail_line(wire) == "MAIL FROM:<jörg@x.test> SMTPUTF8"
    assert wire.messages[-1].content == body


def test_lockstep_mail_refused_sends_no_rcpt() -> None:
    s, wire = scripted_session({"MAIL": "550 not you"}, extensions=[])
    with pytest.raises(PermanentReplyError):
        wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=1, eight_bit=False)))
    assert wire.written == b"MAIL FROM:<a@x.test>\r\nRSET\r\n"


# ----------------------------------------------------------------------
# send_batch(): several transactions, overlapped with PIPELINING
# ----------------------------------------------------------------------


def _jobs(*recipient_lists: list[str]) -> list[MailJob]:
    return [
        MailJob(sender="a@x.test", recipients=r, body=BodyInfo(eight_bit=False))
        for r in recipient_lists
    ]


def _bodies(count: int) -> list[bytes]:
    # Each body ends with b"" so the driver's flat iterator separates messages.
    pieces: list[bytes] = []
    for i in range(count):
        pieces += [b"Subject: %d\r\n\r\n" % i, b".dot %d\n" % i, b""]
    return pieces


def test_send_batch_overlaps_transactions_one_round_trip_each() -> None:
    wire = model(extensions=("PIPELINING",))
    s, _ = opened(wire)
    mark, reads_before = len(wire.requests), reads(wire)
    results = wire.run(s.send_batch(_jobs(["b@x.test"], ["c@x.test"], ["d@x.test"])), _bodies(3))
    accepted = [r.accepted if isinstance(r, SendResult) else r for r in results]
    assert accepted == [["b@x.test"], ["c@x.test"], ["d@x.test"]]
    assert [d.content for d in wire.messages] == [
        b"Subject: %d\r\n\r\n.dot %d\r\n" % (i, i) for i in range(3)
    ]
    # The terminator of one message and the next envelope share a write.
    written = writes(wire, mark)
    assert len(written) == 4
    assert written[1].startswith(b"Subject: 0") and b"\r\n.\r\nMAIL FROM:" in written[1]
    assert written[1].endswith(b"RCPT TO:<c@x.test>\r\nDATA\r\n")
    assert reads(wire) - reads_before == 4


def test_send_batch_settles_each_failure_on_its_own() -> None:
    def message(command: Command, session: ServerSession) -> Response:
        return "554 5.6.0 Message refused" if b"REFUSE" in command.data else DEFAULT

    wire = model({**refusing("gone@x.test"), "MESSAGE": message}, extensions=("PIPELINING",))
    s, _ = opened(wire)
    jobs = _jobs(["b@x.test"], ["gone@x.test"], ["c@x.test"], ["d@x.test"])
    jobs.insert(1, MailJob(sender="a@x.test", recipients=["bad\r\n@x.test"], body=BodyInfo()))
    bodies = [
        b"first\r\n",
        b"",
        b"never sent\r\n",
        b"",
        b"unwanted\r\n",
        b"",
        b"REFUSE me\r\n",
        b"",
    ]
    bodies += [b"last\r\n", b""]
    results = wire.run(s.send_batch(jobs), bodies)
    assert isinstance(results[0], SendResult)
    assert isinstance(results[1], InvalidInputError)
    assert (
        isinstance(results[2], PermanentReplyError)
        and results[2].recipients["gone@x.test"].code == 550
    )
    assert isinstance(results[3], PermanentReplyError) and results[3].code == 554
    assert isinstance(results[4], SendResult)
    assert [d.content for d in wire.messages] == [b"first\r\n", b"last\r\n"]
    received = wire.transcript.client()
    assert b"never sent" not in received and b"unwanted" not in received
    # RSET only after the refused envelope; a refused content needs none.
    assert lines(wire).count("RSET") == 1


def test_send_batch_with_chunking_sends_each_message_in_one_write() -> None:
    wire = model(extensions=("PIPELINING", "CHUNKING"))
    s, _ = opened(wire)
    mark = len(wire.requests)
    results = wire.run(s.send_batch(_jobs(["b@x.test"], ["c@x.test"])), _bodies(2))
    assert all(isinstance(r, SendResult) for r in results)
    written = writes(wire, mark)
    assert len(written) == 2 and all(b"BDAT " in w for w in written)


def test_send_batch_without_pipelining_goes_step_by_step() -> None:
    wire = model(extensions=())
    s, _ = opened(wire)
    results = wire.run(s.send_batch(_jobs(["b@x.test"], ["gone@x.test"])), _bodies(2))
    assert isinstance(results[0], SendResult) and isinstance(results[1], SendResult)
    assert len(wire.messages) == 2


def test_send_batch_reports_the_unsettled_message_as_outcome_unknown() -> None:
    # The server closes instead of answering message 1's content.
    s, wire = scripted_session({"MESSAGE": close()})
    results = wire.run(
        s.send_batch(_jobs(["b@x.test"], ["c@x.test"], ["d@x.test"])),
        [b"one\r\n", b"", b"two\r\n", b"", b"three\r\n", b""],
    )
    assert len(results) == 3
    assert isinstance(results[0], OutcomeUnknownError)
    # The later messages were never sent: their outcome is known.
    for later in results[1:]:
        assert isinstance(later, ConnectionLostError)
        assert not isinstance(later, OutcomeUnknownError)
    assert s.conn.state in (State.CLOSED, State.ERROR)


def test_send_batch_with_chunking_records_a_refused_envelope() -> None:
    wire = model(refusing("gone@x.test"), extensions=("PIPELINING", "CHUNKING"))
    s, _ = opened(wire)
    results = wire.run(s.send_batch(_jobs(["gone@x.test"], ["c@x.test"])), _bodies(2))
    assert isinstance(results[0], PermanentReplyError) and results[0].code == 550
    assert isinstance(results[1], SendResult)
    assert [d.recipients for d in wire.messages] == [("c@x.test",)]


def _requests_in_order(wire: ProcedureDriver, since: int) -> str:
    """W for each write, R for each read, from request number ``since`` on."""
    return "".join(
        "W" if isinstance(r, Write) else "R" if isinstance(r, Read) else ""
        for r in wire.requests[since:]
    )


def test_send_batch_with_chunking_keeps_a_window_of_transactions_in_flight() -> None:
    wire = model(refusing("gone@x.test"), extensions=("PIPELINING", "CHUNKING"))
    s, _ = opened(wire)
    mark = len(wire.requests)
    window = _TRANSACTIONS_IN_FLIGHT
    count = window + 6
    recipients = [["gone@x.test"] if i == 3 else [f"r{i}@x.test"] for i in range(count)]
    results = wire.run(s.send_batch(_jobs(*recipients)), _bodies(count))
    assert [type(r).__name__ for r in results] == [
        "PermanentReplyError" if i == 3 else "SendResult" for i in range(count)
    ]
    assert isinstance(results[3], PermanentReplyError)
    assert results[3].recipients["gone@x.test"].code == 550
    assert [d.recipients[0] for d in wire.messages] == [
        f"r{i}@x.test" for i in range(count) if i != 3
    ]
    assert [d.content for d in wire.messages][:3] == [
        b"Subject: %d\r\n\r\n.dot %d\r\n" % (i, i) for i in range(3)
    ]
    # A window of whole transactions is written before the first reply is read.
    assert _requests_in_order(wire, mark).startswith("W" * window + "R")
    written = writes(wire, mark)
    assert written[0].startswith(b"MAIL FROM:") and written[0].count(b"BDAT") == 1
    # Each one behind an unanswered one starts with RSET. The refusal of message
    # 3 is read once message window + 2 is written; the window is then answered
    # whole, so message window + 3 starts afresh.
    assert [w.startswith(b"RSET\r\nMAIL FROM:") for w in written[: window + 4]] == [
        i not in (0, window + 3) for i in range(window + 4)
    ]


def test_send_batch_with_chunking_sends_a_large_message_alone() -> None:
    wire = model(extensions=("PIPELINING", "CHUNKING"))
    s, _ = opened(wire)
    large = b"x" * (1 << 20) + b"\r\n"
    bodies = [b"one\r\n", b"", large, b"", b"three\r\n", b""]
    results = wire.run(s.send_batch(_jobs(["b@x.test"], ["c@x.test"], ["d@x.test"])), bodies)
    assert all(isinstance(r, SendResult) for r in results)
    assert [d.content for d in wire.messages] == [b"one\r\n", large, b"three\r\n"]
    assert lines(wire).count("RSET") == 0


def test_send_batch_with_chunking_a_large_message_after_a_refusal_resets_first() -> None:
    wire = model(refusing("gone@x.test"), extensions=("PIPELINING", "CHUNKING"))
    s, _ = opened(wire)
    large = b"x" * (1 << 20) + b"\r\n"
    bodies = [b"one\r\n", b"", large, b""]
    results = wire.run(s.send_batch(_jobs(["gone@x.test"], ["c@x.test"])), bodies)
    assert isinstance(results[0], PermanentReplyError) and isinstance(results[1], SendResult)
    assert [d.content for d in wire.messages] == [large]
    assert lines(wire).count("RSET") == 1


def test_send_batch_with_chunking_a_job_refused_locally_in_the_window() -> None:
    # REQUIRETLS only goes over TLS: the connection refuses the group unsent.
    wire = model(extensions=("PIPELINING", "CHUNKING", "REQUIRETLS"))
    s, _ = opened(wire)
    jobs = _jobs(["b@x.test"], ["c@x.test"], ["d@x.test"])
    jobs[1] = MailJob(
        sender="a@x.test",
        recipients=["c@x.test"],
        body=BodyInfo(),
        mail_options={"requiretls": True},
    )
    jobs.append(MailJob(sender="a@x.test", recipients=[], body=BodyInfo()))
    bodies = [b"one\r\n", b"", b"two\r\n", b"", b"3\r\n", b"", b"four\r\n", b""]
    results = wire.run(s.send_batch(jobs), bodies)
    assert isinstance(results[0], SendResult) and isinstance(results[2], SendResult)
    assert isinstance(results[1], LocalProtocolError)
    assert isinstance(results[3], InvalidInputError)
    received = wire.transcript.client()
    assert b"two" not in received and b"four" not in received


def test_send_batch_with_chunking_a_large_message_lost_midway() -> None:
    s, wire = scripted_session({"BDAT": close()}, extensions=["PIPELINING", "CHUNKING"])
    large = b"x" * (1 << 20) + b"\r\n"
    results = wire.run(s.send_batch(_jobs(["b@x.test"], ["c@x.test"])), [large, b"", b"2", b""])
    assert isinstance(results[0], OutcomeUnknownError)
    assert isinstance(results[1], ConnectionLostError)
    assert not isinstance(results[1], OutcomeUnknownError)


def test_send_batch_with_chunking_a_large_message_refused_then_closed() -> None:
    s, wire = scripted_session(
        {"BDAT": ["552 5.3.4 too big", close()]}, extensions=["PIPELINING", "CHUNKING"]
    )
    large = b"x" * (1 << 20) + b"\r\n"
    results = wire.run(s.send_batch(_jobs(["b@x.test"], ["c@x.test"])), [large, b"", b"2", b""])
    assert isinstance(results[0], PermanentReplyError) and results[0].code == 552
    assert isinstance(results[1], ConnectionLostError)
    assert not isinstance(results[1], OutcomeUnknownError)


def test_send_batch_with_chunking_a_large_message_refused_keeps_the_session() -> None:
    s, wire = scripted_session({"BDAT": "552 5.3.4 too big"}, extensions=["PIPELINING", "CHUNKING"])
    large = b"x" * (1 << 20) + b"\r\n"
    results = wire.run(s.send_batch(_jobs(["b@x.test"])), [large, b"more\r\n", b""])
    assert isinstance(results[0], PermanentReplyError) and results[0].code == 552
    assert s.conn.open


def test_send_batch_with_chunking_settles_a_refused_content_and_a_lost_window() -> None:
    handlers = {"MESSAGE": replies(DEFAULT, "554 5.6.0 refused", DEFAULT, close())}
    s, wire = scripted_session(handlers, extensions=["PIPELINING", "CHUNKING"])
    bodies = [piece for i in range(6) for piece in (b"message %d\r\n" % i, b"")]
    results = wire.run(s.send_batch(_jobs(*[[f"r{i}@x.test"] for i in range(6)])), bodies)
    assert isinstance(results[0], SendResult)
    assert isinstance(results[1], PermanentReplyError) and results[1].code == 554
    assert isinstance(results[2], SendResult)
    # Message 3's content was out when the server closed, and so was that of
    # the two written behind it in the same window.
    assert all(isinstance(r, OutcomeUnknownError) for r in results[3:])
    assert [d.content for d in wire.messages] == [b"message 0\r\n", b"message 2\r\n"]


def test_send_batch_with_chunking_bounds_the_content_in_flight() -> None:
    wire = model(extensions=("PIPELINING", "CHUNKING"))
    s, _ = opened(wire)
    mark = len(wire.requests)
    half = b"y" * (600 * 1024) + b"\r\n"
    bodies = [half, b"", half, b"", half, b""]
    results = wire.run(s.send_batch(_jobs(["b@x.test"], ["c@x.test"], ["d@x.test"])), bodies)
    assert all(isinstance(r, SendResult) for r in results)
    # Two messages make more than a chunk's worth in flight: read before the third.
    assert _requests_in_order(wire, mark).startswith("WWR")


def test_send_batch_garbage_while_awaiting_a_final_reply() -> None:
    s, wire = scripted_session({"MESSAGE": b"xyz\r\n"})
    results = wire.run(
        s.send_batch(_jobs(["b@x.test"], ["c@x.test"])), [b"one\r\n", b"", b"two\r\n", b""]
    )
    assert isinstance(results[0], OutcomeUnknownError)
    assert isinstance(results[0].__cause__, RemoteProtocolError)
    # The second message never went out: not unknown, and it says why the session ended.
    assert isinstance(results[1], ConnectionLostError)
    assert not isinstance(results[1], OutcomeUnknownError)
    assert results[1].__cause__ is results[0]
    assert s.conn.state is State.ERROR


def test_send_batch_last_message_lost_at_its_final_reply() -> None:
    s, wire = scripted_session({"MESSAGE": close()})
    results = wire.run(s.send_batch(_jobs(["b@x.test"])), [b"one\r\n", b""])
    assert len(results) == 1 and isinstance(results[0], OutcomeUnknownError)


def test_send_batch_timeout_before_any_content() -> None:
    s, wire = scripted_session({"MAIL": stall()})
    results = wire.run(s.send_batch(_jobs(["b@x.test"], ["c@x.test"])), [b"one\r\n", b""])
    # No None entries: the job the session never reached gets the same error.
    assert len(results) == 2
    assert isinstance(results[0], SMTPTimeoutError) and results[1] is results[0]
    assert not isinstance(results[0], OutcomeUnknownError)


# ----------------------------------------------------------------------
# Bodies held whole, and file-sized chunks, go out as the objects given
# ----------------------------------------------------------------------


def _buffers(wire: ProcedureDriver) -> list[Any]:
    return [buffer for r in wire.requests if isinstance(r, Write) for buffer in r.buffers]


@pytest.mark.parametrize("extensions", [("PIPELINING",), ("PIPELINING", "CHUNKING")])
def test_a_body_held_whole_is_sent_without_pulling(extensions: tuple[str, ...]) -> None:
    wire = model(extensions=extensions)
    s, _ = session()
    wire.run(s.open())
    body = b"Subject: whole\r\n\r\n" + b"line\r\n" * 20_000
    result = wire.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.whole(body)))
    assert result.data is not None and result.data.is_success
    assert not any(isinstance(r, PullBody) for r in wire.requests)
    assert wire.messages[-1].content == body
    # No dot to stuff and CRLF already: DATA content or the BDAT chunk is the
    # caller's own object.
    assert any(buffer is body for buffer in _buffers(wire))


def test_a_body_held_whole_is_not_taken_from_a_batch_stream() -> None:
    wire = model()
    s, _ = session()
    wire.run(s.open())
    first, second = b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\ntwo\r\n"
    jobs = [
        MailJob(sender="a@x.test", recipients=["b@x.test"], body=BodyInfo.whole(first)),
        MailJob(sender="a@x.test", recipients=["b@x.test"], body=BodyInfo()),
    ]
    results = wire.run(s.send_batch(jobs), [second, b""])
    assert all(isinstance(r, SendResult) for r in results)
    assert [m.content for m in wire.messages] == [first, second]


def test_a_file_sized_piece_is_its_own_chunk_uncopied() -> None:
    wire = model()
    s, _ = session()
    wire.run(s.open())
    piece = b"x" * 998 + b"\r\n"
    large = piece * (BDAT_CHUNK_SIZE // len(piece) + 1)
    tail = b"end\r\n"
    body = BodyInfo(size=len(large) + len(tail))
    wire.run(s.sendmail("a@x.test", ["b@x.test"], body=body), [large, tail, b""])
    assert wire.messages[-1].content == large + tail
    assert any(buffer is large for buffer in _buffers(wire))


# ----------------------------------------------------------------------
# A repeated envelope is built and rendered once, and checked every time
# ----------------------------------------------------------------------


def test_a_repeated_envelope_reuses_its_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    wire = model(extensions=("PIPELINING", "SIZE 1000000"))
    s, _ = session()
    wire.run(s.open())
    admitted: list[Any] = []
    send_buffers = s.conn.send_buffers

    def spy(commands: Any) -> list[bytes]:
        admitted.extend(commands)
        return send_buffers(commands)

    monkeypatch.setattr(s.conn, "send_buffers", spy)
    body = BodyInfo.whole(b"Subject: x\r\n\r\nhi\r\n")
    sent: list[list[Any]] = []
    for _ in range(2):
        admitted.clear()
        wire.run(s.sendmail("a@x.test", ["b@x.test", "c@x.test"], body=body))
        sent.append([c for c in admitted if c.verb.value in ("MAIL", "RCPT")])
    assert [c.transcript_line() for c in sent[0]] == [
        "MAIL FROM:<a@x.test> SIZE=18",
        "RCPT TO:<b@x.test>",
        "RCPT TO:<c@x.test>",
    ]
    assert all(first is again for first, again in zip(sent[0], sent[1], strict=True))
    assert len(wire.messages) == 2


@pytest.mark.parametrize(
    ("sender", "recipient", "options", "message"),
    [
        ("a@x.test", "bad address@x.test", None, "recipient"),
        ("bad address@x.test", "b@x.test", None, "sender"),
        ("a@x.test", "b@x.test", {"size": [1]}, "SIZE"),
        ("a@x.test", "b@x.test", {"body": "8bit"}, "BODY"),
    ],
)
def test_a_bad_envelope_is_refused_every_time(
    sender: str, recipient: str, options: dict[str, Any] | None, message: str
) -> None:
    wire = model()
    s, _ = session()
    wire.run(s.open())
    for _ in range(2):
        with pytest.raises(InvalidInputError, match=message):
            wire.run(
                s.sendmail(sender, [recipient], body=BodyInfo.whole(b"x\r\n"), mail_options=options)
            )
    assert wire.messages == []
