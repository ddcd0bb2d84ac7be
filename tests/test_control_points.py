"""Control points, forced pipelining and BDAT chunk sizes: on the core and on the three clients.

A Stop ends a session at a chosen point, with QUIT or by dropping the connection,
even right after a command is written and before its reply. The assertions are
about what the scripted server received (its commands, its messages, the rounds
of a pipelined group) and what the client raised.
"""

from __future__ import annotations

from typing import Any

import pytest
from flavours import Flavour, finished
from servers import LoopbackCA
from smtpbee import (
    BodyInfo,
    ClientSession,
    ControlPoint,
    InvalidInputError,
    MailJob,
    MessageTooLargeError,
    PermanentReplyError,
    ProxyHeader,
    Read,
    ReplyError,
    SessionStopped,
    SMTPError,
    Stop,
    TLSMode,
    UnsupportedExtensionError,
    UpgradeTLS,
    Write,
)
from smtpbee._control import check_controls
from smtpbee.testing import ProcedureDriver, ScriptedServer, close, replies, reply

BODY = b"Subject: s\r\n\r\nbody\r\n"
USERS = {"alice": "wonderland"}
NO_EXTENSIONS: list[str] = []
PIPELINING = ["PIPELINING", "8BITMIME"]
CHUNKING = ["PIPELINING", "CHUNKING", "8BITMIME"]

# What a lock-step session sends up to each point (no TLS, no AUTH).
UP_TO = {
    ControlPoint.CONNECT: [],
    ControlPoint.GREETING: [],
    ControlPoint.EHLO: ["EHLO"],
    ControlPoint.MAIL: ["EHLO", "MAIL"],
    ControlPoint.RCPT: ["EHLO", "MAIL", "RCPT", "RCPT"],
    ControlPoint.DATA: ["EHLO", "MAIL", "RCPT", "RCPT", "DATA"],
    ControlPoint.DOT: ["EHLO", "MAIL", "RCPT", "RCPT", "DATA"],
}
WITH_COMMAND = [p for p in UP_TO if p not in (ControlPoint.CONNECT, ControlPoint.GREETING)]


def variants(points: list[ControlPoint]) -> list[Stop]:
    stops = [Stop(p, action) for p in points for action in ("quit", "drop")]
    stops += [Stop(p, "drop", after_send=True) for p in points if p in WITH_COMMAND]
    return stops


def expected_verbs(stop: Stop) -> list[str]:
    """What the server reads: the commands up to the point, and QUIT where it can follow."""
    verbs = list(UP_TO[stop.point])
    # After a 354 only content may follow: QUIT would be message text.
    if stop.action == "quit" and stop.point is not ControlPoint.DATA:
        verbs.append("QUIT")
    return verbs


def verbs_of(commands: Any) -> list[str]:
    return [command.verb for command in commands]


def run_core(
    server: ScriptedServer,
    stop: Stop | None,
    *,
    tls: TLSMode = TLSMode.NONE,
    login: bool = False,
    body: bytes = BODY,
    info: BodyInfo | None = None,
    **options: Any,
) -> tuple[SessionStopped | None, ProcedureDriver, list[str]]:
    """open, (login), sendmail to two recipients, quit; the SessionStopped raised, if any."""
    driver = server.driver()
    lines: list[str] = []
    session = ClientSession(
        local_hostname="client.test",
        tls=tls,
        stop=stop,
        transcript=lambda direction, line: lines.append(f"{direction}: {line}"),
        **options,
    )
    try:
        driver.run(session.open())
        if login:
            driver.run(session.login("alice", "wonderland", allow_insecure=True))
        info = info or BodyInfo.of_bytes(body)
        driver.run(session.sendmail("a@x.test", ["b@x.test", "c@x.test"], body=info), [body, b""])
        driver.run(session.quit())
    except SessionStopped as stopped:
        assert not session.conn.open
        return stopped, driver, lines
    return None, driver, lines


# ------------------------------------------------------------------------------------
# Stop and ControlPoint


def test_a_stop_checks_its_arguments() -> None:
    assert Stop("mail").point is ControlPoint.MAIL
    assert ControlPoint("Dot") is ControlPoint.DOT and ControlPoint.RCPT == "RCPT"
    with pytest.raises(InvalidInputError, match="one of CONNECT"):
        Stop("HELO")
    with pytest.raises(InvalidInputError, match='"quit" or "drop"'):
        Stop(ControlPoint.MAIL, "close")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match='must be "drop"'):
        Stop(ControlPoint.MAIL, after_send=True)
    with pytest.raises(InvalidInputError, match="GREETING has no command"):
        Stop(ControlPoint.GREETING, "drop", after_send=True)
    with pytest.raises(InvalidInputError, match="no command"):
        Stop(ControlPoint.CONNECT, "drop", after_send=True)


def test_the_control_options_are_checked_before_anything_is_sent() -> None:
    check_controls(None, None)
    check_controls(Stop(ControlPoint.DOT), 10)
    with pytest.raises(InvalidInputError, match=r"smtpbee\.Stop"):
        check_controls("MAIL", None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="a number"):
        check_controls(None, True)
    with pytest.raises(InvalidInputError, match="a number"):
        check_controls(None, "10")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="at least 1"):
        check_controls(None, 0)
    with pytest.raises(InvalidInputError, match="no DATA command"):
        ClientSession(local_hostname="c", stop=Stop(ControlPoint.DATA), bdat_chunk_size=100)


def test_session_stopped_is_an_smtp_error_with_the_point_and_the_reply() -> None:
    stopped, _, _ = run_core(ScriptedServer(), Stop(ControlPoint.MAIL))
    assert isinstance(stopped, SMTPError)
    assert stopped.point is ControlPoint.MAIL and stopped.action == "quit"
    assert stopped.reply is not None and stopped.reply.code == 250
    assert "MAIL" in str(stopped) and "QUIT" in str(stopped)


# ------------------------------------------------------------------------------------
# Every point on the core, lock-step and pipelined


@pytest.mark.parametrize("stop", variants(list(UP_TO)), ids=str)
def test_every_point_in_lock_step(stop: Stop) -> None:
    stopped, driver, lines = run_core(ScriptedServer(extensions=NO_EXTENSIONS), stop)
    assert stopped is not None and stopped.point is stop.point
    assert verbs_of(driver.commands) == expected_verbs(stop)
    delivered = stop.point is ControlPoint.DOT
    assert len(driver.messages) == (1 if delivered else 0)
    if stop.after_send or stop.point is ControlPoint.CONNECT:
        assert stopped.reply is None
    else:
        assert stopped.reply is not None
    assert any(line.startswith("C: <stopped") for line in lines)


@pytest.mark.parametrize("stop", variants(list(UP_TO)), ids=str)
def test_every_point_with_pipelining_cuts_the_group_there(stop: Stop) -> None:
    stopped, driver, _ = run_core(ScriptedServer(extensions=PIPELINING), stop)
    assert stopped is not None
    assert verbs_of(driver.commands) == expected_verbs(stop)
    if stop.point in (ControlPoint.MAIL, ControlPoint.RCPT, ControlPoint.DATA):
        # The envelope up to the point went out in one write, and nothing after it.
        [group] = [r for r in driver.transcript.rounds() if r[0].startswith(b"MAIL")]
        assert [unit.split(b" ")[0].strip() for unit in group] == [
            verb.encode() for verb in UP_TO[stop.point][1:]
        ]
    if stop.point is ControlPoint.MAIL:
        assert b"RCPT" not in driver.written


def test_a_drop_after_the_last_rcpt_is_written_reads_no_reply() -> None:
    stopped, driver, _ = run_core(
        ScriptedServer(extensions=PIPELINING), Stop(ControlPoint.RCPT, "drop", after_send=True)
    )
    assert stopped is not None and stopped.reply is None
    # The envelope was the last request: no reply was waited for.
    last = driver.requests[-1]
    assert isinstance(last, Write) and last.data.startswith(b"MAIL")
    assert last.data.endswith(b"RCPT TO:<c@x.test>\r\n")


@pytest.mark.parametrize("action", ["quit", "drop"])
def test_dot_with_chunking_stops_after_bdat_last(action: str) -> None:
    stop = Stop(ControlPoint.DOT, action)  # type: ignore[arg-type]
    stopped, driver, _ = run_core(ScriptedServer(extensions=CHUNKING), stop)
    assert stopped is not None and stopped.reply is not None and stopped.reply.code == 250
    assert verbs_of(driver.commands) == ["EHLO", "MAIL", "RCPT", "RCPT", "BDAT"] + (
        ["QUIT"] if action == "quit" else []
    )
    assert driver.messages[0].content == BODY


def test_drop_after_bdat_last_is_written_in_lock_step_and_pipelined() -> None:
    stop = Stop(ControlPoint.DOT, "drop", after_send=True)
    # Lock-step uses BDAT only when told to (a chunk size).
    for extensions, size in ((CHUNKING, None), (["CHUNKING"], 100)):
        server = ScriptedServer(extensions=extensions)
        stopped, driver, _ = run_core(server, stop, bdat_chunk_size=size)
        assert stopped is not None and stopped.reply is None
        assert driver.written.endswith(b"BDAT 20 LAST\r\n" + BODY)
    # Several chunks: the drop comes right after the last one is written.
    stopped, driver, _ = run_core(ScriptedServer(extensions=CHUNKING), stop, bdat_chunk_size=7)
    assert stopped is not None and driver.written.endswith(b"BDAT 6 LAST\r\n" + BODY[-6:])
    stopped, driver, _ = run_core(ScriptedServer(extensions=["CHUNKING"]), stop, bdat_chunk_size=7)
    assert stopped is not None and driver.written.endswith(b"BDAT 6 LAST\r\n" + BODY[-6:])


def test_a_stop_at_data_uses_data_even_when_chunking_is_offered() -> None:
    stopped, driver, _ = run_core(ScriptedServer(extensions=CHUNKING), Stop(ControlPoint.DATA))
    assert stopped is not None and stopped.reply is not None and stopped.reply.code == 354
    assert verbs_of(driver.commands)[-1] == "DATA"
    with pytest.raises(InvalidInputError, match="binary content goes with BDAT"):
        run_core(
            ScriptedServer(extensions=[*CHUNKING, "BINARYMIME"]),
            Stop(ControlPoint.DATA),
            info=BodyInfo(binary=True),
        )


def test_a_point_the_session_never_reaches_is_never_hit() -> None:
    stopped, driver, _ = run_core(ScriptedServer(), Stop(ControlPoint.TLS))
    assert stopped is None
    assert len(driver.messages) == 1 and verbs_of(driver.commands)[-1] == "QUIT"
    stopped, driver, _ = run_core(ScriptedServer(), Stop(ControlPoint.AUTH, "drop"))
    assert stopped is None and len(driver.messages) == 1


def test_a_refused_reply_still_reaches_the_point() -> None:
    server = ScriptedServer({"MAIL": "550 5.7.1 go away"}, extensions=NO_EXTENSIONS)
    stopped, driver, _ = run_core(server, Stop(ControlPoint.MAIL))
    assert stopped is not None and stopped.reply is not None and stopped.reply.code == 550
    assert verbs_of(driver.commands) == ["EHLO", "MAIL", "QUIT"]
    server = ScriptedServer({"GREETING": "554 5.3.2 not now"})
    stopped, driver, _ = run_core(server, Stop(ControlPoint.GREETING))
    assert stopped is not None and stopped.reply is not None and stopped.reply.code == 554
    assert verbs_of(driver.commands) == ["QUIT"]


def test_lock_step_goes_no_further_than_a_refused_envelope_allows() -> None:
    server = ScriptedServer({"MAIL": "550 5.7.1 no"}, extensions=NO_EXTENSIONS)
    with pytest.raises(PermanentReplyError, match="550"):
        run_core(server, Stop(ControlPoint.RCPT))
    server = ScriptedServer({"RCPT": "550 5.1.1 no such user"}, extensions=NO_EXTENSIONS)
    with pytest.raises(PermanentReplyError) as caught:
        run_core(server, Stop(ControlPoint.DATA))
    assert set(caught.value.recipients) == {"b@x.test", "c@x.test"}
    # Pipelined, DATA went out with the envelope: the point is reached.
    server = ScriptedServer({"RCPT": "550 5.1.1 no such user"}, extensions=PIPELINING)
    stopped, driver, _ = run_core(server, Stop(ControlPoint.DATA))
    assert stopped is not None and stopped.reply is not None
    assert verbs_of(driver.commands)[-1] in ("DATA", "QUIT")


def test_ehlo_point_is_reached_by_a_refusal_before_any_helo_fallback() -> None:
    server = ScriptedServer({"EHLO": "502 5.5.1 no ESMTP here"})
    stopped, driver, _ = run_core(server, Stop(ControlPoint.EHLO))
    assert stopped is not None and stopped.reply is not None and stopped.reply.code == 502
    assert verbs_of(driver.commands) == ["EHLO", "QUIT"]
    stopped, driver, _ = run_core(server, Stop(ControlPoint.MAIL))
    assert stopped is not None and verbs_of(driver.commands) == ["EHLO", "HELO", "MAIL", "QUIT"]


def test_ehlo_point_with_lmtp_and_an_lhlo_refusal() -> None:
    stopped, driver, _ = run_core(
        ScriptedServer(lmtp=True), Stop(ControlPoint.EHLO, "drop", after_send=True), lmtp=True
    )
    assert stopped is not None and verbs_of(driver.commands) == ["LHLO"]
    with pytest.raises(PermanentReplyError, match="LHLO"):
        run_core(ScriptedServer({"LHLO": "500 5.5.1 what"}, lmtp=True), None, lmtp=True)


@pytest.mark.parametrize("action", ["quit", "drop"])
def test_dot_with_lmtp_after_every_delivery_reply(action: str) -> None:
    stop = Stop(ControlPoint.DOT, action)  # type: ignore[arg-type]
    stopped, driver, _ = run_core(ScriptedServer(lmtp=True, extensions=[]), stop, lmtp=True)
    assert stopped is not None and stopped.reply is not None and stopped.reply.code == 250
    assert verbs_of(driver.commands)[-1] == ("QUIT" if action == "quit" else "DATA")
    stopped, driver, _ = run_core(
        ScriptedServer(lmtp=True, extensions=["CHUNKING"]), stop, lmtp=True
    )
    assert stopped is not None and verbs_of(driver.commands)[-2:] == (
        ["BDAT", "QUIT"] if action == "quit" else ["RCPT", "BDAT"]
    )


def test_a_batch_with_a_stop_does_not_overlap_and_reports_the_stop() -> None:
    server = ScriptedServer(extensions=PIPELINING)
    driver = server.driver()
    session = ClientSession(local_hostname="c", tls=TLSMode.NONE, stop=Stop(ControlPoint.DOT))
    driver.run(session.open())
    jobs = [MailJob(sender="a@x.test", recipients=[r], body=BodyInfo()) for r in ("b@x", "c@x")]
    results = driver.run(session.send_batch(jobs), [b"one\r\n", b"", b"two\r\n", b""])
    assert all(isinstance(result, SessionStopped) for result in results)
    assert len(driver.messages) == 1
    assert verbs_of(driver.commands) == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]


# ------------------------------------------------------------------------------------
# TLS and AUTH points on the core


@pytest.mark.parametrize("stop", variants([ControlPoint.TLS]), ids=str)
def test_tls_point_after_starttls(stop: Stop) -> None:
    server = ScriptedServer(tls="starttls", extensions=["STARTTLS"])
    stopped, driver, lines = run_core(server, stop, tls=TLSMode.STARTTLS)
    assert stopped is not None
    quit = ["QUIT"] if stop.action == "quit" else []
    assert verbs_of(driver.commands) == ["EHLO", "STARTTLS", *quit]
    handshook = "C: <TLS handshake done>" in lines
    assert handshook is not stop.after_send
    if quit:
        assert driver.commands[-1].tls
    if not stop.after_send:
        assert stopped.reply is not None and stopped.reply.code == 220


@pytest.mark.parametrize("action", ["quit", "drop"])
def test_tls_and_connect_points_with_implicit_tls(action: str) -> None:
    server = ScriptedServer(tls="implicit")
    for point in (ControlPoint.CONNECT, ControlPoint.TLS):
        stop = Stop(point, action)  # type: ignore[arg-type]
        stopped, driver, lines = run_core(server, stop, tls=TLSMode.IMPLICIT)
        assert stopped is not None and stopped.reply is None
        if action == "quit":
            # QUIT waits for the greeting, which comes over TLS.
            assert verbs_of(driver.commands) == ["QUIT"] and driver.commands[0].tls
        else:
            assert driver.commands == []
            assert ("C: <TLS handshake done>" in lines) is (point is ControlPoint.TLS)
    stopped, driver, _ = run_core(
        server, Stop(ControlPoint.TLS, "drop", after_send=True), tls=TLSMode.IMPLICIT
    )
    assert stopped is None and len(driver.messages) == 1  # no STARTTLS to stop after


def test_quit_at_connect_when_the_server_refuses_service() -> None:
    # QUIT waits for the greeting; a 421 greeting leaves nothing to QUIT.
    stopped, driver, _ = run_core(
        ScriptedServer({"GREETING": [reply(421, "4.3.2 busy"), close()]}),
        Stop(ControlPoint.CONNECT),
    )
    assert stopped is not None and driver.commands == []
    stopped, driver, _ = run_core(ScriptedServer({"GREETING": close()}), Stop("CONNECT"))
    assert stopped is not None and driver.commands == []


@pytest.mark.parametrize("stop", variants([ControlPoint.AUTH]), ids=str)
def test_auth_point(stop: Stop) -> None:
    server = ScriptedServer(users=USERS, extensions=["AUTH PLAIN LOGIN"])
    stopped, driver, _ = run_core(server, stop, login=True)
    assert stopped is not None
    quit = ["QUIT"] if stop.action == "quit" else []
    assert verbs_of(driver.commands) == ["EHLO", "AUTH", *quit]
    if not stop.after_send:
        assert stopped.reply is not None and stopped.reply.code == 235


def test_auth_point_after_a_refusal_and_after_a_challenge() -> None:
    server = ScriptedServer(users=USERS, auth_mechanisms=["LOGIN"], extensions=["AUTH LOGIN"])
    stopped, driver, _ = run_core(server, Stop(ControlPoint.AUTH), login=True)
    assert stopped is not None and stopped.reply is not None and stopped.reply.code == 235
    # Two challenges answered, then the stop: the continuation lines are AUTH's.
    assert verbs_of(driver.commands) == ["EHLO", "AUTH", "AUTH", "AUTH", "QUIT"]
    server = ScriptedServer({"AUTH": "535 5.7.8 no"}, users=USERS, extensions=["AUTH PLAIN"])
    stopped, driver, _ = run_core(server, Stop(ControlPoint.AUTH, "drop"), login=True)
    assert stopped is not None and stopped.reply is not None and stopped.reply.code == 535


# ------------------------------------------------------------------------------------
# Forced pipelining and BDAT chunk sizes on the core


def test_pipelining_forced_on_groups_the_envelope_and_says_so() -> None:
    _, driver, lines = run_core(ScriptedServer(extensions=["8BITMIME"]), None, pipelining=True)
    envelope = next(r for r in driver.transcript.rounds() if r[0].startswith(b"MAIL"))
    assert [unit.split(b" ")[0].strip() for unit in envelope] == [
        b"MAIL",
        b"RCPT",
        b"RCPT",
        b"DATA",
    ]
    assert "C: <PIPELINING forced on: the server does not offer it>" in lines
    assert driver.messages[0].content == BODY


def test_pipelining_forced_off_goes_lock_step_and_says_so() -> None:
    _, driver, lines = run_core(ScriptedServer(extensions=CHUNKING), None, pipelining=False)
    mail_round = next(r for r in driver.transcript.rounds() if r[0].startswith(b"MAIL"))
    assert len(mail_round) == 1
    assert "C: <PIPELINING forced off: lock-step although offered>" in lines
    # Without PIPELINING the content goes with DATA (CHUNKING alone is not worth it).
    assert verbs_of(driver.commands)[-2] == "DATA"
    _, _, lines = run_core(ScriptedServer(extensions=CHUNKING), None, pipelining=True)
    assert not any("forced" in line for line in lines)


def test_pipelining_forced_off_with_lmtp() -> None:
    _, driver, lines = run_core(ScriptedServer(lmtp=True), None, pipelining=False, lmtp=True)
    assert "C: <PIPELINING forced off: lock-step although offered>" in lines
    assert all(len(r) == 1 for r in driver.transcript.rounds())


@pytest.mark.parametrize("size", [1, 5, 20, 21, 1000])
def test_bdat_in_chunks_of_exactly_the_size_given(size: int) -> None:
    body = b"Subject: s\r\n\r\nbare lf\nlone cr\r.dot\r\n"
    normalised = b"Subject: s\r\n\r\nbare lf\r\nlone cr\r\n.dot\r\n"
    _, driver, lines = run_core(
        ScriptedServer(extensions=["8BITMIME"]), None, body=body, bdat_chunk_size=size
    )
    chunks = [c for c in driver.commands if c.verb == "BDAT"]
    assert b"".join(c.data for c in chunks) == normalised
    assert all(len(c.data) == size for c in chunks[:-1]) and 0 < len(chunks[-1].data) <= size
    assert chunks[-1].line.endswith(b" LAST\r\n")
    assert driver.messages[0].content == normalised
    assert (
        f"C: <BDAT in chunks of {size} octets, forced: the server does not offer CHUNKING>" in lines
    )


def test_bdat_chunk_size_on_a_server_offering_chunking_and_an_empty_body() -> None:
    _, driver, lines = run_core(
        ScriptedServer(extensions=CHUNKING), None, body=b"", bdat_chunk_size=4
    )
    assert [c.line for c in driver.commands if c.verb == "BDAT"] == [b"BDAT 0 LAST\r\n"]
    assert "C: <BDAT in chunks of 4 octets>" in lines
    _, driver, _ = run_core(
        ScriptedServer(extensions=CHUNKING), None, body=b"123456\r\n", bdat_chunk_size=4
    )
    assert [c.line for c in driver.commands if c.verb == "BDAT"] == [
        b"BDAT 4\r\n",
        b"BDAT 4 LAST\r\n",
    ]


def test_binary_content_in_chunks_of_a_given_size_is_not_normalised() -> None:
    body = b"\x00\x01bare lf\n\xff"
    server = ScriptedServer(extensions=["CHUNKING", "BINARYMIME", "8BITMIME"])
    _, driver, _ = run_core(server, None, body=body, info=BodyInfo(binary=True), bdat_chunk_size=3)
    chunks = [c.data for c in driver.commands if c.verb == "BDAT"]
    assert b"".join(chunks) == body and [len(c) for c in chunks] == [3, 3, 3, 2]
    assert driver.messages[0].content == body


def test_bdat_chunk_size_keeps_every_other_check() -> None:
    server = ScriptedServer(extensions=["SIZE 10"])
    with pytest.raises(MessageTooLargeError):
        run_core(server, None, body=b"x" * 20, bdat_chunk_size=4)
    with pytest.raises(UnsupportedExtensionError, match="8BITMIME"):
        run_core(ScriptedServer(extensions=[]), None, body=b"\xe9t\xe9\r\n", bdat_chunk_size=4)


def test_a_refused_chunk_with_a_forced_size() -> None:
    server = ScriptedServer({"BDAT": replies("250 2.0.0 ok", "554 5.6.0 no")}, extensions=[])
    with pytest.raises(ReplyError, match="554"):
        run_core(server, None, bdat_chunk_size=5)


# ------------------------------------------------------------------------------------
# The three clients


STOPS = variants(list(UP_TO))


@pytest.mark.anyio
@pytest.mark.parametrize("stop", STOPS, ids=str)
async def test_every_point_on_every_client(
    flavour: Flavour, scripted_server: Any, stop: Stop
) -> None:
    server = scripted_server(extensions=PIPELINING)
    c = flavour.client(server, stop=stop)
    with pytest.raises(SessionStopped) as caught:
        await c.connect()
        await c.sendmail("a@x.test", ["b@x.test", "c@x.test"], BODY)
    assert caught.value.point is stop.point
    assert not c.usable
    await c.close()
    await finished(server)
    assert verbs_of(server.commands) == expected_verbs(stop)
    assert len(server.messages) == (1 if stop.point is ControlPoint.DOT else 0)


@pytest.mark.anyio
@pytest.mark.parametrize("stop", variants([ControlPoint.TLS, ControlPoint.AUTH]), ids=str)
async def test_tls_and_auth_points_on_every_client(
    flavour: Flavour, scripted_server: Any, trust_ca: LoopbackCA, stop: Stop
) -> None:
    server = scripted_server(
        tls="starttls",
        tls_context=trust_ca.server_context(),
        users=USERS,
        extensions=[*PIPELINING, "STARTTLS", "AUTH PLAIN"],
    )
    c = flavour.client(server, tls="starttls", ssl_context=trust_ca.client_context(), stop=stop)
    with pytest.raises(SessionStopped):
        await c.connect()
        await c.login("alice", "wonderland")
    await c.close()
    await finished(server)
    before = (
        ["EHLO", "STARTTLS"]
        if stop.point is ControlPoint.TLS
        else ["EHLO", "STARTTLS", "EHLO", "AUTH"]
    )
    assert verbs_of(server.commands) == before + (["QUIT"] if stop.action == "quit" else [])


@pytest.mark.anyio
async def test_forced_pipelining_and_chunk_size_on_every_client(
    flavour: Flavour, scripted_server: Any
) -> None:
    server = scripted_server(extensions=["8BITMIME"])
    lines: list[str] = []
    async with flavour.client(
        server,
        pipelining=True,
        bdat_chunk_size=8,
        transcript=lambda d, t: lines.append(f"{d}: {t}"),
    ) as c:
        await c.sendmail("a@x.test", ["b@x.test", "c@x.test"], BODY)
    await finished(server)
    envelope = next(r for r in server.transcript.rounds() if r[0].startswith(b"MAIL"))
    assert [unit.split(b" ")[0].strip() for unit in envelope[:4]] == [
        b"MAIL",
        b"RCPT",
        b"RCPT",
        b"BDAT",
    ]
    assert [len(c.data) for c in server.commands if c.verb == "BDAT"] == [8, 8, 4]
    assert server.messages[0].content == BODY
    assert "C: <PIPELINING forced on: the server does not offer it>" in lines
    server = scripted_server(extensions=PIPELINING)
    async with flavour.client(server, pipelining=False) as c:
        await c.sendmail("a@x.test", ["b@x.test", "c@x.test"], BODY)
    await finished(server)
    assert all(len(r) == 1 for r in server.transcript.rounds())


@pytest.mark.anyio
async def test_the_clients_check_the_control_options_at_once(flavour: Flavour) -> None:
    with pytest.raises(InvalidInputError, match="at least 1"):
        flavour.client(host="127.0.0.1", bdat_chunk_size=0)
    with pytest.raises(InvalidInputError, match=r"smtpbee\.Stop"):
        flavour.client(host="127.0.0.1", stop="MAIL")
    with pytest.raises(InvalidInputError, match="ProxyHeader"):
        flavour.client(host="127.0.0.1", proxy_protocol=b"PROXY TCP4 ...")


# ------------------------------------------------------------------------------------
# PROXY headers and XCLIENT (the pieces of smtpbee.ProxyHeader and smtpbee.Xclient)


def test_a_proxy_header_goes_first_before_the_greeting_is_read() -> None:
    header = ProxyHeader(1, ("192.0.2.7", 4321), ("198.51.100.1", 25))
    server = ScriptedServer({"PROXY": None})
    stopped, driver, lines = run_core(server, None, proxy_header=header)
    assert stopped is None and len(driver.messages) == 1
    assert driver.written.startswith(header.to_bytes() + b"EHLO client.test\r\n")
    first_write, first_read = (
        next(i for i, r in enumerate(driver.requests) if isinstance(r, kind))
        for kind in (Write, Read)
    )
    assert first_write < first_read
    assert lines[0] == "C: PROXY TCP4 192.0.2.7 198.51.100.1 4321 25"


@pytest.mark.parametrize("tls", [TLSMode.NONE, TLSMode.IMPLICIT])
def test_a_binary_proxy_header_and_nothing_else(tls: TLSMode) -> None:
    header = ProxyHeader(2, ("2001:db8::7", 4321), ("2001:db8::1", 465))
    server = ScriptedServer(tls="implicit" if tls is TLSMode.IMPLICIT else "none")
    stopped, driver, lines = run_core(
        server, Stop(ControlPoint.CONNECT, "drop"), tls=tls, proxy_header=header
    )
    assert stopped is not None
    # Before any TLS: the header is the only thing written, in the clear.
    assert driver.written == header.to_bytes()
    assert not any(isinstance(r, UpgradeTLS) for r in driver.requests)
    assert lines[0] == f"C: <PROXY v2 header, {len(header.to_bytes())} octets>"


XCLIENT_SERVER = {"XCLIENT": "220 mx.smtpbee.test ESMTP as 192.0.2.7"}


def test_xclient_then_ehlo_again() -> None:
    server = ScriptedServer(XCLIENT_SERVER, extensions=["XCLIENT NAME ADDR", "PIPELINING"])
    driver = server.driver()
    session = ClientSession(local_hostname="c.test", tls=TLSMode.NONE)
    driver.run(session.open())
    reply = driver.run(session.xclient({"ADDR": "192.0.2.7", "NAME": "[UNAVAILABLE]"}))
    assert reply.code == 220
    assert verbs_of(driver.commands) == ["EHLO", "XCLIENT", "EHLO"]
    assert driver.commands[1].line == b"XCLIENT ADDR=192.0.2.7 NAME=[UNAVAILABLE]\r\n"
    assert session.conn.extensions.pipelining
    with pytest.raises(UnsupportedExtensionError):
        driver.run(session.xclient({"LOGIN": "alice"}))


def test_xclient_refused_or_not_offered() -> None:
    server = ScriptedServer({"XCLIENT": "550 5.7.0 not authorized"}, extensions=["XCLIENT ADDR"])
    driver = server.driver()
    session = ClientSession(local_hostname="c.test", tls=TLSMode.NONE)
    driver.run(session.open())
    with pytest.raises(PermanentReplyError, match="550"):
        driver.run(session.xclient({"ADDR": "192.0.2.7"}))
    assert session.conn.open
    driver = ScriptedServer().driver()
    session = ClientSession(local_hostname="c.test", tls=TLSMode.NONE)
    driver.run(session.open())
    with pytest.raises(UnsupportedExtensionError, match="XCLIENT"):
        driver.run(session.xclient({"ADDR": "192.0.2.7"}))


@pytest.mark.anyio
async def test_proxy_header_and_xclient_on_every_client(
    flavour: Flavour, scripted_server: Any
) -> None:
    header = ProxyHeader(1, ("192.0.2.7", 4321), ("127.0.0.1", 25))
    server = scripted_server(
        {**XCLIENT_SERVER, "PROXY": None}, extensions=["XCLIENT NAME ADDR", "PIPELINING"]
    )
    async with flavour.client(server, proxy_protocol=header) as c:
        reply = await c.xclient({"ADDR": "192.0.2.9"})
        assert reply.code == 220
        await c.sendmail("a@x.test", ["b@x.test"], BODY)
    await finished(server)
    assert server.transcript.client().startswith(header.to_bytes() + b"EHLO ")
    assert verbs_of(server.commands) == [
        "PROXY",
        "EHLO",
        "XCLIENT",
        "EHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "QUIT",
    ]
