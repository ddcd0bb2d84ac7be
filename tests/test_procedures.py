"""Session procedures, driven as a transport would: by the model server and by scripts."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import pytest
from drivers import Script
from model_server import DEFAULT_EXTENSIONS, ModelServer, run_procedure
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
from smtpbee._requests import Poll, Read, Timeouts, TLSMode, UpgradeTLS, Write
from smtpbee._state import State
from smtpbee._transaction import BodyInfo, MailJob, SendResult

BODY = b"Subject: hi\r\n\r\n.dot line\nbare lf\r\n"


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
    server: ModelServer, tls: TLSMode = TLSMode.NONE, **kwargs: Any
) -> tuple[ClientSession, list[str]]:
    s, log = session(tls, **kwargs)
    run_procedure(s.open(), server)
    return s, log


class Counter:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.writes.append(data)


EHLO_PIPE = b"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN\r\n"


def scripted_session(
    *reads: bytes | BaseException, body: Iterable[bytes] = (), **kwargs: Any
) -> tuple[ClientSession, Script]:
    """A session opened against EHLO_PIPE; the script then serves ``reads``."""
    s, _ = session(**kwargs)
    opening = Script([b"220 mx.test\r\n", EHLO_PIPE])
    opening.run(s.open())
    assert not opening.reads
    return s, Script(list(reads), body=body)


# ----------------------------------------------------------------------
# open(): greeting, EHLO/HELO, STARTTLS policy
# ----------------------------------------------------------------------


def test_open_with_required_starttls() -> None:
    server = ModelServer()
    s, log = session(TLSMode.STARTTLS)
    ext = run_procedure(s.open(), server)
    assert s.conn.tls_active and s.tls_verified
    assert "STARTTLS" not in ext
    assert s.extensions_before_tls is not None and s.extensions_before_tls.starttls
    assert server.commands == ["EHLO client.test", "STARTTLS", "EHLO client.test"]
    assert "C: <TLS handshake done>" in log
    assert s.greeting is not None and s.greeting.code == 220


def test_open_opportunistic_and_none() -> None:
    server = ModelServer()
    s, _ = opened(server, TLSMode.OPPORTUNISTIC)
    assert s.conn.tls_active
    server = ModelServer(extensions=("PIPELINING",))
    s, _ = opened(server, TLSMode.OPPORTUNISTIC)
    assert not s.conn.tls_active
    assert server.commands == ["EHLO client.test"]
    server = ModelServer()
    s, _ = opened(server, TLSMode.NONE)
    assert not s.conn.tls_active
    assert server.commands == ["EHLO client.test"]


def test_open_implicit_tls_never_starttls() -> None:
    server = ModelServer(tls=True)
    s, _ = opened(server, TLSMode.IMPLICIT)
    assert s.conn.tls_active
    assert server.commands == ["EHLO client.test"]


def test_tls_required_but_not_offered() -> None:
    server = ModelServer(extensions=("PIPELINING",))
    s, _ = session(TLSMode.STARTTLS)
    with pytest.raises(TLSRequiredError):
        run_procedure(s.open(), server)
    assert server.commands == ["EHLO client.test", "QUIT"]


@pytest.mark.parametrize("mode", [TLSMode.STARTTLS, TLSMode.OPPORTUNISTIC])
def test_starttls_refused(mode: TLSMode) -> None:
    script = Script(
        [
            b"220 mx\r\n",
            b"250-mx\r\n250 STARTTLS\r\n",
            b"454 4.7.0 no TLS today\r\n",
            b"221 bye\r\n",
        ]
    )
    s, _ = session(mode)
    if mode is TLSMode.STARTTLS:
        with pytest.raises(TLSRequiredError, match="454"):
            script.run(s.open())
        assert script.written.endswith(b"STARTTLS\r\nQUIT\r\n")
    else:
        ext = script.run(s.open())
        assert ext.starttls
        assert not s.conn.tls_active
        assert s.conn.state is State.READY


def test_ehlo_refused_falls_back_to_helo() -> None:
    server = ModelServer(refuse_ehlo=True)
    s, _ = opened(server, TLSMode.OPPORTUNISTIC)
    assert server.commands == ["EHLO client.test", "HELO client.test"]
    assert not s.conn.esmtp


def test_ehlo_refused_with_tls_required() -> None:
    server = ModelServer(refuse_ehlo=True)
    s, _ = session(TLSMode.STARTTLS)
    with pytest.raises(TLSRequiredError, match="EHLO"):
        run_procedure(s.open(), server)
    assert server.commands == ["EHLO client.test", "QUIT"]


def test_helo_refused_too() -> None:
    script = Script([b"220 mx\r\n", b"500 what\r\n", b"501 no\r\n"])
    s, _ = session(TLSMode.NONE)
    with pytest.raises(PermanentReplyError) as info:
        script.run(s.open())
    assert info.value.phase == "HELO"


def test_greeting_554_quits() -> None:
    script = Script([b"554 5.3.2 go away\r\n", b"221 bye\r\n"])
    s, _ = session()
    with pytest.raises(PermanentReplyError) as info:
        script.run(s.open())
    assert info.value.code == 554
    assert script.written == b"QUIT\r\n"


def test_greeting_554_then_close() -> None:
    script = Script([b"554 go away\r\n", b""])
    s, _ = session()
    with pytest.raises(PermanentReplyError):
        script.run(s.open())


@pytest.mark.parametrize("greeting", [b"421 4.3.2 busy\r\n", b"450 4.3.2 try later\r\n"])
def test_greeting_4xx_closes_without_a_word(greeting: bytes) -> None:
    script = Script([greeting])
    s, _ = session()
    with pytest.raises(TransientReplyError):
        script.run(s.open())
    assert script.written == b""
    assert not s.conn.open


def test_closed_before_greeting() -> None:
    script = Script([b""])
    s, _ = session()
    with pytest.raises(ConnectionLostError, match="greeting"):
        script.run(s.open())


def test_starttls_injection_through_the_session() -> None:
    script = Script(
        [
            b"220 mx\r\n",
            b"250-mx\r\n250 STARTTLS\r\n",
            b"220 go\r\n250-injected\r\n250 AUTH PLAIN\r\n",
        ]
    )
    s, _ = session(TLSMode.STARTTLS)
    with pytest.raises(RemoteProtocolError, match="injection"):
        script.run(s.open())
    assert s.conn.state is State.ERROR
    assert not any(isinstance(r, UpgradeTLS) for r in script.requests)


def test_failed_handshake_kills_the_session() -> None:
    s, _ = session(TLSMode.STARTTLS)
    proc = s.open()
    server = ModelServer()
    outbox = bytearray(server.start())
    request = next(proc)
    while not isinstance(request, UpgradeTLS):
        if isinstance(request, Write):
            outbox += server.feed(request.data)
            request = proc.send(None)
        elif isinstance(request, Poll):
            # Nothing arrived unasked.
            request = proc.send(None)
        else:
            data = bytes(outbox)
            outbox.clear()
            request = proc.send(data)
    with pytest.raises(ConnectionLostError):
        proc.throw(ConnectionLostError("handshake failed"))
    assert s.conn.state is State.ERROR


def test_unverified_tls_is_remembered() -> None:
    server = ModelServer()
    s, _ = session(TLSMode.STARTTLS)
    run_procedure(s.open(), server, tls_verified=False)
    assert s.conn.tls_active and not s.tls_verified


# ----------------------------------------------------------------------
# AUTH
# ----------------------------------------------------------------------


def test_login_over_verified_tls_picks_plain() -> None:
    server = ModelServer()
    s, log = opened(server, TLSMode.STARTTLS)
    reply = run_procedure(s.login("user", "secret"), server)
    assert reply.code == 235
    assert s.conn.authenticated
    assert server.commands[-1].startswith("AUTH PLAIN ")
    assert "C: AUTH PLAIN <redacted>" in log
    assert not any("secret" in line or "c2VjcmV0" in line for line in log)


def test_login_mechanism_named() -> None:
    server = ModelServer()
    s, log = opened(server, TLSMode.STARTTLS)
    run_procedure(s.login("user", "secret", mechanism="login"), server)
    assert server.commands[-1] == "AUTH LOGIN"
    assert "S: 334 <challenge>" in log
    assert log.count("C: <redacted>") == 2


@pytest.mark.parametrize("tls", [TLSMode.NONE, TLSMode.STARTTLS])
def test_auth_refused_over_plaintext_or_unverified_tls(tls: TLSMode) -> None:
    server = ModelServer()
    s, _ = session(tls)
    run_procedure(s.open(), server, tls_verified=False)
    over = "plaintext" if tls is TLSMode.NONE else "unverified TLS"
    match = "over plaintext" if tls is TLSMode.NONE else "certificate was not verified"
    with pytest.raises(InsecureAuthenticationError, match=match) as info:
        run_procedure(s.login("user", "secret"), server)
    assert info.value.over == over
    assert not any(c.startswith("AUTH") for c in server.commands)
    assert run_procedure(s.login("user", "secret", allow_insecure=True), server).code == 235


def test_auth_535_is_rejected_and_nothing_else_is_tried() -> None:
    server = ModelServer()
    s, _ = opened(server, TLSMode.STARTTLS)
    with pytest.raises(AuthenticationRejected) as info:
        run_procedure(s.login("user", "wrong"), server)
    assert info.value.code == 535
    assert "wrong" not in str(info.value)
    assert [c for c in server.commands if c.startswith("AUTH")] == [server.commands[-1]]
    assert s.conn.state is State.READY and not s.conn.authenticated


def test_auth_454_is_transient() -> None:
    s, script = scripted_session(b"454 4.7.0 try later\r\n")
    with pytest.raises(TransientReplyError) as info:
        script.run(s.login("u", "p", allow_insecure=True))
    assert not isinstance(info.value, AuthenticationRejected)
    assert info.value.code == 454


def test_auth_bad_base64_challenge_is_cancelled() -> None:
    s, script = scripted_session(b"334 !!!notbase64\r\n", b"501 cancelled\r\n")
    with pytest.raises(RemoteProtocolError, match="base64"):
        script.run(s.login("u", "p", mechanism="LOGIN", allow_insecure=True))
    assert script.written == b"AUTH LOGIN\r\n*\r\n"
    # A server that breaks SASL has broken the session: nothing more goes out.
    assert s.conn.state is State.ERROR


def test_failed_write_of_the_terminator_leaves_the_outcome_unknown() -> None:
    s, script = scripted_session(
        b"250 ok\r\n250 ok\r\n354 go\r\n", body=[b"Subject: x\r\n\r\nhi\r\n"]
    )
    script.fail_write_containing = b".\r\n"
    with pytest.raises(OutcomeUnknownError, match="may have been accepted"):
        script.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=20)))
    assert s.conn.state is State.ERROR


def test_failed_write_before_the_terminator_is_a_plain_connection_error() -> None:
    s, script = scripted_session()
    script.fail_write_containing = b"NOOP"
    with pytest.raises(ConnectionLostError):
        script.run(s.noop())
    assert s.conn.state is State.ERROR


def test_auth_mechanism_refusing_a_challenge_is_cancelled() -> None:
    # PLAIN sent everything up front: another challenge makes no sense.
    s, script = scripted_session(b"334 eA==\r\n", b"501 cancelled\r\n")
    with pytest.raises(RemoteProtocolError, match="PLAIN"):
        script.run(s.login("u", "p", allow_insecure=True))
    assert script.written.endswith(b"\r\n*\r\n")


def test_auth_long_initial_response_goes_after_an_empty_challenge() -> None:
    s, script = scripted_session(b"334 \r\n", b"235 ok\r\n")
    password = "p" * 600
    script.run(s.authenticate(Plain("user", password), allow_insecure=True))
    lines = script.written.split(b"\r\n")
    assert lines[0] == b"AUTH PLAIN"
    assert base64.b64decode(lines[1]) == b"\0user\0" + password.encode()


def test_auth_not_offered() -> None:
    server = ModelServer(extensions=("PIPELINING",))
    s, _ = opened(server)
    with pytest.raises(UnsupportedExtensionError):
        run_procedure(s.login("user", "secret", allow_insecure=True), server)


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

    s, script = scripted_session(b"535 5.7.8 no\r\n")
    with pytest.raises(AuthenticationRejected) as info:
        script.run(s.authenticate(Picky(), allow_insecure=True))
    assert "the token expired" in info.value.phase


# ----------------------------------------------------------------------
# The mail transaction
# ----------------------------------------------------------------------


def test_pipelined_and_chunked_is_one_write_and_one_read() -> None:
    server = ModelServer()
    s, _ = opened(server)
    writes = Counter()
    reads = server.reads
    result = run_procedure(
        s.sendmail("a@x.test", ["b@x.test", "c@x.test"], body=BodyInfo.of_bytes(BODY)),
        server,
        [BODY],
        on_write=writes,
    )
    assert len(writes.writes) == 1
    assert writes.writes[0].startswith(
        b"MAIL FROM:<a@x.test> SIZE=34\r\nRCPT TO:<b@x.test>\r\n"
        b"RCPT TO:<c@x.test>\r\nBDAT 35 LAST\r\n"
    )
    assert server.reads - reads == 1
    assert result.accepted == ["b@x.test", "c@x.test"]
    assert result.refused == {}
    assert result.data is not None and result.data.code == 250
    assert server.delivered[-1].content == b"Subject: hi\r\n\r\n.dot line\r\nbare lf\r\n"


def test_pipelined_data() -> None:
    server = ModelServer(extensions=("PIPELINING", "8BITMIME", "SIZE 100000"))
    s, log = opened(server)
    writes = Counter()
    result = run_procedure(
        s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(BODY)),
        server,
        [BODY],
        on_write=writes,
    )
    assert writes.writes[0] == b"MAIL FROM:<a@x.test> SIZE=34\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"
    assert server.delivered[-1].content == b"Subject: hi\r\n\r\n.dot line\r\nbare lf\r\n"
    assert result.data is not None and result.data.is_success
    assert "C: <34 octets of content>" in log
    assert "C: ." in log


def test_lockstep_without_pipelining() -> None:
    server = ModelServer(extensions=("8BITMIME", "CHUNKING"))
    s, _ = opened(server)
    writes = Counter()
    run_procedure(
        s.sendmail("a@x.test", ["b@x.test", "c@x.test"], body=BodyInfo.of_bytes(BODY)),
        server,
        [BODY[:10], BODY[10:]],
        on_write=writes,
    )
    # CHUNKING without PIPELINING: DATA, one command per write.
    assert writes.writes[:4] == [
        b"MAIL FROM:<a@x.test>\r\n",
        b"RCPT TO:<b@x.test>\r\n",
        b"RCPT TO:<c@x.test>\r\n",
        b"DATA\r\n",
    ]
    # The two body pieces are gathered and go out with the terminator.
    assert writes.writes[4:] == [b"Subject: hi\r\n\r\n..dot line\r\nbare lf\r\n.\r\n"]
    assert server.delivered[-1].recipients == ["b@x.test", "c@x.test"]


def test_lockstep_binary_uses_bdat() -> None:
    server = ModelServer(extensions=("CHUNKING", "BINARYMIME"))
    s, _ = opened(server)
    body = b"\x00\xff\r\n\r.\n"
    run_procedure(
        s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=len(body), binary=True)),
        server,
        [body],
    )
    assert server.delivered[-1].content == body
    assert server.delivered[-1].mail_line == "MAIL FROM:<a@x.test> BODY=BINARYMIME"


def test_a_refused_recipient_is_partial_success() -> None:
    server = ModelServer(refuse_recipients={"bad@x.test"})
    s, _ = opened(server)
    result = run_procedure(
        s.sendmail("a@x.test", ["b@x.test", "bad@x.test"], body=BodyInfo.of_bytes(BODY)),
        server,
        [BODY],
    )
    assert result.accepted == ["b@x.test"]
    assert list(result.refused) == ["bad@x.test"]
    assert result.refused["bad@x.test"].code == 550


@pytest.mark.parametrize("extensions", [DEFAULT_EXTENSIONS, ("PIPELINING",), ("CHUNKING",), ()])
def test_every_recipient_refused(extensions: tuple[str, ...]) -> None:
    server = ModelServer(extensions=extensions, refuse_recipients={"x@x.test", "y@x.test"})
    s, _ = opened(server)
    with pytest.raises(PermanentReplyError) as info:
        run_procedure(
            s.sendmail("a@x.test", ["x@x.test", "y@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")),
            server,
            [b"hi\r\n"],
        )
    assert set(info.value.recipients) == {"x@x.test", "y@x.test"}
    assert server.commands[-1] == "RSET"
    assert server.delivered == []
    assert s.conn.state is State.READY


def test_every_recipient_refused_transiently() -> None:
    s, script = scripted_session(
        b"250 ok\r\n451 later\r\n452 later\r\n503 no\r\n", b"250 reset\r\n"
    )
    with pytest.raises(TransientReplyError) as info:
        script.run(
            s.sendmail("a@x.test", ["b@x.test", "c@x.test"], body=BodyInfo(size=2, eight_bit=False))
        )
    assert info.value.code == 451


def test_data_354_after_every_recipient_refused_sends_the_terminator_alone() -> None:
    s, script = scripted_session(
        b"250 ok\r\n550 no\r\n354 go\r\n", b"554 no recipients\r\n", b"250 reset\r\n"
    )
    with pytest.raises(PermanentReplyError):
        script.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=2, eight_bit=False)))
    assert script.written == b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n.\r\nRSET\r\n"


def test_mail_refused() -> None:
    s, script = scripted_session(
        b"550 5.7.1 not you\r\n503 need MAIL\r\n503 need MAIL\r\n", b"250 reset\r\n"
    )
    with pytest.raises(PermanentReplyError) as info:
        script.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=2, eight_bit=False)))
    assert info.value.phase == "MAIL"
    assert info.value.command == "MAIL FROM:<a@x.test>"
    assert script.written.endswith(b"RSET\r\n")


def test_mail_refused_with_bdat_pipelined() -> None:
    server = ModelServer()
    s, _ = opened(server)
    script = Script([b"550 no\r\n503 no\r\n503 no\r\n", b"250 ok\r\n"], body=[b"hi\r\n"])
    s2 = s
    with pytest.raises(PermanentReplyError):
        script.run(s2.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")))
    assert script.written.endswith(b"BDAT 4 LAST\r\nhi\r\nRSET\r\n")


def test_content_refused_then_rset() -> None:
    server = ModelServer(refuse_content=True, extensions=("PIPELINING", "8BITMIME"))
    s, _ = opened(server)
    with pytest.raises(PermanentReplyError) as info:
        run_procedure(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(BODY)), server, [BODY]
        )
    assert "end of content" in info.value.phase
    assert server.commands[-1] == "RSET"


def test_bdat_content_refused_then_rset() -> None:
    server = ModelServer(refuse_content=True)
    s, _ = opened(server)
    with pytest.raises(PermanentReplyError):
        run_procedure(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(BODY)), server, [BODY]
        )
    assert server.commands[-1] == "RSET"
    assert s.conn.state is State.READY


@pytest.mark.parametrize(
    ("replies", "bad"),
    [
        (b"251 ok\r\n250 ok\r\n354 go\r\n", "251 is not a valid reply to MAIL"),
        (b"250 ok\r\n252 maybe\r\n354 go\r\n", "252 is not a valid reply to RCPT"),
        (b"250 ok\r\n250 ok\r\n250 go\r\n", "250 is not a valid reply to DATA"),
    ],
)
def test_a_2xx_that_is_not_the_commands_success_ends_the_session(replies: bytes, bad: str) -> None:
    # Only the codes RFC 5321 lists for a command are its success, not any 2xx.
    s, script = scripted_session(replies, body=[b"hi\r\n"])
    with pytest.raises(RemoteProtocolError, match=bad):
        script.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=4, eight_bit=False)))
    assert s.conn.state is State.ERROR
    # Neither the content nor an RSET went out after the bad reply.
    assert script.written == b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"


def test_data_refused() -> None:
    s, script = scripted_session(b"250 ok\r\n250 ok\r\n451 not now\r\n", b"250 reset\r\n")
    with pytest.raises(TransientReplyError) as info:
        script.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=2, eight_bit=False)))
    assert info.value.command == "DATA"


def test_large_streamed_body_in_several_chunks() -> None:
    server = ModelServer(extensions=("PIPELINING", "CHUNKING", "8BITMIME"))
    s, _ = opened(server)
    piece = b"line of text\n" * 10000  # 130 000 octets, 140 000 on the wire
    pieces = [piece] * 10
    writes = Counter()
    run_procedure(
        s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo()), server, pieces, on_write=writes
    )
    bdats = [w for w in writes.writes if b"BDAT " in w[:200]]
    assert len(bdats) >= 2
    assert server.delivered[-1].content == piece.replace(b"\n", b"\r\n") * 10
    assert "BODY=8BITMIME" in server.delivered[-1].mail_line


MIB = 1 << 20


def test_bdat_chunks_are_pipelined_a_few_at_a_time() -> None:
    server = ModelServer(extensions=("PIPELINING", "CHUNKING"))
    s, _ = opened(server)
    writes = Counter()
    reads_before = server.reads
    run_procedure(
        s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)),
        server,
        [b"x" * MIB] * 6,
        on_write=writes,
    )
    assert server.delivered[-1].content == b"x" * (6 * MIB) + b"\r\n"
    bdats = [w[: w.index(b"\r\n")] for w in writes.writes[1:]]
    assert bdats == [b"BDAT 1048576"] * 5 + [b"BDAT 2 LAST"]
    # The first chunk's reply is awaited (the envelope may fail); then four
    # chunks go out before their replies are read, not one round trip each.
    assert server.reads - reads_before < 6


def test_a_refused_chunk_with_others_in_flight() -> None:
    s, _ = session()
    chunking = b"250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
    Script([b"220 mx.test\r\n", chunking]).run(s.open())
    script = Script(
        [
            b"250 ok\r\n250 ok\r\n250 chunk 1\r\n",
            b"552 chunk 2 too much\r\n",
            b"503 bad sequence\r\n503 bad sequence\r\n503 bad sequence\r\n",
            b"250 reset\r\n",
        ],
        body=[b"x" * MIB] * 5,
    )
    with pytest.raises(PermanentReplyError) as info:
        script.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)))
    assert info.value.code == 552 and info.value.phase == "BDAT"
    # Chunks 2 to 5 were on their way; every reply was read before the RSET.
    assert script.written.count(b"BDAT ") == 5
    assert script.written.endswith(b"RSET\r\n") and not script.reads
    assert s.conn.state is State.READY


def test_many_data_pieces() -> None:
    server = ModelServer(extensions=("PIPELINING",))
    s, _ = opened(server)
    pieces = [b"a\n", b".b", b"\r", b"\n.", b"\n"] * 50
    writes = Counter()
    run_procedure(
        s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)),
        server,
        pieces,
        on_write=writes,
    )
    # Small pieces are gathered: the envelope, then content and terminator together.
    assert len(writes.writes) == 2
    assert server.delivered[-1].content == b"".join(pieces).replace(b"\r\n", b"\n").replace(
        b"\n", b"\r\n"
    )


def test_large_data_body_is_written_in_bounded_pieces() -> None:
    server = ModelServer(extensions=("PIPELINING",))
    s, _ = opened(server)
    pieces = [b"x" * 999 + b"\n"] * 300
    writes = Counter()
    run_procedure(
        s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)),
        server,
        pieces,
        on_write=writes,
    )
    content_writes = writes.writes[1:]
    assert len(content_writes) == 5
    assert all(len(w) <= (1 << 16) + 1001 for w in content_writes)
    assert content_writes[-1].endswith(b"\r\n.\r\n")
    assert server.delivered[-1].content == b"".join(pieces).replace(b"\n", b"\r\n")


def test_eight_bit_body_without_8bitmime_is_refused_before_anything() -> None:
    server = ModelServer(extensions=("PIPELINING",))
    s, _ = opened(server)
    before = list(server.commands)
    with pytest.raises(UnsupportedExtensionError, match="8BITMIME"):
        run_procedure(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(b"caf\xc3\xa9")),
            server,
            [b"x"],
        )
    assert server.commands == before


def test_streamed_eight_bit_without_8bitmime_kills_a_data_session() -> None:
    server = ModelServer(extensions=("PIPELINING",))
    s, _ = opened(server)
    with pytest.raises(InvalidInputError):
        run_procedure(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo()), server, [b"ok\r\n", b"\xff\r\n"]
        )
    assert s.conn.state is State.ERROR
    assert server.delivered == []


def test_bad_later_chunk_resets_a_bdat_transaction() -> None:
    server = ModelServer(extensions=("PIPELINING", "CHUNKING", "SIZE 1500000"))
    s, _ = opened(server)
    with pytest.raises(LocalProtocolError):
        run_procedure(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)),
            server,
            [b"x" * (1 << 20), b"y" * (1 << 19)],
        )
    assert server.commands[-1] == "RSET"
    assert s.conn.state is State.READY


def test_bad_later_chunk_with_others_in_flight() -> None:
    server = ModelServer(extensions=("PIPELINING", "CHUNKING", "SIZE 3670016"))
    s, _ = opened(server)
    with pytest.raises(MessageTooLargeError):
        run_procedure(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)),
            server,
            [b"x" * MIB] * 4,
        )
    # Chunks 2 and 3 were in flight: their replies are read, then RSET.
    assert server.commands[-4:] == ["BDAT 1048576", "BDAT 1048576", "BDAT 1048576", "RSET"]
    assert s.conn.state is State.READY and not s.conn.pending


def test_size_over_the_limit_is_refused_before_anything() -> None:
    server = ModelServer(extensions=("PIPELINING", "SIZE 10"))
    s, _ = opened(server)
    with pytest.raises(MessageTooLargeError):
        run_procedure(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(BODY)), server, [BODY]
        )
    assert server.commands == ["EHLO client.test"]


def test_no_recipients() -> None:
    s, _ = session()
    with pytest.raises(InvalidInputError):
        next(s.sendmail("a@x.test", [], body=BodyInfo()))


def test_duplicate_recipients_are_sent_once() -> None:
    server = ModelServer()
    s, _ = opened(server)
    run_procedure(
        s.sendmail("a@x.test", ["b@x.test", "b@x.test"], body=BodyInfo.of_bytes(b"x\r\n")),
        server,
        [b"x\r\n"],
    )
    assert server.commands.count("RCPT TO:<b@x.test>") == 1


def test_smtputf8_addresses() -> None:
    server = ModelServer()
    s, _ = opened(server)
    run_procedure(
        s.sendmail("jörg@x.test", ["ü@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")),
        server,
        [b"hi\r\n"],
    )
    assert server.delivered[-1].mail_line == "MAIL FROM:<jörg@x.test> SIZE=4 SMTPUTF8"
    assert server.delivered[-1].recipients == ["ü@x.test"]
    # The sender alone is enough to ask for SMTPUTF8.
    run_procedure(
        s.sendmail("jörg@x.test", ["b@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")),
        server,
        [b"hi\r\n"],
    )
    assert server.delivered[-1].mail_line.endswith(" SMTPUTF8")


def test_smtputf8_not_offered() -> None:
    server = ModelServer(extensions=("PIPELINING", "8BITMIME"))
    s, _ = opened(server)
    with pytest.raises(UnsupportedExtensionError, match="SMTPUTF8"):
        run_procedure(
            s.sendmail("a@x.test", ["ü@x.test"], body=BodyInfo.of_bytes(b"hi")), server, [b"hi"]
        )


def test_mail_and_rcpt_options() -> None:
    server = ModelServer()
    s, _ = opened(server)
    run_procedure(
        s.sendmail(
            "a@x.test",
            ["b@x.test"],
            body=BodyInfo.of_bytes(b"hi\r\n"),
            mail_options={"ret": "HDRS", "envid": "id1"},
            rcpt_options={"notify": "NEVER"},
        ),
        server,
        [b"hi\r\n"],
    )
    assert server.delivered[-1].mail_line == "MAIL FROM:<a@x.test> SIZE=4 RET=HDRS ENVID=id1"
    assert "RCPT TO:<b@x.test> NOTIFY=NEVER" in server.commands


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
    server = ModelServer()
    s, _ = opened(server)
    before = list(server.commands)
    with pytest.raises(InvalidInputError, match=named):
        run_procedure(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(b"hi\r\n"), **options),
            server,
            [b"hi\r\n"],
        )
    # Nothing was sent and the session goes on.
    assert server.commands == before
    assert s.conn.state is State.READY
    run_procedure(
        s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")), server, [b"hi\r\n"]
    )
    assert len(server.delivered) == 1


def test_lmtp_per_recipient_results() -> None:
    script = Script(
        [
            b"220 lmtp\r\n",
            b"250-lmtp\r\n250 8BITMIME\r\n",
            b"250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n354 go\r\n",
            b"250 b delivered\r\n452 c over quota\r\n",
        ],
        body=[b"hi\r\n"],
    )
    s, _ = session(lmtp=True)
    script.run(s.open())
    result = script.run(
        s.sendmail(
            "a@x.test", ["b@x.test", "bad@x.test", "c@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")
        )
    )
    assert result.delivery["b@x.test"].code == 250
    assert result.delivery["c@x.test"].code == 452
    assert set(result.refused) == {"bad@x.test", "c@x.test"}
    assert result.accepted == ["b@x.test"]
    assert b"LHLO client.test" in script.written


def test_lmtp_bdat_every_delivery_failed() -> None:
    server = ModelServer(lmtp=True, refuse_content=True, extensions=("CHUNKING", "8BITMIME"))
    s, _ = session(lmtp=True)
    run_procedure(s.open(), server)
    with pytest.raises(PermanentReplyError) as info:
        run_procedure(
            s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")),
            server,
            [b"hi\r\n"],
        )
    assert set(info.value.recipients) == {"b@x.test"}
    assert server.commands[-1] == "RSET"


def test_lmtp_bdat_delivery() -> None:
    server = ModelServer(lmtp=True, extensions=("CHUNKING", "8BITMIME"))
    s, _ = session(lmtp=True)
    run_procedure(s.open(), server)
    result = run_procedure(
        s.sendmail("a@x.test", ["b@x.test", "c@x.test"], body=BodyInfo.of_bytes(b"hi\r\n")),
        server,
        [b"hi\r\n"],
    )
    assert list(result.delivery) == ["b@x.test", "c@x.test"]


# ----------------------------------------------------------------------
# Timeouts and lost connections
# ----------------------------------------------------------------------


def test_timeout_while_reading_the_final_reply_is_outcome_unknown() -> None:
    s, script = scripted_session(
        b"250 ok\r\n250 ok\r\n354 go\r\n", SMTPTimeoutError("slow"), body=[b"hi\r\n"]
    )
    with pytest.raises(OutcomeUnknownError) as info:
        script.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)))
    assert isinstance(info.value.__cause__, SMTPTimeoutError)
    # Who would have the message, if the server did take it.
    assert {a: r.code for a, r in info.value.recipients.items()} == {"b@x.test": 250}
    assert s.conn.state is State.ERROR
    reads = [r for r in script.requests if isinstance(r, Read)]
    assert reads[-1].phase is Phase.DATA_TERMINATION
    assert reads[-1].timeout == 600.0


def test_timeout_earlier_is_a_timeout() -> None:
    s, script = scripted_session(SMTPTimeoutError("slow"))
    with pytest.raises(SMTPTimeoutError):
        script.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)))
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
    s, script = scripted_session(
        b"250 ok\r\n250 ok\r\n354 go\r\n", b"250 part", b"", body=[b"hi\r\n"]
    )
    with pytest.raises(OutcomeUnknownError):
        script.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)))


def test_closed_earlier_is_connection_lost() -> None:
    s, script = scripted_session(b"")
    with pytest.raises(ConnectionLostError):
        script.run(s.noop())


def test_421_ends_the_procedure() -> None:
    s, script = scripted_session(b"421 4.3.2 shutting down\r\n")
    with pytest.raises(TransientReplyError) as info:
        script.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(eight_bit=False)))
    assert info.value.code == 421
    assert s.conn.state is State.CLOSING
    s, script = scripted_session(b"421 bye\r\n")
    with pytest.raises(TransientReplyError):
        script.run(s.noop())


def test_421_to_ehlo_is_not_followed_by_helo() -> None:
    script = Script([b"220 mx\r\n", b"421 busy\r\n"])
    s, _ = session()
    with pytest.raises(TransientReplyError):
        script.run(s.open())
    assert script.written == b"EHLO client.test\r\n"


def test_421_to_quit_is_returned() -> None:
    s, script = scripted_session(b"421 bye anyway\r\n")
    assert script.run(s.quit()).code == 421


def test_read_new_wait() -> None:
    s, script = scripted_session(b"25", b"0 o", b"k\r\n", b"250 again\r\n")
    script.run(s.noop())
    reads = [r for r in script.requests if isinstance(r, Read)]
    assert [r.new_wait for r in reads] == [True, False, False]
    assert all(r.phase is Phase.COMMAND for r in reads)
    script.requests.clear()
    script.run(s.noop())
    assert [r.new_wait for r in script.requests if isinstance(r, Read)] == [True]


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
    s, script = scripted_session(b"250 ok\r\n", timeouts=Timeouts.uniform(7))
    script.run(s.noop())
    assert all(r.timeout == 7 for r in script.requests if isinstance(r, Read | Write))


# ----------------------------------------------------------------------
# Small commands and the transcript
# ----------------------------------------------------------------------


def test_small_commands() -> None:
    server = ModelServer()
    s, log = opened(server)
    assert run_procedure(s.noop(), server).code == 250
    assert run_procedure(s.rset(), server).code == 250
    assert run_procedure(s.vrfy("postmaster"), server).code == 252
    assert run_procedure(s.expn("staff"), server).code == 502
    help_reply = run_procedure(s.help(), server)
    assert len(help_reply.lines) == 2
    assert run_procedure(s.help("MAIL"), server).code == 214
    replies = run_procedure(
        s.pipeline(
            [
                Noop(),
            ]
        ),
        server,
    )
    assert [r.code for r in replies] == [250]
    assert run_procedure(s.quit(), server).code == 221
    assert s.conn.state is State.CLOSING
    assert "S: 214-2.0.0 Commands:" in log
    assert log[0] == "S: 220 model.test ESMTP ready"
    assert "C: QUIT" in log and log[-1] == "S: 221 2.0.0 Bye"


def test_checked_refusal() -> None:
    s, script = scripted_session(b"500 no noop\r\n")
    with pytest.raises(PermanentReplyError) as info:
        script.run(s.noop())
    assert info.value.phase == "NOOP"


def test_no_transcript_is_fine() -> None:
    server = ModelServer()
    s = ClientSession(local_hostname="client.test", tls=TLSMode.NONE)
    run_procedure(s.open(), server)
    assert run_procedure(s.noop(), server).code == 250


def test_send_result() -> None:
    ok = Reply(code=250, lines=(b"ok",))
    no = Reply(code=550, lines=(b"no",))
    result = SendResult(recipients={"a": ok, "b": no, "c": ok}, delivery={"c": no})
    assert result.accepted == ["a"]
    assert set(result.refused) == {"b", "c"}
    assert BodyInfo.of_bytes(b"\xff") == BodyInfo(size=1, eight_bit=True)


def test_eight_bit_body_rides_on_smtputf8_without_8bitmime() -> None:
    server = ModelServer(extensions=("PIPELINING", "SMTPUTF8"))
    s, _ = opened(server)
    body = "Subject: café\r\n\r\n".encode()
    run_procedure(
        s.sendmail("jörg@x.test", ["b@x.test"], body=BodyInfo.of_bytes(body)), server, [body]
    )
    assert server.delivered[-1].mail_line == "MAIL FROM:<jörg@x.test> SMTPUTF8"
    assert server.delivered[-1].content == body


def test_lockstep_mail_refused_sends_no_rcpt() -> None:
    script = Script([b"550 not you\r\n", b"250 reset\r\n"])
    s, _ = session()
    Script([b"220 mx\r\n", b"250 mx\r\n"]).run(s.open())
    with pytest.raises(PermanentReplyError):
        script.run(s.sendmail("a@x.test", ["b@x.test"], body=BodyInfo(size=1, eight_bit=False)))
    assert script.written == b"MAIL FROM:<a@x.test>\r\nRSET\r\n"


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
    server = ModelServer(extensions=("PIPELINING",))
    s, _ = opened(server)
    writes = Counter()
    reads_before = server.reads
    results = run_procedure(
        s.send_batch(_jobs(["b@x.test"], ["c@x.test"], ["d@x.test"])),
        server,
        _bodies(3),
        on_write=writes,
    )
    assert [r.accepted for r in results] == [["b@x.test"], ["c@x.test"], ["d@x.test"]]
    assert [d.content for d in server.delivered] == [
        b"Subject: %d\r\n\r\n.dot %d\r\n" % (i, i) for i in range(3)
    ]
    # The terminator of one message and the next envelope share a write.
    assert len(writes.writes) == 4
    assert writes.writes[1].startswith(b"Subject: 0") and b"\r\n.\r\nMAIL FROM:" in writes.writes[1]
    assert writes.writes[1].endswith(b"RCPT TO:<c@x.test>\r\nDATA\r\n")
    assert server.reads - reads_before == 4


def test_send_batch_settles_each_failure_on_its_own() -> None:
    server = ModelServer(
        extensions=("PIPELINING",),
        refuse_recipients={"gone@x.test"},
        refuse_content_containing=b"REFUSE",
    )
    s, _ = opened(server)
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
    results = run_procedure(s.send_batch(jobs), server, bodies)
    assert isinstance(results[0], SendResult)
    assert isinstance(results[1], InvalidInputError)
    assert (
        isinstance(results[2], PermanentReplyError)
        and results[2].recipients["gone@x.test"].code == 550
    )
    assert isinstance(results[3], PermanentReplyError) and results[3].code == 554
    assert isinstance(results[4], SendResult)
    assert [d.content for d in server.delivered] == [b"first\r\n", b"last\r\n"]
    assert b"never sent" not in server.received and b"unwanted" not in server.received
    # RSET only after the refused envelope; a refused content needs none.
    assert server.commands.count("RSET") == 1


def test_send_batch_with_chunking_sends_each_message_in_one_write() -> None:
    server = ModelServer(extensions=("PIPELINING", "CHUNKING"))
    s, _ = opened(server)
    writes = Counter()
    results = run_procedure(
        s.send_batch(_jobs(["b@x.test"], ["c@x.test"])), server, _bodies(2), on_write=writes
    )
    assert all(isinstance(r, SendResult) for r in results)
    assert len(writes.writes) == 2 and all(b"BDAT " in w for w in writes.writes)


def test_send_batch_without_pipelining_goes_step_by_step() -> None:
    server = ModelServer(extensions=())
    s, _ = opened(server)
    results = run_procedure(s.send_batch(_jobs(["b@x.test"], ["gone@x.test"])), server, _bodies(2))
    assert isinstance(results[0], SendResult) and isinstance(results[1], SendResult)
    assert len(server.delivered) == 2


def test_send_batch_reports_the_unsettled_message_as_outcome_unknown() -> None:
    s, script = scripted_session(
        b"250 ok\r\n250 ok\r\n354 go\r\n",
        b"",  # the server closes instead of answering message 1's content
        body=[b"one\r\n", b"", b"two\r\n", b"", b"three\r\n", b""],
    )
    results = script.run(s.send_batch(_jobs(["b@x.test"], ["c@x.test"], ["d@x.test"])))
    assert len(results) == 3
    assert isinstance(results[0], OutcomeUnknownError)
    # The later messages were never sent: their outcome is known.
    for later in results[1:]:
        assert isinstance(later, ConnectionLostError)
        assert not isinstance(later, OutcomeUnknownError)
    assert s.conn.state in (State.CLOSED, State.ERROR)


def test_send_batch_with_chunking_records_a_refused_envelope() -> None:
    server = ModelServer(extensions=("PIPELINING", "CHUNKING"), refuse_recipients={"gone@x.test"})
    s, _ = opened(server)
    results = run_procedure(s.send_batch(_jobs(["gone@x.test"], ["c@x.test"])), server, _bodies(2))
    assert isinstance(results[0], PermanentReplyError) and results[0].code == 550
    assert isinstance(results[1], SendResult)
    assert [d.recipients for d in server.delivered] == [["c@x.test"]]


def test_send_batch_garbage_while_awaiting_a_final_reply() -> None:
    s, script = scripted_session(
        b"250 ok\r\n250 ok\r\n354 go\r\n",
        b"xyz\r\n",
        body=[b"one\r\n", b"", b"two\r\n", b""],
    )
    results = script.run(s.send_batch(_jobs(["b@x.test"], ["c@x.test"])))
    assert isinstance(results[0], OutcomeUnknownError)
    assert isinstance(results[0].__cause__, RemoteProtocolError)
    # The second message never went out: not unknown, and it says why the session ended.
    assert isinstance(results[1], ConnectionLostError)
    assert not isinstance(results[1], OutcomeUnknownError)
    assert results[1].__cause__ is results[0]
    assert s.conn.state is State.ERROR


def test_send_batch_last_message_lost_at_its_final_reply() -> None:
    s, script = scripted_session(b"250 ok\r\n250 ok\r\n354 go\r\n", b"", body=[b"one\r\n", b""])
    results = script.run(s.send_batch(_jobs(["b@x.test"])))
    assert len(results) == 1 and isinstance(results[0], OutcomeUnknownError)


def test_send_batch_timeout_before_any_content() -> None:
    s, script = scripted_session(SMTPTimeoutError("too slow"), body=[b"one\r\n", b""])
    results = script.run(s.send_batch(_jobs(["b@x.test"], ["c@x.test"])))
    # No None entries: the job the session never reached gets the same error.
    assert len(results) == 2
    assert isinstance(results[0], SMTPTimeoutError) and results[1] is results[0]
    assert not isinstance(results[0], OutcomeUnknownError)
