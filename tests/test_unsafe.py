"""The unsafe path: raw bytes, lines and bodies exactly as given, and the unchecked mode after.

On the core (smtpbee.UnsafeSession under the procedure driver) and on the three
clients (``client.unsafe``). What reaches the server is compared byte for byte;
what the safe API does afterwards (refuse, QUIT) and how the transcript and the
session log mark unsafe writes ("C!", ``"unsafe": true``) are checked too. The
TLS upgrade of the path (start_tls, after a STARTTLS sent raw) is the STARTTLS
injection probe: commands pipelined behind STARTTLS and answered under TLS,
and replies sent before the handshake (refused, as on the safe path).
"""

from __future__ import annotations

from typing import Any

import pytest
from flavours import Client, Flavour, finished
from servers import LoopbackCA
from smtpbee import (
    ClientSession,
    Connection,
    ConnectionLostError,
    InvalidInputError,
    LocalProtocolError,
    Mail,
    Noop,
    PermanentReplyError,
    Poll,
    RemoteProtocolError,
    SessionLog,
    SMTPTimeoutError,
    StartTLSInjectionError,
    TLSMode,
    TLSVerificationError,
    TransientReplyError,
    UnsafeSession,
    UpgradeTLS,
    Verb,
)
from smtpbee._commands import Rcpt
from smtpbee.testing import (
    Command,
    ProcedureDriver,
    Response,
    ScriptedServer,
    ServerSession,
    close,
    inject,
    reset,
    stall,
    start_tls,
)

SMUGGLED = b"Subject: s\r\n\r\nbare lf\n.\nlone cr\r.\rend"


def injectable_starttls(command: Command, session: ServerSession) -> Response:
    """STARTTLS as CVE-2011-0411: plaintext read behind it is answered after the handshake."""
    behind = [line for line in session.take_buffered().split(b"\r\n") if line]
    return ["220 2.0.0 Ready to start TLS", start_tls(), *(b"250 2.0.0 Ok\r\n" for _ in behind)]


# A 220 with a reply behind it in the same write, and no handshake ever.
RESPONSE_INJECTION = {"STARTTLS": [b"220 go\r\n250 injected\r\n", stall()]}


def opened(
    server: ScriptedServer, driver: ProcedureDriver | None = None, **options: Any
) -> tuple[ClientSession, UnsafeSession, ProcedureDriver, list[str]]:
    """A session past EHLO on the driver, its unsafe path, and its transcript lines."""
    driver = driver or server.driver()
    lines: list[str] = []
    options.setdefault("tls", TLSMode.NONE)
    session = ClientSession(
        local_hostname="client.test",
        transcript=lambda direction, line: lines.append(f"{direction}: {line}"),
        **options,
    )
    driver.run(session.open())
    return session, UnsafeSession(session.exchange), driver, lines


def client_bytes(driver: ProcedureDriver) -> bytes:
    return driver.transcript.client()


# ------------------------------------------------------------------------------------
# On the core


def test_raw_bytes_reach_the_wire_exactly_and_replies_are_read() -> None:
    session, unsafe, driver, lines = opened(ScriptedServer())
    before = len(client_bytes(driver))
    raw = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n"
    replies = driver.run(unsafe.send_raw(raw, replies=2))
    assert client_bytes(driver)[before:] == raw
    assert [r.code for r in replies] == [250, 250]
    assert "C!: MAIL FROM:<a@x.test>" in lines and "C!: RCPT TO:<b@x.test>" in lines
    assert "S: 250 2.1.0 Sender <a@x.test> OK" in lines
    assert session.conn.unchecked


def test_send_line_writes_anything_the_safe_path_refuses() -> None:
    _, unsafe, driver, lines = opened(ScriptedServer())
    [reply] = driver.run(unsafe.send_line("NOOP with\x00nul and a bare\nLF"))
    assert b"NOOP with\x00nul and a bare\nLF\r\n" in client_bytes(driver)
    assert reply.code in (250, 500, 501, 502)
    assert "C!: NOOP with\\x00nul and a bare\\nLF" in lines
    driver.run(unsafe.send_line(b"NOOP", replies=0))
    assert client_bytes(driver).endswith(b"NOOP\r\n")
    with pytest.raises(InvalidInputError, match="str or bytes"):
        driver.run(unsafe.send_line(42))  # type: ignore[arg-type]


def test_a_partial_line_is_marked_in_the_transcript() -> None:
    _, unsafe, driver, lines = opened(ScriptedServer())
    assert driver.run(unsafe.send_raw(b"NO", replies=0)) == []
    assert lines[-1] == "C!: NO <no CRLF>"
    [reply] = driver.run(unsafe.send_raw(b"OP\r\n"))
    assert reply.code == 250
    assert client_bytes(driver).endswith(b"NOOP\r\n")


def test_data_raw_sends_a_bare_lf_body_exactly() -> None:
    server = ScriptedServer()
    session, unsafe, driver, lines = opened(server)
    driver.run(unsafe.send_raw(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n", replies=2))
    reply = driver.run(unsafe.data_raw(SMUGGLED))
    assert reply.code == 250
    assert client_bytes(driver).endswith(b"DATA\r\n" + SMUGGLED + b"\r\n.\r\n")
    [message] = driver.messages
    assert message.content == SMUGGLED + b"\r\n"  # the CRLF of the terminator ends the last line
    assert "C!: DATA" in lines and f"C!: <{len(SMUGGLED)} octets of raw content>" in lines
    assert "C!: <end of content: \\r\\n.\\r\\n>" in lines
    # A terminator of one's own choosing.
    driver.run(unsafe.send_raw(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n", replies=2))
    reply = driver.run(unsafe.data_raw(b"two\r\n", terminator=b".\r\n"))
    assert reply.code == 250 and driver.messages[1].content == b"two\r\n"
    assert client_bytes(driver).endswith(b"DATA\r\ntwo\r\n.\r\n")
    assert session.conn.unchecked


def test_data_raw_refused_or_answered_wrongly() -> None:
    _, unsafe, driver, _ = opened(ScriptedServer())
    with pytest.raises(PermanentReplyError, match="503"):
        driver.run(unsafe.data_raw(b"x"))  # no transaction: 503
    assert b"x" not in client_bytes(driver).split(b"DATA\r\n")[-1]
    session, unsafe, driver, _ = opened(ScriptedServer({"DATA": "250 2.0.0 what"}))
    with pytest.raises(RemoteProtocolError, match="250 is not a reply to DATA"):
        driver.run(unsafe.data_raw(b"x"))
    assert not session.conn.open
    session, unsafe, driver, _ = opened(ScriptedServer({"DATA": "421 4.3.2 bye"}))
    with pytest.raises(TransientReplyError, match="421"):
        driver.run(unsafe.data_raw(b"x"))
    assert not session.conn.open
    with pytest.raises(InvalidInputError, match="the body must be bytes"):
        driver.run(unsafe.data_raw("text"))  # type: ignore[arg-type]


def test_the_unchecked_session_refuses_every_safe_command_but_quit() -> None:
    session, unsafe, driver, lines = opened(ScriptedServer())
    driver.run(unsafe.send_line("RSET"))
    with pytest.raises(LocalProtocolError, match="the session went unchecked"):
        driver.run(session.noop())
    with pytest.raises(LocalProtocolError, match="went unchecked"):
        driver.run(session.command(Mail(sender="a@x.test")))
    assert session.conn.why_not(Verb.QUIT) is not None
    assert session.conn.open
    reply = driver.run(session.quit())
    assert reply.code == 221 and not session.conn.open
    assert lines[-2:] == ["C: QUIT", "S: 221 2.0.0 mx.smtpbee.test closing connection"]
    with pytest.raises(LocalProtocolError, match="the session is over"):
        driver.run(unsafe.send_line("NOOP"))


def test_the_safe_path_still_refuses_cr_and_lf() -> None:
    for build in (
        lambda: Noop("a\r\nRSET"),
        lambda: Mail(sender="a@x.test\r\nRCPT TO:<b@x.test>"),
        lambda: Rcpt(recipient="b@x.test\n"),
    ):
        with pytest.raises(InvalidInputError):
            build()
    session, _, driver, _ = opened(ScriptedServer())
    with pytest.raises(InvalidInputError):
        driver.run(session.vrfy("a\r\nb"))
    assert not session.conn.unchecked


def test_unsafe_arguments_are_checked() -> None:
    _, unsafe, driver, _ = opened(ScriptedServer())
    with pytest.raises(InvalidInputError, match="writes bytes"):
        driver.run(unsafe.send_raw("NOOP\r\n"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="replies must be"):
        driver.run(unsafe.send_raw(b"NOOP\r\n", replies=-1))
    with pytest.raises(InvalidInputError, match="replies must be"):
        driver.run(unsafe.send_raw(b"NOOP\r\n", replies=True))


def test_raw_reads_keep_the_limits_and_the_timeouts() -> None:
    _, unsafe, driver, _ = opened(ScriptedServer({"NOOP": b"2x0 broken\r\n"}))
    with pytest.raises(RemoteProtocolError):
        driver.run(unsafe.send_line("NOOP"))
    _, unsafe, driver, _ = opened(ScriptedServer({"NOOP": stall()}))
    with pytest.raises(SMTPTimeoutError):
        driver.run(unsafe.send_line("NOOP"))
    session, unsafe, driver, _ = opened(ScriptedServer({"NOOP": close()}))
    with pytest.raises(ConnectionLostError, match="closed"):
        driver.run(unsafe.send_line("NOOP"))
    assert not session.conn.open


def test_the_connection_enters_unchecked_mode_only_when_it_can() -> None:
    session, _, _, _ = opened(ScriptedServer())
    conn = session.conn
    with pytest.raises(LocalProtocolError, match="only in unchecked mode"):
        conn.next_unchecked_reply()
    conn.send(Noop())
    with pytest.raises(LocalProtocolError, match="await their replies"):
        conn.go_unchecked()
    conn.send_failed()
    with pytest.raises(LocalProtocolError, match="the session is over"):
        conn.go_unchecked()


def test_the_session_log_marks_unsafe_writes() -> None:
    log = SessionLog("mx.test:25")
    _, unsafe, driver, _ = opened(ScriptedServer(), session_log=log)
    driver.run(unsafe.send_line("NOOP"))
    unsafe_records = [r for r in log.records if r.get("unsafe")]
    assert [SessionLog.bytes_of(r) for r in unsafe_records] == [b"NOOP\r\n"]
    assert log.records[-1]["dir"] == "S" and log.records[-1]["reply"]["code"] == 250


# ------------------------------------------------------------------------------------
# start_tls on the core


def test_start_tls_after_a_raw_starttls_upgrades_and_nothing_more() -> None:
    log = SessionLog("mx.test:25")
    session, unsafe, driver, lines = opened(ScriptedServer(tls="starttls"), session_log=log)
    assert session.conn.extensions.starttls
    [ready] = driver.run(unsafe.send_raw(b"STARTTLS\r\n"))
    assert ready.code == 220
    written = len(driver.written)
    assert driver.run(unsafe.start_tls()) is True
    # The handshake alone: what the server sent was looked for, nothing was written.
    assert [type(r) for r in driver.requests[-2:]] == [Poll, UpgradeTLS]
    assert len(driver.written) == written
    conn = session.conn
    assert conn.tls_active and conn.unchecked and conn.open
    assert not conn.extensions.starttls  # forgotten, as after STARTTLS on the safe path
    assert lines[-3:] == [
        "C!: STARTTLS",
        "S: 220 2.0.0 Ready to start TLS",
        "C: <TLS handshake done>",
    ]
    [handshake] = [r for r in log.records if r.get("event") == "tls-handshake"]
    assert handshake["verified"] is True and handshake["tls"] is True
    [ehlo] = driver.run(unsafe.send_line("EHLO client.test"))
    assert ehlo.code == 250 and driver.commands[-1].tls
    assert log.records[-1]["tls"] is True
    with pytest.raises(LocalProtocolError, match="already active"):
        driver.run(unsafe.start_tls())
    assert driver.run(session.quit()).code == 221


def test_start_tls_reports_an_unverified_certificate() -> None:
    driver = ScriptedServer(tls="starttls").driver(tls_verified=False)
    _, unsafe, _, _ = opened(ScriptedServer(), driver)
    driver.run(unsafe.send_raw(b"STARTTLS\r\n"))
    assert driver.run(unsafe.start_tls()) is False


def test_plaintext_behind_starttls_answered_under_tls_is_command_injection() -> None:
    server = ScriptedServer({"STARTTLS": injectable_starttls}, tls="starttls")
    _, unsafe, driver, lines = opened(server)
    [ready] = driver.run(unsafe.send_raw(b"STARTTLS\r\nNOOP\r\n"))
    assert ready.code == 220
    driver.run(unsafe.start_tls())
    # XPROBE cannot succeed: a 250 first is the plaintext NOOP's, executed under TLS.
    first, second = driver.run(unsafe.send_line("XPROBE", replies=2))
    assert (first.code, second.code) == (250, 502)
    assert "C!: NOOP" in lines and driver.commands[-1].tls


def test_a_server_that_drops_plaintext_behind_starttls() -> None:
    _, unsafe, driver, _ = opened(ScriptedServer(tls="starttls"))
    driver.run(unsafe.send_raw(b"STARTTLS\r\nNOOP\r\n"))
    driver.run(unsafe.start_tls())
    [first] = driver.run(unsafe.send_line("XPROBE"))
    assert first.code == 502
    assert [(c.verb, c.tls) for c in driver.commands[-2:]] == [
        ("STARTTLS", False),
        ("XPROBE", True),
    ]


@pytest.mark.parametrize(
    ("behind", "said"),
    [
        (b"250 injected\r\n", r"a reply \(250\)"),
        (b"25", "no whole reply"),  # half a reply
        (b"\x16\x03\x01\x00", "no whole reply"),  # not a reply at all
    ],
)
def test_a_reply_sent_before_the_handshake_is_response_injection(behind: bytes, said: str) -> None:
    log = SessionLog("mx.test:25")
    server = ScriptedServer({"STARTTLS": [b"220 go\r\n", inject(behind), stall()]})
    session, unsafe, driver, lines = opened(server, session_log=log)
    [ready] = driver.run(unsafe.send_raw(b"STARTTLS\r\n"))
    assert ready.code == 220
    with pytest.raises(StartTLSInjectionError, match=said):
        driver.run(unsafe.start_tls())
    assert not any(isinstance(r, UpgradeTLS) for r in driver.requests)
    assert not session.conn.open and not session.conn.tls_active
    assert ("S: 250 injected" in lines) is behind.startswith(b"250")
    assert log.records[-1]["event"] == "error"


def test_a_reply_that_arrives_after_the_220_was_read_is_caught_too() -> None:
    server = ScriptedServer(tls="starttls")
    session, unsafe, driver, lines = opened(server)
    driver.run(unsafe.send_raw(b"STARTTLS\r\n"))
    # Bytes on their way while the 220 was read: the transport hands them over when polled.
    upgrade = unsafe.start_tls()
    assert isinstance(next(upgrade), Poll)
    with pytest.raises(StartTLSInjectionError, match=r"a reply \(250\)"):
        upgrade.send(b"250 2.0.0 Ok\r\n")
    assert not session.conn.open and lines[-1] == "S: 250 2.0.0 Ok"


def test_start_tls_in_one_call_with_the_starttls_still_unread() -> None:
    # The 220 is not read first: it is what arrived before the handshake.
    _, unsafe, driver, _ = opened(ScriptedServer(tls="starttls"))
    driver.run(unsafe.send_raw(b"STARTTLS\r\n", replies=0))
    with pytest.raises(StartTLSInjectionError, match=r"a reply \(220\)"):
        driver.run(unsafe.start_tls())


@pytest.mark.parametrize(
    ("after_220", "error", "said"),
    [
        (close(), ConnectionLostError, "closed the connection before the TLS handshake"),
        (reset(), ConnectionLostError, "reset"),
        (stall(), SMTPTimeoutError, "TLS handshake"),
    ],
)
def test_start_tls_when_the_server_closes_or_never_shakes_hands(
    after_220: Any, error: type[Exception], said: str
) -> None:
    server = ScriptedServer({"STARTTLS": [b"220 go\r\n", after_220]})
    session, unsafe, driver, _ = opened(server)
    driver.run(unsafe.send_raw(b"STARTTLS\r\n"))
    with pytest.raises(error, match=said):
        driver.run(unsafe.start_tls())
    assert not session.conn.open and not session.conn.tls_active


def test_a_failed_handshake_ends_the_session() -> None:
    refused = TLSVerificationError("certificate verify failed")
    driver = ScriptedServer(tls="starttls").driver(tls_error=refused)
    session, unsafe, _, _ = opened(ScriptedServer(), driver)
    driver.run(unsafe.send_raw(b"STARTTLS\r\n"))
    with pytest.raises(TLSVerificationError):
        driver.run(unsafe.start_tls())
    assert not session.conn.open and not session.conn.tls_active
    with pytest.raises(LocalProtocolError, match="the session is over"):
        driver.run(unsafe.start_tls())


def test_start_tls_refused_under_implicit_tls_and_with_replies_pending() -> None:
    server = ScriptedServer(tls="implicit")
    session, unsafe, driver, _ = opened(server, tls=TLSMode.IMPLICIT)
    with pytest.raises(LocalProtocolError, match="already active"):
        driver.run(unsafe.start_tls())
    assert not session.conn.unchecked  # refused before anything changed
    session, unsafe, driver, _ = opened(ScriptedServer(tls="starttls"))
    session.conn.send(Noop())
    with pytest.raises(LocalProtocolError, match="await their replies"):
        driver.run(unsafe.start_tls())


def test_the_connection_marks_tls_only_in_an_unchecked_session() -> None:
    conn = Connection()
    with pytest.raises(LocalProtocolError, match="needs an unchecked session"):
        conn.unchecked_tls_established()
    conn.receive_data(b"220 mx ready\r\n")
    conn.next_event()
    conn.go_unchecked()
    conn.unchecked_tls_established()
    assert conn.tls_active
    with pytest.raises(LocalProtocolError, match="already active"):
        conn.unchecked_tls_established()
    conn.send_failed()
    with pytest.raises(LocalProtocolError, match="needs an unchecked session"):
        conn.unchecked_tls_established()


# ------------------------------------------------------------------------------------
# On the three clients


@pytest.mark.anyio
async def test_unsafe_on_every_client(flavour: Flavour, scripted_server: Any) -> None:
    server = scripted_server()
    lines: list[str] = []
    c = flavour.client(server, transcript=lambda d, t: lines.append(f"{d}: {t}"))
    await c.connect()
    unsafe = Client(c.inner.unsafe)
    replies = await unsafe.send_raw(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n", replies=2)
    assert [r.code for r in replies] == [250, 250]
    [noop] = await unsafe.send_line("NOOP")
    assert noop.code == 250
    final = await unsafe.data_raw(SMUGGLED)
    assert final.code == 250
    with pytest.raises(LocalProtocolError, match="went unchecked"):
        await c.noop()
    assert (await c.quit()).code == 221
    await finished(server)
    assert server.messages[0].content == SMUGGLED + b"\r\n"
    assert server.transcript.client().endswith(b"DATA\r\n" + SMUGGLED + b"\r\n.\r\nQUIT\r\n")
    assert "C!: NOOP" in lines and "C: QUIT" in lines


@pytest.mark.anyio
async def test_start_tls_probe_on_every_client(
    flavour: Flavour, scripted_server: Any, trust_ca: LoopbackCA
) -> None:
    server = scripted_server(
        {"STARTTLS": injectable_starttls}, tls="starttls", tls_context=trust_ca.server_context()
    )
    lines: list[str] = []
    c = flavour.client(
        server,
        ssl_context=trust_ca.client_context(),
        transcript=lambda d, t: lines.append(f"{d}: {t}"),
    )
    await c.connect()
    assert c.tls_info is None
    unsafe = Client(c.inner.unsafe)
    [ready] = await unsafe.send_raw(b"STARTTLS\r\nNOOP\r\n")
    assert ready.code == 220
    assert await unsafe.start_tls() is True
    assert c.tls_info is not None and c.tls_info.verified
    assert c.session.conn.tls_active
    first, second = await unsafe.send_line("XPROBE", replies=2)
    assert (first.code, second.code) == (250, 502)
    assert (await c.quit()).code == 221
    await finished(server)
    assert [(c.verb, c.tls) for c in server.commands] == [
        ("EHLO", False),
        ("STARTTLS", False),
        ("XPROBE", True),
        ("QUIT", True),
    ]
    start = lines.index("C!: STARTTLS")
    assert lines[start:] == [
        "C!: STARTTLS",
        "C!: NOOP",
        "S: 220 2.0.0 Ready to start TLS",
        "C: <TLS handshake done>",
        "C!: XPROBE",
        "S: 250 2.0.0 Ok",
        "S: 502 5.5.2 Error: command not recognized",
        "C: QUIT",
        "S: 221 2.0.0 mx.smtpbee.test closing connection",
    ]


@pytest.mark.anyio
async def test_start_tls_refuses_response_injection_on_every_client(
    flavour: Flavour, scripted_server: Any, trust_ca: LoopbackCA
) -> None:
    server = scripted_server(RESPONSE_INJECTION, tls="starttls")
    c = flavour.client(server, ssl_context=trust_ca.client_context())
    await c.connect()
    unsafe = Client(c.inner.unsafe)
    [ready] = await unsafe.send_raw(b"STARTTLS\r\n")
    assert ready.code == 220
    with pytest.raises(StartTLSInjectionError, match=r"a reply \(250\)"):
        await unsafe.start_tls()
    assert not c.usable and c.tls_info is None
    await c.close()
    await finished(server)
    assert server.sessions[0].unparsed == b""  # not a byte of a handshake went out
